"""Vocabularies and the VFM label store."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from olivine_data.labels import (
    GSAM14,
    NUSCENES16,
    SEEM17,
    LabelStore,
    Vocabulary,
    get_vocabulary,
    pair_superpixel_ids,
)


def test_seem17_order_and_unlabelled() -> None:
    assert SEEM17.num_classes == 17
    assert SEEM17.class_names[0] == "barrier"
    assert SEEM17.class_names[16] == "background"
    assert SEEM17.unlabelled_id == 16
    # Every SEEM class except background maps to the lidarseg eval class of the same meaning.
    synonyms = {"road": "driveable_surface", "building": "manmade", "other ground": "other_flat"}
    for i, name in enumerate(SEEM17.class_names[:16]):
        assert NUSCENES16.class_names[SEEM17.to_eval[i]] == synonyms.get(name, name)
    assert SEEM17.to_eval[16] == 0
    # The SEEM map hits every one of the 16 eval classes exactly once.
    assert sorted(SEEM17.to_eval[:16].tolist()) == list(range(1, 17))


def test_gsam14_prompt_order() -> None:
    assert GSAM14.class_names[0] == "background" and GSAM14.unlabelled_id == 0
    assert GSAM14.class_names[1] == "barrier" and GSAM14.class_names[13] == "building"
    assert NUSCENES16.class_names[GSAM14.to_eval[7]] == "traffic_cone"
    assert NUSCENES16.class_names[GSAM14.to_eval[13]] == "manmade"


def test_to_eval_is_read_only_and_registry() -> None:
    with pytest.raises(ValueError):
        SEEM17.to_eval[0] = 3
    assert get_vocabulary("SEEM17") is SEEM17
    assert get_vocabulary(GSAM14) is GSAM14
    with pytest.raises(ValueError, match="known"):
        get_vocabulary("coco")
    with pytest.raises(ValueError, match="to_eval"):
        Vocabulary("x", ("a", "b"), 0, np.zeros(3))


def test_label_store_round_trip(tmp_path) -> None:
    store = LabelStore(tmp_path)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 17, size=(30, 50))
    p = store.write("CAM_FRONT", "samples/CAM_FRONT/abc.jpg", labels)
    assert p == tmp_path / "camseg" / "CAM_FRONT" / "abc.png"
    assert store.exists("CAM_FRONT", "abc.jpg")
    back = store.read("CAM_FRONT", "abc.jpg", expected_shape=(30, 50))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    # No temporary files are left behind.
    assert [f.name for f in p.parent.iterdir()] == ["abc.png"]


def test_label_store_errors(tmp_path) -> None:
    store = LabelStore(tmp_path, vocabulary="gsam14")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        store.read("CAM_BACK", "missing.jpg")
    with pytest.raises(ValueError, match="outside vocabulary"):
        store.write("CAM_BACK", "a.jpg", np.full((4, 4), 14))
    assert not store.exists("CAM_BACK", "a.jpg")
    # A file written with ids of a larger vocabulary is rejected on read, naming the file.
    LabelStore(tmp_path, "seem17").write("CAM_BACK", "b.jpg", np.full((4, 4), 16))
    with pytest.raises(ValueError, match=r"b\.png.*\[16\]"):
        store.read("CAM_BACK", "b.jpg")
    with pytest.raises(ValueError, match="expected"):
        LabelStore(tmp_path, "seem17").read("CAM_BACK", "b.jpg", expected_shape=(5, 4))
    rgb = tmp_path / "camseg" / "CAM_BACK" / "c.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match="single-channel"):
        store.read("CAM_BACK", "c.jpg")
    with pytest.raises(ValueError, match="2-D"):
        store.write("CAM_BACK", "d.jpg", np.zeros((4, 4, 3), int))
    with pytest.raises(ValueError, match="camera"):
        store.path("../x", "a.jpg")


def test_superpixels_round_trip_and_pair_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LabelStore(tmp_path)
    rng = np.random.default_rng(0)
    sp = rng.integers(0, 70000, (9, 16)).astype(np.int64)
    sp[sp > 65535] = 0
    store.write_superpixels("CAM_FRONT", "samples/CAM_FRONT/a.jpg", sp)
    assert store.superpixel_path("CAM_FRONT", "a.jpg") == tmp_path / "superpixels/CAM_FRONT/a.png"
    assert store.has_superpixels("CAM_FRONT", "a.jpg") and not store.exists("CAM_FRONT", "a.jpg")
    back = store.read_superpixels("CAM_FRONT", "a.jpg", expected_shape=(9, 16))
    assert back.dtype == np.uint16 and np.array_equal(back, sp)
    with pytest.raises(ValueError, match="expected \\(10, 16\\)"):
        store.read_superpixels("CAM_FRONT", "a.jpg", expected_shape=(10, 16))
    with pytest.raises(ValueError, match="0..65535"):
        store.write_superpixels("CAM_FRONT", "b.jpg", np.full((2, 2), 70000))
    with pytest.raises(FileNotFoundError, match="make-labels"):
        store.read_superpixels("CAM_BACK", "a.jpg")
    maps = np.array([[[0, 1], [2, 2]], [[3, 0], [1, 1]]])  # camera 0 ids 1..2, camera 1 ids 1..3
    pairs = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1]])
    ids = pair_superpixel_ids(maps, pairs)
    np.testing.assert_array_equal(ids, [-1, 0, 1, 2 + 2, 2 + 0, -1])
