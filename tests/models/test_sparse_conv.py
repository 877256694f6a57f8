"""The spconv layers MinkUNet is built from equal dense convolutions on the same grid.

Uses the exact layer types/arguments of ``olivine_models.point.minkunet`` (Native algorithm on
CPU): submanifold k=3 (blocks), strided k=2/s=2 (down) and the inverse k=2 (up).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from olivine_models._spconv import require_spconv

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("spconv") is None,
    reason="spconv is not installed (e.g. the no_spconv session); test_sparse_torch.py checks "
    "the PyTorch-only layers the same way",
)

SHAPE = (9, 10, 11)  # deliberately not a multiple of the stride


def _random_sparse(generator: torch.Generator, n: int, channels: int):  # type: ignore[no-untyped-def]
    flat = torch.randperm(SHAPE[0] * SHAPE[1] * SHAPE[2], generator=generator)[:n]
    i = flat // (SHAPE[1] * SHAPE[2])
    j = (flat // SHAPE[2]) % SHAPE[1]
    k = flat % SHAPE[2]
    coords = torch.stack([torch.zeros_like(i), i, j, k], dim=1).to(torch.int32)
    feats = torch.randn(n, channels, generator=generator, dtype=torch.float64).float()
    return coords, feats


def _dense(coords: torch.Tensor, feats: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    grid = torch.zeros(1, feats.shape[1], *shape)
    c = coords.long()
    grid[0, :, c[:, 1], c[:, 2], c[:, 3]] = feats.T
    return grid


def _dense_weight(weight: torch.Tensor) -> torch.Tensor:
    """spconv KRSC (out, kd, kh, kw, in) -> torch (out, in, kd, kh, kw)."""
    return weight.permute(0, 4, 1, 2, 3).contiguous()


def test_submanifold_conv_equals_dense_conv_at_active_sites() -> None:
    sp = require_spconv()
    g = torch.Generator().manual_seed(0)
    coords, feats = _random_sparse(g, 150, 4)
    conv = sp.SubMConv3d(4, 6, 3, bias=False, indice_key="s", algo=sp.ConvAlgo.Native)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        out = conv(sp.SparseConvTensor(feats, coords, list(SHAPE), 1))
        dense = F.conv3d(_dense(coords, feats, SHAPE), _dense_weight(conv.weight), padding=1)
    assert torch.equal(out.indices, coords)  # same sites, same order
    c = coords.long()
    expected = dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T
    torch.testing.assert_close(out.features, expected, rtol=1e-4, atol=1e-4)


def test_strided_sparse_conv_equals_dense_strided_conv() -> None:
    sp = require_spconv()
    g = torch.Generator().manual_seed(1)
    coords, feats = _random_sparse(g, 200, 3)
    conv = sp.SparseConv3d(3, 5, 2, stride=2, bias=False, indice_key="d", algo=sp.ConvAlgo.Native)
    padded = [s + s % 2 for s in SHAPE]  # MinkUNet pads to a multiple of the stride
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        out = conv(sp.SparseConvTensor(feats, coords, padded, 1))
        dense = F.conv3d(_dense(coords, feats, tuple(padded)), _dense_weight(conv.weight), stride=2)
    # active output sites are exactly the parents of the input sites
    parents = torch.unique(coords.long()[:, 1:] // 2, dim=0)
    got = out.indices.long()[:, 1:]
    assert got.shape == parents.shape
    assert torch.equal(torch.unique(got, dim=0), parents)
    expected = dense[0, :, got[:, 0], got[:, 1], got[:, 2]].T
    torch.testing.assert_close(out.features, expected, rtol=1e-4, atol=1e-4)


def test_inverse_conv_equals_dense_transposed_conv_on_original_sites() -> None:
    sp = require_spconv()
    g = torch.Generator().manual_seed(2)
    coords, feats = _random_sparse(g, 200, 3)
    padded = [s + s % 2 for s in SHAPE]
    down = sp.SparseConv3d(3, 4, 2, stride=2, bias=False, indice_key="d", algo=sp.ConvAlgo.Native)
    up = sp.SparseInverseConv3d(4, 2, 2, bias=False, indice_key="d", algo=sp.ConvAlgo.Native)
    with torch.no_grad():
        down.weight.copy_(torch.randn(down.weight.shape, generator=g))
        up.weight.copy_(torch.randn(up.weight.shape, generator=g))
        coarse = down(sp.SparseConvTensor(feats, coords, padded, 1))
        fine = up(coarse)
        cidx = coarse.indices.long()
        coarse_dense = torch.zeros(1, 4, *[s // 2 for s in padded])
        coarse_dense[0, :, cidx[:, 1], cidx[:, 2], cidx[:, 3]] = coarse.features.T
        # spconv's inverse conv scatters back along the pairs of the down conv: output site x
        # receives W[x - 2 * (x // 2)] @ feature(x // 2). That is a transposed conv whose kernel
        # is the KRSC weight read as (in=K, ..., out=C) -> torch (in, out, kd, kh, kw).
        w = up.weight.permute(4, 0, 1, 2, 3).contiguous()  # (in, out, kd, kh, kw)
        dense = F.conv_transpose3d(coarse_dense, w, stride=2)
    assert torch.equal(fine.indices, coords)  # back to the original sites, original order
    c = coords.long()
    expected = dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T
    torch.testing.assert_close(fine.features, expected, rtol=1e-4, atol=1e-4)
