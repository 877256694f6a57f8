"""The PyTorch-only sparse backend against dense torch convolutions and naive references.

None of these tests needs spconv: they also run in the ``no_spconv`` session. The comparison
with spconv itself is in ``test_sparse_parity.py``.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from olivine_models import create_point_encoder
from olivine_models.point import sparse_torch as st
from olivine_models.point.backends import SPARSE_BACKENDS, resolve_sparse_backend

SHAPE = (9, 10, 11)  # deliberately not a multiple of the stride


def _random_sparse(
    generator: torch.Generator, n: int, channels: int, shape: tuple[int, int, int] = SHAPE
) -> tuple[torch.Tensor, torch.Tensor]:
    flat = torch.randperm(shape[0] * shape[1] * shape[2], generator=generator)[:n]
    i = flat // (shape[1] * shape[2])
    j = (flat // shape[2]) % shape[1]
    k = flat % shape[2]
    coords = torch.stack([torch.zeros_like(i), i, j, k], dim=1).to(torch.int32)
    feats = torch.randn(n, channels, generator=generator, dtype=torch.float64)
    return coords, feats


def _dense(coords: torch.Tensor, feats: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    grid = torch.zeros(1, feats.shape[1], *shape, dtype=feats.dtype)
    c = coords.long()
    grid[0, :, c[:, 1], c[:, 2], c[:, 3]] = feats.T
    return grid


def _krsc_to_torch(weight: torch.Tensor) -> torch.Tensor:
    """(out, kd, kh, kw, in) -> torch conv3d (out, in, kd, kh, kw)."""
    return weight.permute(0, 4, 1, 2, 3).contiguous()


def test_submanifold_conv_equals_dense_conv_at_active_sites() -> None:
    g = torch.Generator().manual_seed(0)
    coords, feats = _random_sparse(g, 150, 4)
    conv = st.SubMConv3d(4, 6, 3, bias=False, indice_key="s").double()
    with torch.no_grad():
        out = conv(st.SparseConvTensor(feats, coords, SHAPE, 1))
        dense = F.conv3d(_dense(coords, feats, SHAPE), _krsc_to_torch(conv.weight), padding=1)
    assert torch.equal(out.indices, coords)
    c = coords.long()
    torch.testing.assert_close(out.features, dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T)


def test_strided_conv_equals_dense_strided_conv() -> None:
    g = torch.Generator().manual_seed(1)
    coords, feats = _random_sparse(g, 200, 3)
    padded = (10, 10, 12)
    conv = st.SparseConv3d(3, 5, 2, stride=2, bias=False, indice_key="d").double()
    with torch.no_grad():
        out = conv(st.SparseConvTensor(feats, coords, padded, 1))
        dense = F.conv3d(_dense(coords, feats, padded), _krsc_to_torch(conv.weight), stride=2)
    parents = torch.unique(coords.long()[:, 1:] // 2, dim=0)
    got = out.indices.long()[:, 1:]
    assert torch.equal(torch.unique(got, dim=0), parents) and got.shape == parents.shape
    assert tuple(out.spatial_shape) == (5, 5, 6)
    torch.testing.assert_close(out.features, dense[0, :, got[:, 0], got[:, 1], got[:, 2]].T)


def test_inverse_conv_equals_dense_transposed_conv_on_the_fine_sites() -> None:
    g = torch.Generator().manual_seed(2)
    coords, feats = _random_sparse(g, 200, 3)
    padded = (10, 10, 12)
    down = st.SparseConv3d(3, 4, 2, stride=2, bias=False, indice_key="d").double()
    up = st.SparseInverseConv3d(4, 2, 2, bias=False, indice_key="d").double()
    with torch.no_grad():
        coarse = down(st.SparseConvTensor(feats, coords, padded, 1))
        fine = up(coarse)
        w = up.weight.permute(4, 0, 1, 2, 3).contiguous()  # (in, out, kd, kh, kw), no flip
        dense = F.conv_transpose3d(_dense(coarse.indices, coarse.features, (5, 5, 6)), w, stride=2)
    assert torch.equal(fine.indices, coords)  # the fine sites, in their original order
    assert tuple(fine.spatial_shape) == padded
    c = coords.long()
    torch.testing.assert_close(fine.features, dense[0, :, c[:, 1], c[:, 2], c[:, 3]].T)


def test_one_by_one_conv_reads_the_weight_as_spconv_does() -> None:
    """spconv computes k=1 convs as ``features @ weight.view(in, out)``; so must we."""
    g = torch.Generator().manual_seed(3)
    coords, feats = _random_sparse(g, 40, 3)
    conv = st.SubMConv3d(3, 5, 1, bias=False).double()
    out = conv(st.SparseConvTensor(feats, coords, SHAPE, 1)).features
    torch.testing.assert_close(out, feats @ conv.weight.detach().reshape(3, 5))
    assert not torch.allclose(out, feats @ conv.weight.detach().reshape(5, 3).T)


def test_kernel_map_matches_a_naive_neighbour_search() -> None:
    g = torch.Generator().manual_seed(4)
    coords, _ = _random_sparse(g, 120, 1, (6, 5, 7))
    # two batch elements with overlapping spatial sites: neighbours never cross batches
    coords = torch.cat(
        [coords, coords[:60] * torch.tensor([0, 1, 1, 1]) + torch.tensor([1, 0, 0, 0])]
    )
    coords = coords.to(torch.int32)
    kmap = st.submanifold_kernel_map(coords, (6, 5, 7), (3, 3, 3))
    got = set()
    for gi, k in enumerate(kmap.offsets):
        s, e = kmap.bounds[gi], kmap.bounds[gi + 1]
        got |= {(k, int(i), int(o)) for i, o in zip(kmap.in_rows[s:e], kmap.out_rows[s:e])}
    rows = {tuple(int(v) for v in c): r for r, c in enumerate(coords)}
    expected = set()
    for o, c in enumerate(coords.tolist()):
        for k, (a, b, d) in enumerate(itertools.product(range(3), repeat=3)):
            n = (c[0], c[1] + a - 1, c[2] + b - 1, c[3] + d - 1)
            if k != 13 and n in rows:
                expected.add((k, rows[n], o))
    assert kmap.identity_offset == 13 and got == expected


def test_border_neighbours_do_not_wrap_around() -> None:
    """(0, 0, K-1) and (0, 1, 0) have adjacent packed keys but are not neighbours."""
    coords = torch.tensor([[0, 0, 0, 3], [0, 0, 1, 0]], dtype=torch.int32)
    kmap = st.submanifold_kernel_map(coords, (1, 2, 4), (3, 3, 3))
    assert kmap.in_rows.numel() == 0


def test_gradients_match_finite_differences() -> None:
    """gradcheck (float64) through a submanifold, a strided and its inverse convolution."""
    g = torch.Generator().manual_seed(5)
    coords, feats = _random_sparse(g, 30, 2, (4, 4, 4))
    subm_map = st.submanifold_kernel_map(coords, (4, 4, 4), (3, 3, 3))
    down_map, _, _ = st.downsample_kernel_map(coords, (4, 4, 4), (2, 2, 2))

    def run(
        f: torch.Tensor, w_subm: torch.Tensor, w_down: torch.Tensor, w_up: torch.Tensor
    ) -> torch.Tensor:
        x = st.sparse_conv(f, w_subm, subm_map)
        coarse = st.sparse_conv(x, w_down, down_map)
        return st.sparse_conv(coarse, w_up, down_map.transposed())

    inputs = (
        feats.requires_grad_(True),
        torch.randn(3, 3, 3, 3, 2, generator=g, dtype=torch.float64).requires_grad_(True),
        torch.randn(4, 2, 2, 2, 3, generator=g, dtype=torch.float64).requires_grad_(True),
        torch.randn(2, 2, 2, 2, 4, generator=g, dtype=torch.float64).requires_grad_(True),
    )
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-7)


def test_indice_key_shares_one_kernel_map_per_forward() -> None:
    g = torch.Generator().manual_seed(6)
    coords, feats = _random_sparse(g, 80, 2)
    a = st.SubMConv3d(2, 2, 3, indice_key="k").double()
    b = st.SubMConv3d(2, 2, 3, indice_key="k").double()
    x = st.SparseConvTensor(feats, coords, SHAPE, 1)
    y = a(x)
    first = x.indice_dict["k"].kernel_map
    z = b(y)
    assert z.indice_dict is x.indice_dict and z.indice_dict["k"].kernel_map is first
    wrong = st.SubMConv3d(2, 2, 5, indice_key="k").double()
    with pytest.raises(ValueError, match=r"kernel \(3, 3, 3\)"):
        wrong(z)


def test_layer_errors_name_the_problem() -> None:
    g = torch.Generator().manual_seed(7)
    coords, feats = _random_sparse(g, 20, 2)
    x = st.SparseConvTensor(feats.float(), coords, (10, 10, 12), 1)
    with pytest.raises(ValueError, match="no strided convolution recorded under indice_key 'd'"):
        st.SparseInverseConv3d(2, 2, 2, indice_key="d")(x)
    with pytest.raises(ValueError, match="expected 3 input channels"):
        st.SubMConv3d(3, 2, 3)(x)
    with pytest.raises(ValueError, match="needs dilation 1"):
        st.SparseConv3d(2, 2, 3, stride=2, dilation=2)
    with pytest.raises(ValueError, match="odd kernel_size"):
        st.SubMConv3d(2, 2, 2)
    with pytest.raises(ValueError, match="multiple of the stride"):
        st.SparseConv3d(2, 2, 2, stride=2)(st.SparseConvTensor(feats, coords, SHAPE, 1))
    with pytest.raises(ValueError, match=r"features must be \(N=20, C\)"):
        st.SparseConvTensor(feats[:3], coords, SHAPE, 1)


def test_bf16_autocast_runs_the_gemms_in_bf16() -> None:
    g = torch.Generator().manual_seed(8)
    coords, feats = _random_sparse(g, 3000, 1, (48, 48, 48))
    torch.manual_seed(0)
    model = create_point_encoder("minkunet_tiny", backend="torch")
    f32 = feats.float().requires_grad_(True)
    ref = model(coords, f32, (48, 48, 48), 1)
    ref.square().mean().backward()
    ref_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    f = feats.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = st.SparseConvTensor(f, coords, (48, 48, 48), 1)
        assert model.conv0p1s1(x).features.dtype == torch.bfloat16
        out = model(coords, f, (48, 48, 48), 1)
    out.float().square().mean().backward()
    assert f.grad is not None and f.grad.dtype == torch.float32
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    rel = float((out.detach().float() - ref.detach()).norm() / ref.detach().norm())
    assert rel < 0.05, f"bf16 output differs from float32 by {rel:.3g} (relative norm)"
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]),
        torch.cat([r.flatten() for r in ref_grad]),
        dim=0,
    )
    assert cos > 0.95


def test_backend_names_are_validated() -> None:
    assert SPARSE_BACKENDS == ("auto", "spconv", "torch")
    with pytest.raises(ValueError, match="allowed: auto, spconv, torch"):
        resolve_sparse_backend("minkowski")
    with pytest.raises(ValueError, match="allowed: auto, spconv, torch"):
        create_point_encoder("minkunet_tiny", backend="cuda")
    model = create_point_encoder("minkunet_tiny", backend="torch")
    assert model.sparse_backend == "torch" and "sparse_backend='torch'" in repr(model)


def test_torch_backend_never_imports_spconv() -> None:
    code = (
        "import sys, torch\n"
        "from olivine_models import create_point_encoder\n"
        "m = create_point_encoder('minkunet_tiny', backend='torch').eval()\n"
        "c = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1]], dtype=torch.int32)\n"
        "m(c, torch.ones(2, 1), (4, 4, 4), 1).sum().backward()\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('spconv', 'cumm')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_auto_falls_back_to_torch_when_spconv_is_not_importable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A ``spconv`` that fails to import (here: shadowed by a broken package) -> torch, logged."""
    (tmp_path / "spconv").mkdir()
    (tmp_path / "spconv" / "__init__.py").write_text("raise ImportError('broken build')\n")
    code = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from olivine_models import create_point_encoder\n"
        "print(create_point_encoder('minkunet_tiny').sparse_backend)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "torch"
    assert "sparse backend: torch (auto; spconv is installed but does not import" in out.stderr
