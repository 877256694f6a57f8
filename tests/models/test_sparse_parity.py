"""The PyTorch-only MinkUNet against the spconv MinkUNet with the same state dict, on real scans.

Real data: the nuScenes LIDAR_TOP sweep (all ~16k cylindrical voxels) and the SemanticKITTI scan
(every 4th point, ~22k voxels, see ``kitti_scan``); batch 2 stacks both.

Why two kinds of check. In eval mode (BatchNorm on running statistics) the two backends compute
the same float32 numbers, and outputs, input-feature gradients and weight gradients must agree to
1e-4 / 1e-3 relative. In train mode (batch statistics) the coarse levels hold their sites in a
different row order in the two backends, so BatchNorm's float32 reductions round differently;
the input gradient of a train-mode UNet is ill-conditioned (BatchNorm's backward subtracts the
projection of the incoming gradient onto the normalised activations), and spconv itself differs
from its own float64 result by up to ~1e-2 there. So train mode is checked as float32 outputs to
1e-4 and as float64 gradients (both backends run float64 on CPU) to 1e-9, on a 4000-voxel slice
of each scan.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from olivine_models import create_point_encoder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("spconv") is None,
    reason="spconv is not installed (e.g. the no_spconv session): nothing to compare with",
)
VoxelisedSweep = Any  # tests/models/conftest.py: .coords, .feats, .spatial_shape

Batch = tuple[torch.Tensor, torch.Tensor, tuple[int, int, int], int]


def _single(sweep: VoxelisedSweep, n: int | None = None) -> Batch:
    coords, feats = sweep.coords, sweep.feats
    if n is not None:
        coords, feats = coords[:n], feats[:n]
    return coords.clone(), feats.clone(), sweep.spatial_shape, 1


def _pair_batch(a: VoxelisedSweep, b: VoxelisedSweep, n: int | None = None) -> Batch:
    ca, fa, sa, _ = _single(a, n)
    cb, fb, sb, _ = _single(b, n)
    cb[:, 0] = 1
    shape = (max(sa[0], sb[0]), max(sa[1], sb[1]), max(sa[2], sb[2]))
    return torch.cat([ca, cb]), torch.cat([fa, fb]), shape, 2


def _twins(name: str, seed: int) -> tuple[nn.Module, nn.Module]:
    """spconv and torch MinkUNets with one state dict (BatchNorm made non-trivial)."""
    torch.manual_seed(seed)
    ref = create_point_encoder(name, backend="spconv")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    new = create_point_encoder(name, backend="torch")
    new.load_state_dict(ref.state_dict(), strict=True)
    assert ref.sparse_backend == "spconv" and new.sparse_backend == "torch"
    return ref, new


def _run(
    model: nn.Module, batch: Batch, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    coords, feats, shape, bs = batch
    model.zero_grad(set_to_none=True)
    model.to(dtype)
    x = feats.to(dtype).requires_grad_(True)
    out = model(coords, x, shape, bs)
    # a fixed random projection: every output channel and row gets a gradient
    proj = torch.randn(out.shape, generator=torch.Generator().manual_seed(11), dtype=dtype)
    (out * proj).sum().backward()
    assert x.grad is not None
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.detach(), grads


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref|."""
    return float((a.double() - ref.double()).abs().max() / ref.double().abs().max())


def _assert_parity(
    ref: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    new: tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    out_tol: float,
    grad_tol: float,
) -> None:
    assert new[0].shape == ref[0].shape
    assert _rel(new[0], ref[0]) <= out_tol, f"output: {_rel(new[0], ref[0]):.3g} > {out_tol}"
    assert _rel(new[1], ref[1]) <= grad_tol, f"input grad: {_rel(new[1], ref[1]):.3g}"
    assert new[2].keys() == ref[2].keys() and len(ref[2]) > 0
    worst = max(ref[2], key=lambda k: _rel(new[2][k], ref[2][k]))
    assert _rel(new[2][worst], ref[2][worst]) <= grad_tol, f"weight grad {worst}"


CASES: dict[str, tuple[str, Callable[[VoxelisedSweep, VoxelisedSweep], Batch]]] = {
    "34c-nuscenes": ("minkunet34c", lambda nu, ki: _single(nu)),
    "34c-kitti": ("minkunet34c", lambda nu, ki: _single(ki)),
    "14-nuscenes": ("minkunet14", lambda nu, ki: _single(nu)),
    "tiny-kitti": ("minkunet_tiny", lambda nu, ki: _single(ki)),
    "14-batch2": ("minkunet14", lambda nu, ki: _pair_batch(nu, ki)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_eval_forward_backward_parity_float32(case: str, nuscenes_sweep, kitti_scan) -> None:  # type: ignore[no-untyped-def]
    name, make = CASES[case]
    batch = make(nuscenes_sweep, kitti_scan)
    ref_model, new_model = _twins(name, seed=1)
    ref = _run(ref_model.eval(), batch, torch.float32)
    new = _run(new_model.eval(), batch, torch.float32)
    assert new[0].shape == (batch[0].shape[0], ref_model.out_channels)
    _assert_parity(ref, new, out_tol=1e-4, grad_tol=1e-3)


TRAIN_CASES: dict[
    str, tuple[str, Callable[[VoxelisedSweep, VoxelisedSweep, int | None], Batch]]
] = {
    "34c-nuscenes": ("minkunet34c", lambda nu, ki, n: _single(nu, n)),
    "14-kitti": ("minkunet14", lambda nu, ki, n: _single(ki, n)),
    "tiny-batch2": ("minkunet_tiny", lambda nu, ki, n: _pair_batch(nu, ki, n)),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_mode_parity(case: str, nuscenes_sweep, kitti_scan) -> None:  # type: ignore[no-untyped-def]
    name, make = TRAIN_CASES[case]
    ref_model, new_model = _twins(name, seed=2)
    full = make(nuscenes_sweep, kitti_scan, None)
    out_ref = _run(ref_model.train(), full, torch.float32)[0]
    out_new = _run(new_model.train(), full, torch.float32)[0]
    assert _rel(out_new, out_ref) <= 1e-4, f"train-mode output: {_rel(out_new, out_ref):.3g}"
    # BatchNorm running statistics moved the same way in both
    torch.testing.assert_close(
        new_model.bn0.running_mean, ref_model.bn0.running_mean, rtol=1e-4, atol=1e-6
    )
    part = make(nuscenes_sweep, kitti_scan, 4000)
    ref = _run(ref_model, part, torch.float64)
    new = _run(new_model, part, torch.float64)
    _assert_parity(ref, new, out_tol=1e-9, grad_tol=1e-9)


def test_checkpoints_are_interchangeable(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    """A state dict trained on the torch backend loads strictly into spconv and vice versa."""
    torch.manual_seed(3)
    coords, feats, shape, bs = _single(nuscenes_sweep, 3000)
    trained = create_point_encoder("minkunet_tiny", backend="torch")
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        trained(coords, feats, shape, bs).square().mean().backward()
        opt.step()
    sp = create_point_encoder("minkunet_tiny", backend="spconv")
    sp.load_state_dict(trained.state_dict(), strict=True)
    back = create_point_encoder("minkunet_tiny", backend="torch")
    back.load_state_dict(sp.state_dict(), strict=True)
    with torch.no_grad():
        a = trained.eval()(coords, feats, shape, bs)
        b = sp.eval()(coords, feats, shape, bs)
        c = back.eval()(coords, feats, shape, bs)
    assert _rel(b, a) <= 1e-5 and torch.equal(a, c)
