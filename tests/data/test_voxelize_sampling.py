"""Voxelisation round trips and DCAS against the direct KDE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import gaussian_kde

from olivine_data.sampling import dcas_probabilities, dcas_sample, range_kde, uniform_pairs
from olivine_data.voxelize import grid_coordinates, voxelize


@pytest.fixture(scope="module")
def kitti_xyz(shared_data: Path) -> np.ndarray:
    p = shared_data / "semantickitti/keonhee-han-KI_DT/sequences/07/velodyne/000964.bin"
    return np.fromfile(p, np.float32).reshape(-1, 4)[:, :3]


@pytest.mark.parametrize(
    ("mode", "size"), [("cylindrical", (0.1, 1.0, 0.1)), ("cartesian", (0.1, 0.1, 0.1))]
)
def test_voxelize_round_trip(kitti_xyz: np.ndarray, mode: str, size: tuple) -> None:
    v = voxelize(kitti_xyz, mode, size)
    raw = grid_coordinates(kitti_xyz, mode, size)
    assert v.coords.dtype == np.int32 and v.coords.min() == 0
    np.testing.assert_array_equal(v.coords[v.inverse].astype(np.int64) + v.offset, raw)
    np.testing.assert_array_equal(v.offset, raw.min(axis=0))
    assert np.unique(v.coords, axis=0).shape[0] == v.num_voxels  # one row per voxel
    # Representative = first point of the voxel in input order.
    first = np.full(v.num_voxels, len(kitti_xyz))
    np.minimum.at(first, v.inverse, np.arange(len(kitti_xyz)))
    np.testing.assert_array_equal(v.representative, first)
    np.testing.assert_array_equal(v.inverse[v.representative], np.arange(v.num_voxels))
    assert 10_000 < v.num_voxels < len(kitti_xyz)


def test_cylindrical_bins_by_hand() -> None:
    pts = np.array([[1.0, 0.0, 0.05], [0.0, 2.0, -0.15], [-1.0, -1e-9, 0.0], [1.04, 0.01, 0.09]])
    raw = grid_coordinates(pts)
    # rho/0.1, phi in degrees (1-degree bins), z/0.1
    assert raw[0].tolist() == [10, 0, 0]
    assert raw[1].tolist() == [20, 90, -2]
    assert raw[2].tolist() == [10, -180, 0]
    v = voxelize(pts)
    assert v.inverse[0] == v.inverse[3] and v.num_voxels == 3  # same voxel as point 0
    assert v.offset.tolist() == [10, -180, -2]
    e = voxelize(np.zeros((0, 3)))
    assert e.num_voxels == 0 and e.inverse.shape == (0,)


def test_voxelize_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        voxelize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="mode"):
        voxelize(np.zeros((4, 3)), mode="polar")
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(np.zeros((4, 3)), voxel_size=(0.1, 0.0, 0.1))
    with pytest.raises(TypeError, match="float"):
        voxelize(np.zeros((4, 3), dtype=np.int64))


def _naive_dcas(r: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The reference formula with a full P x P kernel (small P only)."""
    r = r.astype(np.float64)
    p = len(r)
    h = 1.06 * r.std(ddof=1) * p ** (-0.2)
    k = np.exp(-0.5 * ((r[:, None] - r[None, :]) / h) ** 2) / (h * np.sqrt(2 * np.pi))
    f = k.mean(axis=1)
    n = np.array([(y == c).sum() for c in y])
    w = 1.0 / (f * n)
    return w / w.sum()


def test_kde_equals_scipy_direct_kde(kitti_xyz: np.ndarray) -> None:
    r = np.floor(np.hypot(kitti_xyz[:, 0], kitti_xyz[:, 1]) / 0.1).astype(np.int64)[::12]
    kde = gaussian_kde(r.astype(np.float64), bw_method=1.06 * len(r) ** -0.2)  # Silverman 1.06
    want = kde(r[:3000].astype(np.float64))
    got_int = range_kde(torch.from_numpy(r)).numpy()[:3000]  # dense-histogram path
    got_float = range_kde(torch.from_numpy(r).double()).numpy()[:3000]  # unique-values path
    np.testing.assert_allclose(got_int, want, rtol=1e-6)
    np.testing.assert_allclose(got_float, want, rtol=1e-6)


def test_dcas_probabilities_equal_naive() -> None:
    g = np.random.default_rng(0)
    r = np.concatenate([g.integers(30, 200, 1500), g.integers(200, 800, 300)])
    y = g.choice(17, size=r.size, p=np.r_[0.5, np.full(16, 0.5 / 16)])
    got = dcas_probabilities(torch.from_numpy(r), torch.from_numpy(y))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _naive_dcas(r, y), rtol=1e-9)
    assert abs(float(got.sum()) - 1.0) < 1e-12
    # Negative labels take the generic path and give the same numbers.
    got_neg = dcas_probabilities(torch.from_numpy(r), torch.from_numpy(y - 5))
    np.testing.assert_allclose(got_neg.numpy(), got.numpy(), rtol=1e-12)


def test_dcas_degenerate_std() -> None:
    r = torch.full((10,), 42)
    y = torch.tensor([0] * 8 + [3] * 2)
    p = dcas_probabilities(r, y)
    assert torch.isfinite(p).all()
    # Constant density: each present class gets half the mass.
    assert float(p[:8].sum()) == pytest.approx(0.5) and float(p[8:].sum()) == pytest.approx(0.5)
    assert dcas_probabilities(torch.tensor([5]), torch.tensor([1])).tolist() == [1.0]
    assert (
        dcas_probabilities(
            torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        ).numel()
        == 0
    )


def test_dcas_sample_and_uniform() -> None:
    gen = torch.Generator().manual_seed(0)
    r = torch.randint(0, 500, (5000,), generator=gen)
    y = torch.randint(0, 17, (5000,), generator=gen)
    idx = dcas_sample(r, y, 4096, generator=gen)
    assert idx.shape == (4096,) and idx.unique().numel() == 4096
    assert sorted(dcas_sample(r[:100], y[:100], 4096, generator=gen).tolist()) == list(range(100))
    # Seeded draws repeat.
    a = dcas_sample(r, y, 64, generator=torch.Generator().manual_seed(3))
    b = dcas_sample(r, y, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    u = uniform_pairs(1000, 4096)
    assert sorted(u.tolist()) == list(range(1000))
    assert uniform_pairs(1000, 10).unique().numel() == 10
    # A rare class is over-sampled relative to its frequency.
    y2 = torch.zeros(5000, dtype=torch.long)
    y2[:50] = 1
    s = dcas_sample(r, y2, 500, generator=gen)
    assert (s < 50).sum() > 40  # ~half the mass vs 1% of the pairs
    with pytest.raises(ValueError, match="equal length"):
        dcas_probabilities(r, y[:10])
    with pytest.raises(TypeError, match="integers"):
        dcas_probabilities(r, y.float())
