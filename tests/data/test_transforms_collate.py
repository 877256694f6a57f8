"""Augmentations keep pairs consistent; collate builds consistent batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from olivine_data.collate import Collator
from olivine_data.transforms import (
    PretrainAugmentation,
    ResizeImages,
    SegAugmentation,
    drop_cuboids,
    flip_horizontal,
    random_resized_crop,
    rotation_z,
)
from olivine_data.types import PretrainSample, SegSample
from olivine_data.voxelize import voxelize

H, W, C = 120, 250, 2


def painted_sample(seed: int = 0, n_pts: int = 3000, n_pairs: int = 2400) -> PretrainSample:
    """Images whose pixel (r, c) of camera k holds (R, G, B) = (c, r, 100 k); intensity = index."""
    g = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:H, 0:W]
    img = np.stack([cols, rows, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    images = np.stack([img, img])
    images[1, :, :, 2] = 100
    pts = np.concatenate([g.normal(0, 10, (n_pts, 3)), np.arange(n_pts)[:, None]], 1)
    pair_points = g.choice(n_pts, n_pairs, replace=False).astype(np.int64)
    cam = g.integers(0, C, n_pairs)
    pix = np.stack([cam, g.integers(0, H, n_pairs), g.integers(0, W, n_pairs)], 1)
    return PretrainSample(
        points=pts.astype(np.float32),
        images=images,
        camera_names=("A", "B"),
        pair_points=pair_points,
        pair_pixels=pix.astype(np.int64),
        pair_labels=(pix[:, 2] % 17).astype(np.int64),
        point_labels=(np.arange(n_pts) % 5).astype(np.int64),
        token=f"s{seed}",
    )


def _check_pairs_see_their_pixel(out: PretrainSample, src: PretrainSample, tol: float) -> None:
    """Every pair's (new) pixel decodes to its original pixel, and its point is the same point."""
    orig_idx = out.points[out.pair_points, 3].astype(np.int64)  # intensity = original index
    lookup = {int(p): i for i, p in enumerate(src.pair_points)}
    j = np.array([lookup[int(p)] for p in orig_idx])  # original pair row (points are unique)
    cam, row, col = out.pair_pixels.T
    np.testing.assert_array_equal(cam, src.pair_pixels[j, 0])
    val = out.images[cam, row, col].astype(np.float64)
    assert np.abs(val[:, 0] - src.pair_pixels[j, 2]).max() <= tol  # column
    assert np.abs(val[:, 1] - src.pair_pixels[j, 1]).max() <= tol  # row
    np.testing.assert_array_equal(val[:, 2], 100 * cam)  # camera
    assert out.pair_labels is not None
    np.testing.assert_array_equal(out.pair_labels, src.pair_labels[j])
    np.testing.assert_array_equal(out.point_labels, out.points[:, 3].astype(np.int64) % 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_flip_keep_pairs_consistent(seed: int) -> None:
    src = painted_sample(seed)
    rng = np.random.default_rng(seed)
    out = flip_horizontal(random_resized_crop(src, rng, min_pairs=100), rng, p=0.5)
    assert out.images.shape == (C, 224, 416, 3)
    assert 0 < out.num_pairs <= src.num_pairs
    _check_pairs_see_their_pixel(out, src, tol=1.5)


def test_full_pipeline_keeps_pairs_consistent() -> None:
    src = painted_sample(5)
    aug = PretrainAugmentation(seed=7, min_pairs=200)
    out = aug(src)
    assert out.images.shape == (C, 224, 416, 3)
    _check_pairs_see_their_pixel(out, src, tol=1.5)
    # Points moved rigidly (rotation/flips preserve horizontal range and z).
    idx = out.points[:, 3].astype(np.int64)
    np.testing.assert_allclose(
        np.hypot(*out.points[:, :2].T), np.hypot(*src.points[idx, :2].T), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_array_equal(out.points[:, 2], src.points[idx, 2])
    # Same seed, same result.
    again = PretrainAugmentation(seed=7, min_pairs=200)(src)
    np.testing.assert_array_equal(again.pair_pixels, out.pair_pixels)
    np.testing.assert_array_equal(again.images, out.images)


def test_resize_images_validation() -> None:
    src = painted_sample(3)
    out = ResizeImages(224, 416)(src)
    assert out.num_pairs == src.num_pairs  # nothing dropped
    _check_pairs_see_their_pixel(out, src, tol=1.5)
    # floor(row * 224 / 120), floor(col * 416 / 250)
    np.testing.assert_array_equal(out.pair_pixels[:, 1], src.pair_pixels[:, 1] * 224 // 120)
    np.testing.assert_array_equal(out.pair_pixels[:, 2], src.pair_pixels[:, 2] * 416 // 250)


def test_crop_falls_back_to_full_image_after_max_tries() -> None:
    src = painted_sample(4, n_pairs=40)
    # Impossible acceptance (more than all pairs, and > 100% kept): the full image is used.
    out = random_resized_crop(
        src, np.random.default_rng(0), min_pairs=10**9, min_kept_fraction=1.0, max_tries=3
    )
    np.testing.assert_array_equal(out.pair_pixels, ResizeImages()(src).pair_pixels)
    with pytest.raises(ValueError, match="max_tries"):
        random_resized_crop(src, np.random.default_rng(0), max_tries=0)


def test_drop_cuboids_respects_min_pairs() -> None:
    src = painted_sample(6)
    changed = 0
    for s in range(20):
        out = drop_cuboids(src, np.random.default_rng(s), min_pairs=0)
        if out.points.shape[0] < src.points.shape[0]:
            changed += 1
        orig = out.points[:, 3].astype(np.int64)
        np.testing.assert_array_equal(out.points, src.points[orig])
        assert set(orig[out.pair_points]) <= set(src.pair_points.tolist())
        np.testing.assert_array_equal(out.point_labels, orig % 5)
    assert changed > 10
    # Asking every image to keep all its pairs rejects any drop that removes one.
    per_img = np.bincount(src.pair_pixels[:, 0])
    for s in range(20):
        out = drop_cuboids(src, np.random.default_rng(s), min_pairs=int(per_img.max()))
        assert np.array_equal(np.bincount(out.pair_pixels[:, 0], minlength=C), per_img)


def test_seg_augmentation_and_rotation() -> None:
    pts = np.array([[1.0, 0.0, 0.5, 7.0]], np.float32)
    s = SegSample(points=pts, point_labels=np.array([3]), token="x")
    r = rotation_z(s, np.random.default_rng(0), angle=np.pi / 2)
    np.testing.assert_allclose(r.points, [[0.0, 1.0, 0.5, 7.0]], atol=1e-7)
    out = SegAugmentation(seed=0)(s)
    assert isinstance(out, SegSample) and out.point_labels.tolist() == [3]
    assert np.hypot(*out.points[0, :2]) == pytest.approx(1.0)


def test_collate_pretrain_consistency() -> None:
    samples = [
        ResizeImages()(painted_sample(s, n_pts=2000 + 500 * s, n_pairs=1500)) for s in range(3)
    ]
    batch = Collator().pretrain(samples)
    assert batch.batch_size == 3 and batch.images.shape == (3 * C, 3, 224, 416)
    assert batch.images.dtype == torch.float32 and float(batch.images.max()) <= 1.0
    po, vo = batch.point_offsets.numpy(), batch.voxel_offsets.numpy()
    assert po.tolist() == [0, 2000, 4500, 7500]
    coords = batch.voxel_coords.numpy()
    for b, s in enumerate(samples):
        v = voxelize(s.points[:, :3])
        rows = slice(vo[b], vo[b + 1])
        np.testing.assert_array_equal(coords[rows, 0], b)
        np.testing.assert_array_equal(coords[rows, 1:], v.coords)
        np.testing.assert_array_equal(
            batch.voxel_features[rows, 0].numpy(), s.points[v.representative, 3]
        )
        np.testing.assert_array_equal(
            batch.voxel_labels[rows].numpy(), s.point_labels[v.representative]
        )
    all_pts = np.concatenate([s.points for s in samples])
    # Pairs -> voxel of the paired point; pixel -> image of the sample.
    p2v = batch.point_to_voxel.numpy()
    np.testing.assert_array_equal(batch.pair_voxels.numpy(), p2v[batch.pair_points.numpy()])
    n_pairs = np.cumsum([0] + [s.num_pairs for s in samples])
    for b, s in enumerate(samples):
        sl = slice(n_pairs[b], n_pairs[b + 1])
        np.testing.assert_array_equal(batch.pair_points[sl].numpy() - po[b], s.pair_points)
        np.testing.assert_array_equal(batch.pair_pixels[sl, 0].numpy(), s.pair_pixels[:, 0] + b * C)
        img = batch.images[
            batch.pair_pixels[sl, 0], :, batch.pair_pixels[sl, 1], batch.pair_pixels[sl, 2]
        ]
        np.testing.assert_allclose(
            img.numpy() * 255,
            s.images[s.pair_pixels[:, 0], s.pair_pixels[:, 1], s.pair_pixels[:, 2]],
            atol=1e-3,
        )
    xy = all_pts[batch.pair_points.numpy(), :2].astype(np.float64)
    np.testing.assert_array_equal(
        batch.pair_range_bins.numpy(), np.floor(np.hypot(xy[:, 0], xy[:, 1]) / 0.1)
    )
    assert batch.spatial_shape == tuple((coords[:, 1:].max(0) + 1).tolist())
    # Cartesian mode keeps range bins from the points; feature variants.
    cart = Collator(mode="cartesian", voxel_size=(0.2, 0.2, 0.2), feature="intensity+1")
    bc = cart.pretrain(samples)
    assert torch.equal(bc.pair_range_bins, batch.pair_range_bins)
    coarse = Collator(range_bin_size=0.5).pretrain(samples)  # loss.dcas_range_bin
    np.testing.assert_array_equal(
        coarse.pair_range_bins.numpy(), np.floor(np.hypot(xy[:, 0], xy[:, 1]) / 0.5)
    )
    assert float(bc.voxel_features.min()) == 1.0
    seg = Collator(feature="ones").seg(
        [SegSample(s.points, s.point_labels, s.token) for s in samples]
    )
    assert torch.equal(seg.voxel_features, torch.ones(seg.voxel_coords.shape[0], 1))
    np.testing.assert_array_equal(
        seg.point_labels.numpy(), np.concatenate([s.point_labels for s in samples])
    )


def test_collate_errors() -> None:
    a = ResizeImages()(painted_sample(0))
    b = painted_sample(1)
    with pytest.raises(ValueError, match="same .* images"):
        Collator().pretrain([a, b])
    empty = PretrainSample(
        points=a.points,
        images=a.images,
        camera_names=a.camera_names,
        pair_points=np.zeros(0, np.int64),
        pair_pixels=np.zeros((0, 3), np.int64),
        pair_labels=np.zeros(0, np.int64),
        token="e",
    )
    with pytest.raises(ValueError, match="no point-pixel pair"):
        Collator().pretrain([empty])
    with pytest.raises(ValueError, match="pair_labels"):
        Collator().pretrain(
            [
                a,
                PretrainSample(
                    a.points,
                    a.images,
                    a.camera_names,
                    a.pair_points,
                    a.pair_pixels,
                    None,
                    a.point_labels,
                    "n",
                ),
            ]
        )
    with pytest.raises(ValueError, match="feature"):
        Collator(feature="rgb")
    with pytest.raises(ValueError, match="empty"):
        Collator().seg([])
