"""SAM labelers with a tiny real SAM (random weights) on a real nuScenes camera image."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from olivine_models.vfm import (
    BoxProvider,
    Detection,
    FixedBoxProvider,
    SamBoxLabeler,
    SamRefineLabeler,
    build_sam,
    mask_superpixels,
    paint_masks,
    vote_masks,
    vote_superpixels,
)

GSAM_SIZE, GSAM_UNLABELLED = 14, 0
SEEM_SIZE, SEEM_UNLABELLED = 17, 16


@pytest.fixture(scope="module")
def camera_image(shared_data: Path) -> np.ndarray:
    from PIL import Image

    files = sorted((shared_data / "nuscenes/mmdet3d-demo/samples/CAM_FRONT").glob("*.jpg"))
    assert files, "CAM_FRONT image missing"
    image = Image.open(files[0]).convert("RGB")
    assert image.size == (1600, 900)
    return np.asarray(image.resize((160, 90)))  # 1/10 scale keeps the test fast


@pytest.fixture(scope="module")
def tiny_sam() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam("tiny")


def test_box_labeler_outputs_vocabulary_map(camera_image: np.ndarray, tiny_sam) -> None:  # type: ignore[no-untyped-def]
    dets = [
        Detection((5.0, 40.0, 60.0, 85.0), class_id=4, score=0.9),  # "car"
        Detection((0.0, 60.0, 160.0, 90.0), class_id=9, score=0.3),  # "road"
    ]
    provider = FixedBoxProvider(dets)
    assert isinstance(provider, BoxProvider)
    labeler = SamBoxLabeler(tiny_sam, provider, GSAM_SIZE, GSAM_UNLABELLED, batch_size=2)
    maps = labeler.label_batch([camera_image, camera_image[:, ::-1].copy(), camera_image])
    assert len(maps) == 3
    for m in maps:
        assert m.shape == camera_image.shape[:2] and m.dtype == np.uint8
        assert set(np.unique(m).tolist()) <= {GSAM_UNLABELLED, 4, 9}
    np.testing.assert_array_equal(maps[0], maps[2])  # batched == deterministic per image
    single = labeler(camera_image)
    np.testing.assert_array_equal(single, maps[0])
    # explicit per-image detections; an image without boxes is all unlabelled
    out = labeler.label_batch([camera_image, camera_image], detections=[dets, []])
    np.testing.assert_array_equal(out[0], maps[0])
    assert (out[1] == GSAM_UNLABELLED).all()


def test_paint_masks_highest_score_wins() -> None:
    masks = np.zeros((3, 4, 5), dtype=bool)
    masks[0, :2] = True  # rows 0-1, score 0.9
    masks[1, 1:3] = True  # rows 1-2, score 0.5 (overlaps row 1)
    masks[2, 3, :2] = True  # row 3 left, score 0.1
    out = paint_masks(masks, [7, 3, 2], [0.9, 0.5, 0.1], unlabelled_id=16)
    expected = np.full((4, 5), 16, dtype=np.uint8)
    expected[:2] = 7
    expected[2] = 3
    expected[3, :2] = 2
    np.testing.assert_array_equal(out, expected)
    # order of the inputs does not matter
    out2 = paint_masks(masks[::-1], [2, 3, 7], [0.1, 0.5, 0.9], unlabelled_id=16)
    np.testing.assert_array_equal(out2, expected)


def _naive_vote(coarse, masks, unlabelled):  # type: ignore[no-untyped-def]
    refined = coarse.copy()
    for mask in sorted(masks, key=lambda m: -int(m.sum())):
        votes = Counter(int(v) for v in coarse[mask] if v != unlabelled)
        if votes:
            best = max(sorted(votes), key=lambda c: votes[c])  # lowest id on ties
            for y, x in zip(*np.nonzero(mask)):
                refined[y, x] = best
    return refined


def test_vote_masks_matches_naive_majority() -> None:
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, SEEM_SIZE, (20, 30)).astype(np.uint8)
    coarse[:5, :5] = SEEM_UNLABELLED
    masks = [rng.random((20, 30)) < p for p in (0.5, 0.1, 0.02)]
    masks.append(np.zeros((20, 30), dtype=bool))
    only_unlabelled = np.zeros((20, 30), dtype=bool)
    only_unlabelled[:3, :3] = True
    masks.append(only_unlabelled)
    got = vote_masks(coarse, masks, SEEM_SIZE, SEEM_UNLABELLED)
    np.testing.assert_array_equal(got, _naive_vote(coarse, masks, SEEM_UNLABELLED))
    # a mask over unlabelled pixels only changes nothing
    alone = vote_masks(coarse, [only_unlabelled], SEEM_SIZE, SEEM_UNLABELLED)
    np.testing.assert_array_equal(alone, coarse)
    # ... unless unlabelled pixels vote too
    voting = vote_masks(coarse, [only_unlabelled], SEEM_SIZE, SEEM_UNLABELLED, False)
    assert (voting[:3, :3] == SEEM_UNLABELLED).all()


def test_refine_labeler_with_tiny_sam(camera_image: np.ndarray, tiny_sam) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, SEEM_SIZE, camera_image.shape[:2]).astype(np.uint8)
    # random weights: accept every mask so that the vote really runs
    refiner = SamRefineLabeler(
        tiny_sam,
        SEEM_SIZE,
        SEEM_UNLABELLED,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    masks = refiner.masks(camera_image)
    assert masks and all(m.shape == camera_image.shape[:2] for m in masks)
    out = refiner.label_batch([camera_image], [coarse])[0]
    assert out.shape == camera_image.shape[:2] and out.dtype == np.uint8
    assert int(out.max()) < SEEM_SIZE
    np.testing.assert_array_equal(out, vote_masks(coarse, masks, SEEM_SIZE, SEEM_UNLABELLED))
    covered = np.any(np.stack(masks), axis=0)
    np.testing.assert_array_equal(out[~covered], coarse[~covered])


def test_tiny_sam_checkpoint_round_trip(tmp_path: Path, tiny_sam) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tiny_sam.pth"
    torch.save(tiny_sam.state_dict(), path)
    torch.manual_seed(99)
    again = build_sam("tiny", checkpoint=path)
    for (name, a), b in zip(tiny_sam.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in again.parameters()) and not again.training


def test_bad_inputs_raise_clear_errors(camera_image: np.ndarray, tiny_sam, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match=r"sam_vit_h\.pth.*sam_vit_h_4b8939\.pth"):
        build_sam("vit_h", checkpoint=tmp_path / "sam_vit_h.pth")
    with pytest.raises(ValueError, match="random_init=True"):
        build_sam("vit_b")
    with pytest.raises(KeyError, match="vit_h"):
        build_sam("vit_g")
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="does not fit"):
        build_sam("tiny", checkpoint=bad)
    labeler = SamBoxLabeler(tiny_sam, None, GSAM_SIZE, GSAM_UNLABELLED)
    with pytest.raises(ValueError, match="no box_provider"):
        labeler.label_batch([camera_image])
    with pytest.raises(ValueError, match="class_id 14"):
        labeler.label_batch([camera_image], detections=[[Detection((0, 0, 5, 5), 14, 1.0)]])
    with pytest.raises(ValueError, match="x0 < x1"):
        labeler.label_batch([camera_image], detections=[[Detection((5, 0, 5, 5), 1, 1.0)]])
    with pytest.raises(TypeError, match="uint8"):
        labeler.label_batch([camera_image.astype(np.float32)], detections=[[]])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        labeler.label_batch([camera_image[..., 0]], detections=[[]])
    with pytest.raises(ValueError, match="unlabelled_id"):
        SamBoxLabeler(tiny_sam, None, 14, 14)
    refiner = SamRefineLabeler(tiny_sam, SEEM_SIZE, SEEM_UNLABELLED, points_per_side=2)
    with pytest.raises(ValueError, match="shape"):
        refiner(camera_image, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="0..16"):
        refiner(camera_image, np.full(camera_image.shape[:2], 17, dtype=np.uint8))


def test_superpixels_paint_larger_first_and_vote_matches_naive() -> None:
    rng = np.random.default_rng(3)
    big = np.zeros((8, 8), dtype=bool)
    big[:, :6] = True
    small = np.zeros((8, 8), dtype=bool)
    small[2:4, 2:4] = True
    sp = mask_superpixels([small, big])  # generator order does not matter: area does
    assert sp.dtype == np.uint16
    assert (sp[2:4, 2:4] == 2).all() and (sp[big & ~small] == 1).all() and (sp[:, 6:] == 0).all()
    with pytest.raises(ValueError, match="no masks and no shape"):
        mask_superpixels([])
    assert (mask_superpixels([], (3, 4)) == 0).all()
    seg = rng.integers(0, 6, (20, 30)).astype(np.uint16)
    coarse = rng.integers(0, SEEM_SIZE, (20, 30)).astype(np.uint8)
    out = vote_superpixels(coarse, seg, SEEM_SIZE, SEEM_UNLABELLED)
    for s in range(6):
        where = seg == s
        if s == 0:
            np.testing.assert_array_equal(out[where], coarse[where])
            continue
        votes = coarse[where][coarse[where] != SEEM_UNLABELLED]
        assert (out[where] == np.bincount(votes, minlength=SEEM_SIZE).argmax()).all()
    with pytest.raises(ValueError, match="differ"):
        vote_superpixels(coarse, seg[:5], SEEM_SIZE, SEEM_UNLABELLED)
