"""The headline mIoU counts only classes present in the ground truth (issue 14, case 10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from olivine_train.metrics import ConfusionMatrix
from olivine_train.recipes.downstream import format_scores


def test_headline_miou_is_over_present_classes_reference_value_labelled() -> None:
    cm = ConfusionMatrix(6)  # class 0 ignored; classes 4 and 5 never occur and are never predicted
    target = torch.tensor([1, 1, 2, 2, 3, 3])
    pred = torch.tensor([1, 2, 2, 3, 1, 3])
    cm.update(pred, target)
    s = cm.scores(["ignore", "a", "b", "c", "d", "e"])
    # IoU a = 1/3, b = 1/3, c = 1/3 (each: 1 hit, 1 miss, 1 false positive)
    assert s.miou_present == pytest.approx(1 / 3)
    assert s.miou == pytest.approx((3 * (1 / 3) + 2 * 1.0) / 5)  # absent classes count as 100
    text = format_scores(s, "val")
    assert "mIoU (3 classes present)" in text and f"{100 / 3:6.2f}" in text
    assert "mIoU, ref. convention" in text and "(absent and never predicted = 100)" in text
    assert s.as_dict()["miou_present"] == pytest.approx(1 / 3)
    empty = ConfusionMatrix(3).scores()
    assert np.isnan(empty.miou_present)


def test_demo_table_prints_no_reference_convention_row() -> None:
    """Issue 23, item 5: the demo printed ``mIoU (ref. conv.)  41.67  43.06`` under ``OLIVINE
    random``; the reference convention favours the backbone that predicts fewer classes, so
    beside the two columns it read as the random backbone winning. The table leaves it out.
    """
    from olivine_train.recipes.demo import scores_table

    names = ["ignore", "a", "b", "c", "d", "e"]
    target = torch.tensor([1, 1, 2, 2, 3, 3])
    ours = ConfusionMatrix(6)
    ours.update(torch.tensor([1, 1, 2, 2, 4, 5]), target)  # better on present, predicts absent d, e
    rand = ConfusionMatrix(6)
    rand.update(torch.tensor([1, 2, 2, 3, 1, 3]), target)
    a, b = ours.scores(names), rand.scores(names)
    assert a.miou_present > b.miou_present and a.miou < b.miou  # the misleading case
    table = scores_table(a, b)
    assert "ref. conv" not in table and f"{100 * b.miou:8.2f}" not in table
    (row,) = [ln for ln in table.splitlines() if "mIoU" in ln]
    assert row.split()[-2:] == [f"{100 * a.miou_present:.2f}", f"{100 * b.miou_present:.2f}"]
