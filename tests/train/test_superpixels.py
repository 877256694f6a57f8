"""Connected components of VFM label maps (the SLidR-style superpixels)."""

from __future__ import annotations

import numpy as np
import pytest

from olivine_train.superpixels import label_components


def test_components_split_disconnected_regions_of_one_class() -> None:
    lab = np.array(
        [
            [1, 1, 0, 1],
            [0, 0, 0, 1],
            [2, 0, 2, 2],
        ],
        dtype=np.uint8,
    )
    ids, count = label_components(lab)
    assert count == 5  # class 0: one region; class 1: two; class 2: two
    assert ids[0, 0] == ids[0, 1] and ids[0, 3] == ids[1, 3] and ids[0, 0] != ids[0, 3]
    assert ids[2, 0] != ids[2, 2] and ids[2, 2] == ids[2, 3]
    assert len({int(ids[0, 2]), int(ids[1, 0]), int(ids[2, 1])}) == 1
    assert sorted(np.unique(ids).tolist()) == list(range(5))
    for k in np.unique(ids):  # every component is a single class
        assert len(np.unique(lab[ids == k])) == 1


def test_components_reject_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"expected \(H, W\)"):
        label_components(np.zeros((2, 2, 2), dtype=np.uint8))
