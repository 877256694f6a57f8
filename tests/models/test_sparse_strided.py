"""Strided sparse convolutions of the PyTorch-only backend (any per-axis kernel, stride, padding):
against a dense ``conv3d`` (a naive reference independent of spconv) and against spconv itself.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from olivine_models.point import sparse_torch as st
from olivine_models.point.sparse_maps import conv_output_shape, strided_kernel_map

SHAPE = (7, 9, 10)
CASES = [
    ((3, 3, 3), (2, 2, 2), (1, 1, 1)),  # OpenPCDet conv2 / conv3
    ((3, 3, 3), (2, 2, 2), (0, 1, 1)),  # conv4
    ((3, 1, 1), (2, 1, 1), (0, 0, 0)),  # conv_out
    ((2, 2, 2), (2, 2, 2), (1, 0, 0)),
    ((3, 2, 1), (1, 2, 3), (2, 0, 0)),
]


def _sites(n: int, seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cells = SHAPE[0] * SHAPE[1] * SHAPE[2]
    idx = torch.cat([torch.randperm(cells, generator=g)[:n] + b * cells for b in range(batch)])
    b = idx // cells
    r = idx % cells
    coords = torch.stack(
        [b, r // (SHAPE[1] * SHAPE[2]), (r // SHAPE[2]) % SHAPE[1], r % SHAPE[2]], dim=1
    ).to(torch.int32)
    feats = torch.randn(coords.shape[0], 3, generator=g, dtype=torch.float64)
    return coords, feats


def _dense(
    coords: torch.Tensor, feats: torch.Tensor, shape: tuple[int, ...], b: int
) -> torch.Tensor:
    out = feats.new_zeros(b, feats.shape[1], *shape)
    c = coords.long()
    out[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = feats
    return out


@pytest.mark.parametrize(("kernel", "stride", "padding"), CASES)
def test_strided_conv_equals_dense_conv3d_at_its_sites(kernel, stride, padding) -> None:  # type: ignore[no-untyped-def]
    coords, feats = _sites(60, seed=sum(kernel))
    conv = st.SparseConv3d(3, 4, kernel, stride=stride, padding=padding, bias=False).double()
    feats.requires_grad_(True)
    out = conv(st.SparseConvTensor(feats, coords, SHAPE, 2))
    assert tuple(out.spatial_shape) == conv_output_shape(SHAPE, kernel, stride, padding)
    weight = conv.weight.permute(0, 4, 1, 2, 3)  # (out, kD, kH, kW, in) -> torch's (out, in, ...)
    dense_in = _dense(coords, feats, SHAPE, 2)
    ref = F.conv3d(dense_in, weight, stride=stride, padding=padding)
    c = out.indices.long()
    torch.testing.assert_close(out.features, ref[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]])
    # the output sites are exactly the cells whose receptive field holds an input site
    occupied = F.conv3d(
        (dense_in.abs().sum(1, keepdim=True) > 0).double(),
        torch.ones(1, 1, *kernel, dtype=torch.float64),
        stride=stride,
        padding=padding,
    )
    assert int((occupied > 0).sum()) == out.indices.shape[0]
    assert bool((occupied[c[:, 0], 0, c[:, 1], c[:, 2], c[:, 3]] > 0).all())
    # gradients against the dense reference
    g = torch.randn_like(out.features)
    (out.features * g).sum().backward()
    grad_sparse = feats.grad.clone()
    feats.grad = None
    ref_g = torch.zeros_like(ref)
    ref_g[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]] = g
    (
        F.conv3d(_dense(coords, feats, SHAPE, 2), weight, stride=stride, padding=padding) * ref_g
    ).sum().backward()
    torch.testing.assert_close(grad_sparse, feats.grad)


def test_inverse_of_a_general_strided_conv_returns_the_fine_sites() -> None:
    coords, feats = _sites(50, seed=3)
    down = st.SparseConv3d(3, 5, 3, stride=2, padding=1, bias=False, indice_key="s").double()
    up = st.SparseInverseConv3d(5, 2, 3, indice_key="s", bias=False).double()
    x = st.SparseConvTensor(feats, coords, SHAPE, 2)
    y = up(down(x))
    assert torch.equal(y.indices, coords) and tuple(y.spatial_shape) == SHAPE
    # the inverse is the transpose of the strided map: <up(z), f> == <z, down^T f> per offset
    kmap, _, _ = strided_kernel_map(coords, SHAPE, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    assert kmap.num_in == coords.shape[0] and kmap.num_out == down(x).indices.shape[0]


def test_general_map_equals_the_downsampling_map_when_stride_is_kernel() -> None:
    coords, _ = _sites(70, seed=11)
    shape = (8, 10, 10)
    coords = coords.clamp(max=7)
    coords = torch.unique(coords, dim=0)
    a, ia, sa = st.downsample_kernel_map(coords, shape, (2, 2, 2))
    b, ib, sb = strided_kernel_map(coords, shape, (2, 2, 2), (2, 2, 2), (0, 0, 0))
    assert sa == sb and torch.equal(ia, ib)
    assert a.offsets == b.offsets and a.bounds == b.bounds
    assert torch.equal(a.in_rows, b.in_rows) and torch.equal(a.out_rows, b.out_rows)


def test_pointwise_strided_conv_keeps_sites_and_reads_in_out_memory() -> None:
    coords, feats = _sites(20, seed=5, batch=1)
    conv = st.SparseConv3d(3, 4, 1, bias=False).double()
    out = conv(st.SparseConvTensor(feats, coords, SHAPE, 1))
    assert torch.equal(out.indices, coords)
    torch.testing.assert_close(out.features, feats @ conv.weight.reshape(3, 4))


@pytest.mark.skipif(importlib.util.find_spec("spconv") is None, reason="spconv is not installed")
@pytest.mark.parametrize(("kernel", "stride", "padding"), CASES[:3])
def test_strided_conv_matches_spconv(kernel, stride, padding) -> None:  # type: ignore[no-untyped-def]
    import spconv.pytorch as spconv

    coords, feats = _sites(80, seed=7)
    feats = feats.float()
    ours = st.SparseConv3d(3, 4, kernel, stride=stride, padding=padding, bias=False)
    ref = spconv.SparseConv3d(
        3, 4, kernel, stride=stride, padding=padding, bias=False, algo=spconv.ConvAlgo.Native
    )
    ref.load_state_dict(ours.state_dict())
    a = ours(st.SparseConvTensor(feats, coords, SHAPE, 2))
    b = ref(spconv.SparseConvTensor(feats, coords, list(SHAPE), 2))
    assert tuple(a.spatial_shape) == tuple(b.spatial_shape)
    key = lambda c: ((c[:, 0].long() * 100 + c[:, 1]) * 100 + c[:, 2]) * 100 + c[:, 3]  # noqa: E731
    oa, ob = torch.argsort(key(a.indices)), torch.argsort(key(b.indices))
    assert torch.equal(a.indices[oa], b.indices[ob].to(torch.int32))
    torch.testing.assert_close(a.features[oa], b.features[ob], rtol=1e-5, atol=1e-5)
