"""VoxelNet (OpenPCDet VoxelBackBone8x): names and shapes, both backends on the real nuScenes sweep,
and the BEV head / HeightCompression / point sampling against the reference's formulas.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from olivine_models import (
    BEVGrid,
    SparseBEVHead,
    VoxelNet,
    create_point_encoder,
    height_compression,
    sample_bev,
)
from olivine_models.point import sparse_torch as st

needs_spconv = pytest.mark.skipif(
    importlib.util.find_spec("spconv") is None, reason="spconv is not installed"
)
GRID = (40, 1024, 1024)


def openpcdet_names() -> dict[str, tuple[int, ...]]:
    """OpenPCDet's VoxelBackBone8x(input_channels=4) parameters and buffers, from its layer list."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    out: dict[str, tuple[int, ...]] = {}

    def block(prefix: str, cin: int, cout: int, k: tuple[int, int, int] = (3, 3, 3)) -> None:
        out[f"{prefix}.0.weight"] = (cout, *k, cin)
        for b in bn:
            out[f"{prefix}.1.{b}"] = () if b == "num_batches_tracked" else (cout,)

    block("conv_input", 4, 16)
    block("conv1.0", 16, 16)
    for stage, cin, cout in (("conv2", 16, 32), ("conv3", 32, 64), ("conv4", 64, 64)):
        block(f"{stage}.0", cin, cout)
        block(f"{stage}.1", cout, cout)
        block(f"{stage}.2", cout, cout)
    block("conv_out", 64, 128, (3, 1, 1))
    return out


def test_state_dict_is_openpcdets_72_tensors_on_both_backends() -> None:
    expected = openpcdet_names()
    assert len(expected) == 72
    backends = ["torch"] + (["spconv"] if importlib.util.find_spec("spconv") else [])
    for backend in backends:
        model = create_point_encoder("voxelnet", backend=backend)
        assert isinstance(model, VoxelNet) and model.in_channels == 4
        sd = model.state_dict()
        assert {k: tuple(v.shape) for k, v in sd.items()} == expected, backend
        bn = model.conv2[0][1]
        assert (bn.eps, bn.momentum) == (1e-3, 0.01)
        assert model.conv_out[0].bias is None


def _mean_voxels(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (x, y, z, intensity) per 0.1 x 0.1 x 0.2 m cell of [-51.2, 51.2]^2 x [-5, 3] (no caps;
    numpy only, so that this file does not need olivine_data).
    """
    keep = (points[:, 0] ** 2 + points[:, 1] ** 2 <= 51.2**2) & (np.abs(points[:, 2] + 1) < 4)
    pts = points[keep, :4].astype(np.float64)
    cell = np.floor((pts[:, :3] - [-51.2, -51.2, -5.0]) / [0.1, 0.1, 0.2]).astype(np.int64)
    ok = ((cell >= 0) & (cell < [1024, 1024, 40])).all(axis=1)
    pts, cell = pts[ok], cell[ok]
    uniq, inv = np.unique(cell[:, ::-1], axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    sums = np.stack([np.bincount(inv, pts[:, c]) for c in range(4)], axis=1)
    feats = sums / np.bincount(inv)[:, None]
    coords = np.concatenate([np.zeros((len(uniq), 1), np.int64), uniq], axis=1)
    return torch.from_numpy(coords.astype(np.int32)), torch.from_numpy(feats.astype(np.float32))


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.dtype.is_floating_point:
                continue
            t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            if name.endswith("running_var"):
                t.abs_().add_(0.5)
            elif name.endswith(".1.weight"):
                t.add_(1.0)


@needs_spconv
def test_backends_agree_on_the_real_sweep(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    """Forward in eval mode on the real nuScenes sweep (~15k voxels), same weights: the same
    output sites on the (1, 128, 128) grid and features within 1e-4 (absolute; fp32 sums over
    different orders), and the same BEV maps and point samples.
    """
    coords, feats = _mean_voxels(nuscenes_sweep.points)
    a = create_point_encoder("voxelnet", backend="torch")
    b = create_point_encoder("voxelnet", backend="spconv")
    _randomise(a, seed=0)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    with torch.no_grad():
        oa, ob = a(coords, feats, GRID, 1), b(coords, feats, GRID, 1)
    assert tuple(oa.spatial_shape) == tuple(ob.spatial_shape) == (1, 128, 128)
    assert oa.indices.shape[0] > 1000

    def key(c: torch.Tensor) -> torch.Tensor:
        c = c.long()
        return ((c[:, 0] * 2 + c[:, 1]) * 128 + c[:, 2]) * 128 + c[:, 3]

    ia, ib = torch.argsort(key(oa.indices)), torch.argsort(key(ob.indices))
    assert torch.equal(oa.indices[ia].int(), ob.indices[ib].int())
    torch.testing.assert_close(oa.features[ia], ob.features[ib], rtol=1e-4, atol=1e-4)
    bev_a, bev_b = height_compression(oa), ob.dense().reshape(1, 128, 128, 128)
    torch.testing.assert_close(bev_a, bev_b, rtol=1e-4, atol=1e-4)
    xy = torch.from_numpy(nuscenes_sweep.points[:, :2].copy())
    zeros = torch.zeros(xy.shape[0], dtype=torch.int64)
    torch.testing.assert_close(
        sample_bev(bev_a, xy, zeros), sample_bev(bev_b, xy, zeros), rtol=1e-4, atol=1e-4
    )


@needs_spconv
def test_bev_head_is_spconvs_1x1_sparse_conv() -> None:
    import spconv.pytorch as spconv

    g = torch.Generator().manual_seed(1)
    coords = torch.tensor([[0, 0, 3, 4], [0, 0, 5, 1], [1, 0, 2, 2]], dtype=torch.int32)
    feats = torch.randn(3, 128, generator=g)
    head = SparseBEVHead(128, 64)
    ref = spconv.SparseConv3d(128, 64, 1, bias=False, algo=spconv.ConvAlgo.Native)
    ref.load_state_dict(head.state_dict())
    out = head(st.SparseConvTensor(feats, coords, (1, 8, 8), 2))
    want = ref(spconv.SparseConvTensor(feats, coords, [1, 8, 8], 2)).features
    torch.testing.assert_close(out.features, F.normalize(want, dim=1))
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(3))
    assert height_compression(out).shape == (2, 64, 8, 8)


def reference_bilinear(im: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``bilinear_interpolate_torch`` of github.com/Eaphan/OLIVINE (lightning_trainer_spconv.py),
    ``im`` ``(H, W, C)``.
    """
    x0 = torch.floor(x).long()
    x1, y0 = x0 + 1, torch.floor(y).long()
    y1 = y0 + 1
    x0, x1 = x0.clamp(0, im.shape[1] - 1), x1.clamp(0, im.shape[1] - 1)
    y0, y1 = y0.clamp(0, im.shape[0] - 1), y1.clamp(0, im.shape[0] - 1)
    wa = (x1.type_as(x) - x) * (y1.type_as(y) - y)
    wb = (x1.type_as(x) - x) * (y - y0.type_as(y))
    wc = (x - x0.type_as(x)) * (y1.type_as(y) - y)
    wd = (x - x0.type_as(x)) * (y - y0.type_as(y))
    return (
        im[y0, x0] * wa[:, None]
        + im[y1, x0] * wb[:, None]
        + im[y0, x1] * wc[:, None]
        + im[y1, x1] * wd[:, None]
    )


def test_sample_bev_is_the_reference_interpolation() -> None:
    g = torch.Generator().manual_seed(2)
    bev = torch.randn(2, 5, 16, 16, generator=g, dtype=torch.float64)
    grid = BEVGrid(-6.4, -6.4, 0.1, 0.1, 8)  # 16 cells of 0.8 m
    xy = torch.rand(400, 2, generator=g, dtype=torch.float64) * 13.0 - 6.5  # some beyond
    xy[:4] = torch.tensor([[6.4, 0.0], [5.6, 0.0], [0.0, 5.6], [-6.4, -6.4]], dtype=torch.float64)
    b = torch.randint(0, 2, (400,), generator=g)
    got = sample_bev(bev, xy, b, grid)
    u = (xy[:, 0].float() + 6.4) / 0.1 / 8
    v = (xy[:, 1].float() + 6.4) / 0.1 / 8
    for k in range(2):
        m = b == k
        ref = reference_bilinear(bev[k].permute(1, 2, 0), u[m].double(), v[m].double())
        torch.testing.assert_close(got[m], ref, rtol=1e-5, atol=1e-5)
    # inside [0, 15) it is grid_sample(align_corners=True); at and beyond index 15 it is 0
    inside = (u >= 0) & (u < 15) & (v >= 0) & (v < 15)
    gs = F.grid_sample(
        bev,
        torch.stack([u / 7.5 - 1, v / 7.5 - 1], dim=1)
        .double()[None, :, None]
        .expand(2, -1, -1, -1),
        align_corners=True,
    )[b, :, torch.arange(400), 0]
    torch.testing.assert_close(got[inside], gs[inside], rtol=1e-5, atol=1e-5)
    assert bool((got[~inside] == 0).all()) and int((~inside).sum()) >= 3
    assert not bool(inside[1]) and bool(inside[3])  # u = 15 exactly: 0; the corner (0, 0): in


def test_sample_bev_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"xy must be \(N, 2\)"):
        sample_bev(torch.zeros(1, 2, 4, 4), torch.zeros(3, 3), torch.zeros(3))


def test_torch_backend_trains() -> None:
    """A training step on the torch backend: finite gradients reach conv_input."""
    g = torch.Generator().manual_seed(3)
    cells = torch.randperm(40 * 64 * 64, generator=g)[:3000]
    coords = torch.stack(
        [torch.zeros_like(cells), cells // 4096, (cells // 64) % 64, cells % 64], 1
    ).int()
    model = create_point_encoder("voxelnet", backend="torch")
    out = model(coords, torch.randn(3000, 4, generator=g), (40, 64, 64), 1)
    assert tuple(out.spatial_shape) == (1, 8, 8)
    out.features.square().mean().backward()
    grad = model.conv_input[0].weight.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
