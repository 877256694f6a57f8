"""Confusion matrix, IoU and Lovász-softmax against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from olivine_train.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    cross_entropy_lovasz,
    iou_from_confusion,
    lovasz_softmax,
    mask_ignore_logits,
)


def test_miou_matches_semantic_kitti_api() -> None:
    np_ioueval = pytest.importorskip("auxiliary.np_ioueval")
    rng = np.random.default_rng(0)
    k = 20
    logits = torch.from_numpy(rng.normal(size=(5000, k))).float()
    target = torch.from_numpy(rng.integers(0, k, size=5000))
    # bias predictions toward the truth so IoUs are non-trivial
    logits[torch.arange(5000), target] += 1.5
    cm = ConfusionMatrix(k, ignore_index=0)
    for chunk in range(5):
        sl = slice(chunk * 1000, (chunk + 1) * 1000)
        cm.update_logits(logits[sl], target[sl])
    ours = cm.scores()
    pred = mask_ignore_logits(logits).argmax(1).numpy()
    assert (pred != 0).all()
    ref = np_ioueval.iouEval(k, ignore=[0])
    ref.addBatch(pred, target.numpy())
    ref_miou, ref_iou = ref.getIoU()
    np.testing.assert_allclose(ours.iou[1:], ref_iou[1:], rtol=1e-9, atol=1e-12)
    assert ours.miou == pytest.approx(float(ref_miou), rel=1e-9)
    assert 0.05 < ours.miou < 0.95


def test_confusion_drops_ignored_ground_truth() -> None:
    pred = torch.tensor([1, 2, 2, 1, 2])
    gt = torch.tensor([1, 2, 0, 0, 1])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.sum() == 3
    assert conf[1, 1] == 1 and conf[2, 2] == 1 and conf[1, 2] == 1
    iou, miou = iou_from_confusion(conf)
    assert np.isnan(iou[0])
    assert iou[1] == pytest.approx(1 / 2) and iou[2] == pytest.approx(1 / 2)
    assert miou == pytest.approx(0.5)


def test_empty_union_class_counts_as_one() -> None:
    conf = confusion_matrix(torch.tensor([1, 1]), torch.tensor([1, 1]), 3)
    iou, miou = iou_from_confusion(conf)
    assert iou[2] == 1.0 and miou == 1.0
    iou, miou = iou_from_confusion(conf, empty=float("nan"))
    assert np.isnan(iou[2]) and miou == 1.0


def test_out_of_range_labels_rejected() -> None:
    with pytest.raises(ValueError, match=r"target: labels must lie in \[0, 3\)"):
        confusion_matrix(torch.tensor([1]), torch.tensor([5]), 3)


def _lovasz_naive(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reference from the paper's definition: per class, sort errors, Jaccard increments."""
    losses = []
    for c in sorted(set(labels.tolist())):
        if c == 0:
            continue
        fg = (labels == c).double()
        err = (fg - probs[:, c].double()).abs()
        order = sorted(range(len(err)), key=lambda i: -float(err[i]))
        total = 0.0
        prev = 0.0
        for n in range(1, len(order) + 1):
            top = order[:n]
            inter = float(fg.sum()) - sum(float(fg[i]) for i in top)
            union = float(fg.sum()) + sum(1 - float(fg[i]) for i in top)
            jac = 1 - inter / union
            total += float(err[order[n - 1]]) * (jac - prev)
            prev = jac
        losses.append(total)
    return torch.tensor(sum(losses) / len(losses), dtype=torch.float64)


def test_lovasz_matches_naive_definition() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(60, 4, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    probs = logits.softmax(1)
    keep = labels != 0
    ours = lovasz_softmax(probs, labels)
    ref = _lovasz_naive(probs[keep], labels[keep])
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def test_lovasz_perfect_prediction_is_zero_and_grad_finite() -> None:
    labels = torch.tensor([1, 2, 3, 1, 0])
    probs = torch.nn.functional.one_hot(labels, 4).float()
    assert float(lovasz_softmax(probs, labels)) == pytest.approx(0.0)
    logits = torch.randn(5, 4, requires_grad=True)
    total, ce, lov = cross_entropy_lovasz(logits, labels)
    total.backward()
    assert torch.isfinite(logits.grad).all()
    assert float(total.detach()) == pytest.approx(float(ce.detach()) + float(lov.detach()))
