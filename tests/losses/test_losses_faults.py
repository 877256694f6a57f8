"""Bad numbers in, clear errors or representable values out (issue 14, case 8).

* NaN/inf features during the vMF warm-up must not silently and permanently disable a class;
* ``vmf_nll`` with ``kappa < 0`` (or NaN) raises, as the README's "kappa >= 0" implies;
* fp16 features of large norm must not give an ``inf`` loss: the value is returned in float32.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from olivine_losses import (
    InfoNCELoss,
    SemanticContrastiveLoss,
    SuperpixelInfoNCELoss,
    VMFClassPrior,
    info_nce,
    semantic_contrastive,
    superpixel_info_nce,
    vmf_nll,
)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


# ----------------------------------------------------------------------------- vMF prior, NaN


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_features_in_warmup_raise_naming_class_and_step_and_keep_state(bad: float) -> None:
    prior = VMFClassPrior(4, 8, warmup_steps=5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    prior.update(unit(6, 8, 0), labels)
    prior.update(unit(6, 8, 1), labels)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    z = unit(6, 8, 2)
    z[3, 5] = bad  # one non-finite value in a point of class 1
    match = r"update at step 2 .*class\(es\) \[1\] contain NaN or inf"
    with pytest.raises(ValueError, match=match):
        prior.update(z, labels)
    # nothing changed: the class is not disabled, the step is not counted
    for key, value in prior.state_dict().items():
        assert torch.equal(value, before[key]), key
    # forward (loss-then-update) refuses in the same way
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        prior(z, labels)
    # training can go on with finite features and class 1 keeps a finite, positive kappa
    for seed in range(3, 6):
        prior.update(unit(6, 8, seed), labels)
    assert prior.frozen
    assert torch.isfinite(prior.ema_mean).all()
    assert (prior.kappa[:3] > 0).all() and bool(prior.observed[1])


def test_nan_in_an_ignored_point_is_not_an_error() -> None:
    prior = VMFClassPrior(2, 4, warmup_steps=2, ignore_index=255)
    z = unit(4, 4, 0)
    z[3] = math.nan
    prior.update(z, torch.tensor([0, 1, 1, 255]))
    assert torch.isfinite(prior.ema_mean).all() and prior.observed.all()


# ----------------------------------------------------------------------------- vmf_nll, kappa


@pytest.mark.parametrize("bad", [-1.0, -1e-3, math.nan])
def test_vmf_nll_rejects_negative_or_nan_kappa(bad: float) -> None:
    z, labels, mu = unit(6, 4, 0), torch.tensor([0, 0, 1, 1, 2, 2]), unit(3, 4, 1)
    kappa = torch.tensor([2.0, bad, 5.0], dtype=torch.float64)
    match = r"kappa must be >= 0 .*for every class in the batch, got \{1: (-|nan)"
    with pytest.raises(ValueError, match=match):
        vmf_nll(z, labels, mu, kappa)
    # a class that valid_classes leaves out, or that is absent, is not read
    valid = torch.tensor([True, False, True])
    assert torch.isfinite(vmf_nll(z, labels, mu, kappa, valid_classes=valid))
    assert torch.isfinite(vmf_nll(z[[0, 1, 4, 5]], labels[[0, 1, 4, 5]], mu, kappa))


# ----------------------------------------------------------------------------- fp16 range


def _big(m: int, d: int, norm: float, seed: int, dtype: torch.dtype) -> torch.Tensor:
    return (unit(m, d, seed) * norm).to(dtype)


@pytest.mark.parametrize("chunk_size", [None, 8])
def test_info_nce_fp16_large_norm_is_not_inf(chunk_size: int | None) -> None:
    # norm 100 at tau = 0.07: logits up to ~1.4e5, the loss itself ~1e4 .. 1e5 > fp16 max 65504
    k = _big(32, 16, 100.0, 0, torch.float16).requires_grad_(True)
    q = _big(32, 16, 100.0, 1, torch.float16)
    q = q.flip(0).contiguous()  # mismatched pairs: a large loss
    ref = info_nce(k.detach().float(), q.float(), chunk_size=chunk_size)
    assert ref.item() > float(torch.finfo(torch.float16).max)  # the case of the issue
    out = info_nce(k, q, chunk_size=chunk_size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-2)
    out.backward()
    assert k.grad is not None and k.grad.dtype == torch.float16
    assert torch.isfinite(k.grad).all()
    assert InfoNCELoss(chunk_size=chunk_size)(k, q).dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_semantic_and_superpixel_return_float32_for_half_inputs(dtype: torch.dtype) -> None:
    k = _big(32, 16, 100.0, 0, dtype)
    q = _big(32, 16, 100.0, 1, dtype).flip(0).contiguous()
    labels = torch.arange(32) % 4
    ref = semantic_contrastive(k.float(), q.float(), labels)
    out = semantic_contrastive(k, q, labels)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-2)
    assert SemanticContrastiveLoss()(k, q, labels).dtype == torch.float32

    pix = _big(64, 16, 100.0, 2, dtype)
    psp, xsp = torch.arange(32) % 8, torch.arange(64) % 8
    sp = superpixel_info_nce(k, pix, psp, xsp)
    sp_ref = superpixel_info_nce(k.float(), pix.float(), psp, xsp)
    assert sp.dtype == torch.float32 and torch.isfinite(sp)
    torch.testing.assert_close(sp, sp_ref, rtol=1e-3, atol=1e-2)
    assert SuperpixelInfoNCELoss()(k, pix, psp, xsp).dtype == torch.float32
    # the "nothing to pool" zero has the same dtype as a real value
    none = superpixel_info_nce(k, pix, psp, xsp + 100)
    assert none.dtype == torch.float32 and none.item() == 0.0


def test_vmf_losses_return_float32_for_half_inputs() -> None:
    z = unit(16, 8, 0).half()
    labels = torch.arange(16) % 4
    mu, kappa = unit(4, 8, 1), torch.full((4,), 50.0, dtype=torch.float64)
    assert vmf_nll(z, labels, mu, kappa).dtype == torch.float32
    prior = VMFClassPrior(4, 8, warmup_steps=1)
    assert prior(z, labels).dtype == torch.float32  # warm-up zero
    assert prior(z, labels).dtype == torch.float32  # frozen: vmf_nll
