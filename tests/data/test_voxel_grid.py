"""Mean-of-points voxelisation (VoxelNet data path) against a naive per-point reference and, where
spconv is installed, against spconv's own ``PointToVoxel`` + OpenPCDet's ``MeanVFE`` formula.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from olivine_data import Collator, PretrainSample
from olivine_data.voxel_grid import (
    VOXELNET_NUSCENES_GRID,
    VoxelDrops,
    VoxelGrid,
    crop_to_range,
    range_filter_mask,
    voxelize_mean,
)


def naive_voxelize_mean(points: np.ndarray, grid: VoxelGrid) -> dict[str, object]:
    """One point at a time, the way PointToVoxel's CPU loop reads."""
    size = grid.grid_size_xyz
    lo = np.asarray(grid.point_range[:3], np.float32)
    vs = np.asarray(grid.voxel_size, np.float32)
    ids: dict[tuple[int, int, int], int] = {}
    members: list[list[int]] = []
    p2v = [-1] * len(points)
    outside = over_point = over_voxel = 0
    dropped_voxels: set[tuple[int, int, int]] = set()
    for i, p in enumerate(points):
        c = np.floor((p[:3].astype(np.float32) - lo) / vs).astype(np.int64)
        if any(c[a] < 0 or c[a] >= size[a] for a in range(3)):
            outside += 1
            continue
        key = (int(c[2]), int(c[1]), int(c[0]))
        if key not in ids:
            if len(ids) >= grid.max_voxels:
                over_voxel += 1
                dropped_voxels.add(key)
                continue
            ids[key] = len(ids)
            members.append([])
        v = ids[key]
        p2v[i] = v
        if len(members[v]) < grid.max_points_per_voxel:
            members[v].append(i)
        else:
            over_point += 1
    coords = np.array(list(ids), np.int32).reshape(-1, 3)
    feats = np.array([points[m].astype(np.float64).mean(axis=0) for m in members]).reshape(
        -1, points.shape[1]
    )
    return {
        "coords": coords,
        "features": feats,
        "num_points": np.array([len(m) for m in members]),
        "p2v": np.array(p2v),
        "drops": VoxelDrops(outside, over_point, over_voxel, len(dropped_voxels)),
    }


def _cloud(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0.0, 0.6, (n, 3)) + rng.choice([-1.0, 0.0, 1.5], (n, 1))
    xyz[: n // 10] = rng.uniform(-2.5, 2.5, (n // 10, 3))  # some outside the grid below
    inten = rng.uniform(0, 255, (n, 1))
    return np.concatenate([xyz, inten], axis=1).astype(np.float32)


@pytest.mark.parametrize(("max_points", "max_voxels"), [(10, 60000), (3, 50), (1, 7)])
def test_matches_naive_reference_with_caps(max_points: int, max_voxels: int) -> None:
    grid = VoxelGrid((-2.0, -2.0, -1.0, 2.0, 2.0, 2.0), (0.25, 0.25, 0.5), max_points, max_voxels)
    pts = _cloud(3000, seed=max_points)
    got = voxelize_mean(pts, grid)
    ref = naive_voxelize_mean(pts, grid)
    np.testing.assert_array_equal(got.coords, ref["coords"])
    np.testing.assert_allclose(got.features, ref["features"], rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(got.num_points, ref["num_points"])
    np.testing.assert_array_equal(got.point_to_voxel, ref["p2v"])
    assert got.drops == ref["drops"]
    d = got.drops
    assert d.outside_grid > 0  # the test exercises every case it claims to
    if max_voxels < 1000:
        assert d.over_voxel_cap > 0 and d.voxels_over_cap > 0 and d.over_point_cap > 0
    # every point is accounted for: averaged, over a cap, or outside
    assert int(got.num_points.sum()) + d.over_point_cap + d.over_voxel_cap + d.outside_grid == 3000


def test_reference_grid_and_filter() -> None:
    g = VOXELNET_NUSCENES_GRID
    assert g.spatial_shape == (40, 1024, 1024)
    pts = np.array(
        [[51.2, 0, 0, 1], [36.3, 36.3, 0, 1], [0, 0, 3.0, 1], [0, 0, -5.01, 1], [0, 0, 3.01, 1]],
        np.float32,
    )
    # float32 51.2^2 > 2621.44: the reference's `dist <= 2621.44` drops x = 51.2 too
    np.testing.assert_array_equal(range_filter_mask(pts), [False, False, True, False, False])
    # z = 3 passes the filter but lies on the grid's upper face: outside the grid, counted
    out = voxelize_mean(pts[[0, 2]])
    assert out.num_voxels == 0 and out.drops.outside_grid == 2
    np.testing.assert_array_equal(out.point_to_voxel, [-1, -1])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected points of shape \(N, >=3\)"):
        voxelize_mean(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="max > min"):
        VoxelGrid((0, 0, 0, 1, -1, 1))
    with pytest.raises(ValueError, match="max_voxels must be >= 1"):
        VoxelGrid(max_voxels=0)


@pytest.mark.skipif(importlib.util.find_spec("spconv") is None, reason="spconv is not installed")
def test_matches_spconv_point_to_voxel_on_the_real_sweep(shared_data: Path) -> None:
    """The reference's own call (``PointToVoxel(...).generate_voxel_with_id``) and ``mean_vfe``
    on the real nuScenes sweep, with the reference caps and with small caps that bite.
    """
    import torch
    from spconv.pytorch.utils import PointToVoxel

    files = sorted((shared_data / "nuscenes/mmdet3d-demo/samples/LIDAR_TOP").glob("*.pcd.bin"))
    raw = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)[:, :4]
    pts = np.ascontiguousarray(raw[range_filter_mask(raw)])
    for max_points, max_voxels in ((10, 60000), (2, 5000)):
        grid = VoxelGrid(max_points_per_voxel=max_points, max_voxels=max_voxels)
        gen = PointToVoxel(
            vsize_xyz=list(grid.voxel_size),
            coors_range_xyz=list(grid.point_range),
            num_point_features=4,
            max_num_points_per_voxel=max_points,
            max_num_voxels=max_voxels,
        )
        voxels, coords, num, p2v = gen.generate_voxel_with_id(torch.from_numpy(pts))
        mean = voxels.sum(dim=1) / num.clamp_min(1).view(-1, 1).float()  # OpenPCDet MeanVFE
        got = voxelize_mean(pts, grid)
        np.testing.assert_array_equal(got.coords, coords.numpy())
        np.testing.assert_array_equal(got.num_points, num.numpy())
        np.testing.assert_allclose(got.features, mean.numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(got.point_to_voxel, p2v.numpy())
        if max_voxels == 5000:
            assert got.drops.over_voxel_cap > 0 and got.drops.over_point_cap > 0


def _pretrain_sample(n: int, seed: int) -> PretrainSample:
    rng = np.random.default_rng(seed)
    pts = np.concatenate(
        [rng.uniform(-60, 60, (n, 2)), rng.uniform(-6, 4, (n, 1)), rng.uniform(0, 255, (n, 1))],
        axis=1,
    ).astype(np.float32)
    pairs = rng.choice(n, n // 2, replace=False).astype(np.int64)
    pix = np.stack([np.zeros(n // 2), rng.integers(0, 8, n // 2), rng.integers(0, 8, n // 2)], 1)
    return PretrainSample(
        points=pts,
        images=np.zeros((1, 8, 8, 3), np.uint8),
        camera_names=("CAM_FRONT",),
        pair_points=pairs,
        pair_pixels=pix.astype(np.int64),
        pair_labels=rng.integers(0, 14, n // 2).astype(np.int64),
        token=f"s{seed}",
    )


def test_collate_cartesian_mean_filters_counts_and_keeps_pairs_on_points() -> None:
    grid = VoxelGrid(max_points_per_voxel=2, max_voxels=300)
    samples = [_pretrain_sample(2000, 0), _pretrain_sample(1500, 1)]
    batch = Collator("cartesian_mean", feature="xyzi", grid=grid).pretrain(samples)
    assert batch.spatial_shape == (40, 1024, 1024)
    assert batch.voxel_features.shape[1] == 4
    kept = [range_filter_mask(s.points, grid) for s in samples]
    drops = batch.voxel_drops
    assert drops["filtered"] == sum(int((~k).sum()) for k in kept)
    assert drops["over_voxel_cap"] > 0 and drops["voxels_over_cap"] > 0
    per_sample = [voxelize_mean(s.points[k], grid) for s, k in zip(samples, kept)]
    assert sum(m.drops.over_point_cap for m in per_sample) == drops["over_point_cap"]
    # the batch's points are the filtered clouds; every pair of a kept point survives, re-indexed
    assert batch.points is not None
    np.testing.assert_array_equal(
        batch.points.numpy(), np.concatenate([s.points[k] for s, k in zip(samples, kept)])
    )
    want = np.concatenate(
        [s.points[s.pair_points[k[s.pair_points]]] for s, k in zip(samples, kept)]
    )
    np.testing.assert_array_equal(batch.points.numpy()[batch.pair_points.numpy()], want)
    # pair_voxels: the voxel of the paired point, -1 if none (dropped voxel / outside the grid)
    pv, p2v = batch.pair_voxels.numpy(), batch.point_to_voxel.numpy()
    np.testing.assert_array_equal(pv, p2v[batch.pair_points.numpy()])
    assert (pv == -1).any() and (pv >= 0).any()
    # a sweep cut earlier (the pretraining transform) brings its count along
    cut = [crop_to_range(s, grid)[0] for s in samples]
    again = Collator("cartesian_mean", feature="xyzi", grid=grid).pretrain(cut)
    assert again.voxel_drops == drops
    with pytest.raises(ValueError, match="'xyzi'"):
        Collator("cartesian", feature="xyzi")
