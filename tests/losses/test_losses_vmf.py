"""vmf_nll and VMFClassPrior: closed forms, EMA step by step, schedule, distributed all-reduce."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from losses_naive import vmf_nll_loops

from olivine_losses import VMFClassPrior, banerjee_kappa, vmf_log_normalizer, vmf_nll


def unit(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64) * scale, dim=1)


# ----------------------------------------------------------------------------- vmf_nll


def test_vmf_nll_matches_loops() -> None:
    z = unit(40, 8, 0)
    labels = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(1))
    labels[labels == 3] = 4  # class 3 absent from the batch
    mu = unit(5, 8, 2)
    kappa = torch.tensor([0.5, 3.0, 20.0, 7.0, 150.0], dtype=torch.float64)
    log_c = vmf_log_normalizer(8, kappa)
    torch.testing.assert_close(
        vmf_nll(z, labels, mu, kappa), vmf_nll_loops(z, labels, mu, log_c, kappa)
    )


def test_vmf_nll_gradient_is_minus_kappa_mu_over_counts() -> None:
    z = unit(30, 6, 3).requires_grad_(True)
    labels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(4))
    mu = unit(3, 6, 5).requires_grad_(True)
    kappa = torch.tensor([2.0, 9.0, 40.0], dtype=torch.float64, requires_grad=True)
    vmf_nll(z, labels, mu, kappa).backward()
    counts = torch.bincount(labels, minlength=3).to(torch.float64)
    expected = (
        -(kappa * 1.0).detach()[labels, None] * mu.detach()[labels] / (counts[labels, None] * 3)
    )
    torch.testing.assert_close(z.grad, expected)
    assert mu.grad is None and kappa.grad is None  # treated as constants


def test_vmf_nll_gradcheck() -> None:
    z = unit(10, 4, 6).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 2, 1])
    mu, kappa = unit(3, 4, 7), torch.tensor([1.0, 5.0, 30.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: vmf_nll(x, labels, mu, kappa), (z,))


def test_vmf_nll_excludes_invalid_and_ignored_classes_without_nan() -> None:
    z = unit(20, 4, 8).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 255] * 5)
    mu = unit(3, 4, 9)
    mu[1] = math.nan  # e.g. a class a naive prior never saw
    kappa = torch.tensor([4.0, math.nan, 10.0], dtype=torch.float64)
    valid = torch.tensor([True, False, True])
    out = vmf_nll(z, labels, mu, kappa, ignore_index=255, valid_classes=valid)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    keep = (labels == 0) | (labels == 2)
    ref = vmf_nll(z.detach()[keep], labels[keep], torch.nan_to_num(mu), torch.nan_to_num(kappa))
    torch.testing.assert_close(out.detach(), ref)
    assert torch.equal(z.grad[labels == 1], torch.zeros(5, 4, dtype=torch.float64))
    # nothing left: a connected 0
    zero = vmf_nll(z, torch.full((20,), 255), mu, kappa, ignore_index=255)
    assert zero.item() == 0.0


def test_vmf_nll_dtypes() -> None:
    z = unit(16, 8, 10) * 1.0
    labels = torch.arange(16) % 4
    mu, kappa = unit(4, 8, 11), torch.tensor([1.0, 50.0, 500.0, 5000.0], dtype=torch.float64)
    ref = vmf_nll(z, labels, mu, kappa)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        out = vmf_nll(z.to(dtype), labels, mu.to(dtype), kappa.float())
        assert out.dtype == torch.float32 and torch.isfinite(out)  # float32 for every input
        torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"z": torch.randn(4)}, ValueError, r"z must have shape \(N, D\).*\(4,\)"),
        ({"labels": torch.zeros(4)}, TypeError, r"labels must have an integer dtype"),
        (
            {"labels": torch.zeros(3, dtype=torch.long)},
            ValueError,
            r"labels must have shape \(N=4,\)",
        ),
        ({"labels": torch.tensor([0, 1, 2, 3])}, ValueError, r"\[0, num_classes=3\).*\[3\]"),
        ({"labels": torch.tensor([0, -1, 2, 1])}, ValueError, r"out-of-range values \[-1\]"),
        ({"mu": torch.randn(3, 5)}, ValueError, r"mu must have shape \(K, C=4\), got \(3, 5\)"),
        ({"kappa": torch.ones(4)}, ValueError, r"kappa must have shape \(K=3,\), got \(4,\)"),
        ({"valid_classes": torch.ones(3)}, ValueError, r"valid_classes must be a bool tensor"),
        ({"z": torch.randn(4, 1), "mu": torch.randn(3, 1)}, ValueError, r"C must be >= 2"),
    ],
)
def test_vmf_nll_input_errors(kwargs: dict, exc: type, match: str) -> None:
    args = {
        "z": torch.randn(4, 4),
        "labels": torch.tensor([0, 1, 2, 1]),
        "mu": torch.randn(3, 4),
        "kappa": torch.ones(3),
    }
    args.update(kwargs)
    extra = {k: args.pop(k) for k in list(args) if k == "valid_classes"}
    with pytest.raises(exc, match=match):
        vmf_nll(args["z"], args["labels"], args["mu"], args["kappa"], **extra)


def test_banerjee_kappa() -> None:
    r = torch.tensor([0.0, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = banerjee_kappa(r, 64)
    assert out[0] == 0
    assert out[1].item() == pytest.approx(0.5 * (64 - 0.25) / 0.75)
    assert out[2].item() == pytest.approx(0.9 * (64 - 0.81) / 0.19)
    assert torch.isfinite(out[3]) and out[3] > 1e6
    with pytest.raises(ValueError, match="dim"):
        banerjee_kappa(r, 1)


# ----------------------------------------------------------------------------- the prior


def test_ema_step_by_step() -> None:
    decay, dim = 0.9, 3
    prior = VMFClassPrior(3, dim, decay=decay, warmup_steps=10)
    rng = np.random.default_rng(0)
    ema = np.zeros((3, dim))
    batches = [
        (rng.normal(size=(5, dim)), np.array([0, 0, 1, 1, 1])),
        (rng.normal(size=(4, dim)), np.array([1, 1, 1, 1])),  # class 0 absent: unchanged
        (rng.normal(size=(6, dim)), np.array([0, 1, 0, 1, 0, 1])),
    ]
    for step, (z, y) in enumerate(batches, start=1):
        for c in range(3):
            if (y == c).any():
                ema[c] = decay * ema[c] + (1 - decay) * z[y == c].mean(0)
        assert prior.update(torch.tensor(z), torch.tensor(y)) is True
        np.testing.assert_allclose(prior.ema_mean.numpy(), ema, rtol=1e-14, atol=1e-15)
        assert int(prior.num_steps) == step
    np.testing.assert_array_equal(prior.num_updates.numpy(), [2, 3, 0])
    r = np.linalg.norm(ema, axis=1)
    np.testing.assert_allclose(prior.mu.numpy()[:2], ema[:2] / r[:2, None], rtol=1e-13)
    np.testing.assert_allclose(
        prior.kappa.numpy()[:2], r[:2] * (dim - r[:2] ** 2) / (1 - r[:2] ** 2), rtol=1e-13
    )
    # class 2 was never seen: mu = 0, kappa = 0, not NaN
    assert torch.equal(prior.mu[2], torch.zeros(dim, dtype=torch.float64))
    assert prior.kappa[2].item() == 0.0
    torch.testing.assert_close(prior.mean_resultant_length()[:2], torch.tensor(r[:2]))


def test_bias_correction_and_the_underestimated_kappa() -> None:
    # every batch has the same class mean m with |m| = 0.9: the reference EMA gives
    # (1 - a^n) m, the corrected one gives m back exactly.
    dim, decay, n = 64, 0.9, 10
    m = F.normalize(torch.randn(dim, dtype=torch.float64), dim=0) * 0.9
    z = m.expand(4, dim).clone()
    labels = torch.zeros(4, dtype=torch.long)
    plain = VMFClassPrior(1, dim, decay=decay, warmup_steps=n)
    corrected = VMFClassPrior(1, dim, decay=decay, warmup_steps=n, bias_correction=True)
    for _ in range(n):
        plain.update(z, labels)
        corrected.update(z, labels)
    shrink = 1 - decay**n
    torch.testing.assert_close(
        plain.mean_resultant_length(), torch.tensor([0.9 * shrink], dtype=torch.float64)
    )
    torch.testing.assert_close(
        corrected.mean_resultant_length(), torch.tensor([0.9], dtype=torch.float64)
    )
    torch.testing.assert_close(
        corrected.kappa, banerjee_kappa(torch.tensor([0.9], dtype=torch.float64), dim)
    )
    torch.testing.assert_close(plain.mu, corrected.mu)
    assert plain.kappa.item() < 0.3 * corrected.kappa.item()


def test_reference_schedule_numbers() -> None:
    # the README's worked example: a = 0.9999, 10,000 updates, true R = 0.9, C = 64
    shrink = 1 - 0.9999**10_000
    assert shrink == pytest.approx(0.632139, abs=1e-6)
    k_ref = banerjee_kappa(torch.tensor(0.9 * shrink, dtype=torch.float64), 64).item()
    k_true = banerjee_kappa(torch.tensor(0.9, dtype=torch.float64), 64).item()
    assert k_ref == pytest.approx(53.6, abs=0.05) and k_true == pytest.approx(299.3, abs=0.05)


def test_freeze_after_warmup_and_loss_schedule() -> None:
    prior = VMFClassPrior(4, 8, warmup_steps=3)
    zs = [unit(20, 8, s) for s in range(6)]
    labels = torch.arange(20) % 3  # class 3 never observed
    outs = [prior(z, labels) for z in zs[:3]]
    assert all(o.item() == 0.0 for o in outs)  # warm-up: no loss
    assert prior.frozen and int(prior.num_steps) == 3
    mu, kappa, ema = prior.mu.clone(), prior.kappa.clone(), prior.ema_mean.clone()
    z = zs[3].clone().requires_grad_(True)
    out = prior(z, labels)
    out.backward()
    expected = vmf_nll(zs[3], labels[:], mu[:3], kappa[:3])
    torch.testing.assert_close(out.detach(), expected)
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert prior.update(zs[4], labels) is False  # frozen: no change
    assert torch.equal(prior.mu, mu) and torch.equal(prior.kappa, kappa)
    assert torch.equal(prior.ema_mean, ema)
    assert int(prior.num_steps) == 5
    torch.testing.assert_close(prior.loss(zs[5], labels), vmf_nll(zs[5], labels, mu[:3], kappa[:3]))


def test_unseen_class_after_warmup_is_excluded_not_nan() -> None:
    prior = VMFClassPrior(3, 4, warmup_steps=1)
    prior.update(unit(6, 4, 0), torch.tensor([0, 0, 0, 1, 1, 1]))
    z = unit(6, 4, 1)
    both = prior.loss(z, torch.tensor([0, 0, 2, 2, 1, 1]))  # class 2 never observed
    only = prior.loss(z[[0, 1, 4, 5]], torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(both)
    torch.testing.assert_close(both, only)
    assert prior.loss(z[2:4], torch.tensor([2, 2])).item() == 0.0


def test_empty_batch_is_a_no_op_update_and_zero_loss() -> None:
    prior = VMFClassPrior(2, 4, warmup_steps=1)
    empty, no_labels = torch.zeros(0, 4, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    assert prior.update(empty, no_labels) is True  # counted, nothing observed
    assert prior.frozen and not prior.observed.any()
    assert prior.loss(empty, no_labels).item() == 0.0
    assert vmf_nll(empty, no_labels, torch.ones(2, 4), torch.ones(2)).item() == 0.0


def test_warmup_zero_and_ignore_index() -> None:
    prior = VMFClassPrior(2, 4, warmup_steps=2, ignore_index=-1)
    z = unit(6, 4, 3)
    prior.update(z, torch.tensor([0, 0, -1, -1, 1, 1]))
    np.testing.assert_array_equal(prior.num_updates.numpy(), [1, 1])
    frozen = VMFClassPrior(2, 4, warmup_steps=0)
    assert frozen.frozen and frozen.update(z, torch.zeros(6, dtype=torch.long)) is False
    assert frozen.loss(z, torch.zeros(6, dtype=torch.long)).item() == 0.0  # nothing observed


def test_state_dict_round_trip() -> None:
    prior = VMFClassPrior(3, 5, warmup_steps=4, bias_correction=True)
    for s in range(2):
        prior.update(unit(9, 5, s), torch.arange(9) % 2)
    names = {n for n, _ in prior.named_buffers()}
    assert names == {"ema_mean", "mu", "kappa", "num_updates", "num_steps", "frozen_at"}
    assert list(prior.parameters()) == []
    buf = io.BytesIO()
    torch.save(prior.state_dict(), buf)
    buf.seek(0)
    clone = VMFClassPrior(3, 5, warmup_steps=4, bias_correction=True)
    clone.load_state_dict(torch.load(buf))
    for name in names:
        assert torch.equal(getattr(clone, name), getattr(prior, name))
    # both continue identically
    z, y = unit(9, 5, 7), torch.arange(9) % 3
    for p in (prior, clone):
        p.update(z, y)
        p.update(z, y)
    assert torch.equal(clone.kappa, prior.kappa) and clone.frozen and prior.frozen
    torch.testing.assert_close(clone.loss(z, y), prior.loss(z, y))
    with pytest.raises(RuntimeError, match="size mismatch"):
        VMFClassPrior(4, 5).load_state_dict(prior.state_dict())


def test_prior_errors() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        VMFClassPrior(0, 4)
    with pytest.raises(ValueError, match="dim"):
        VMFClassPrior(3, 1)
    with pytest.raises(ValueError, match="decay.*1.5"):
        VMFClassPrior(3, 4, decay=1.5)
    with pytest.raises(ValueError, match="warmup_steps"):
        VMFClassPrior(3, 4, warmup_steps=-1)
    prior = VMFClassPrior(3, 4)
    with pytest.raises(ValueError, match=r"z must have shape \(N, dim=4\), got \(5, 3\)"):
        prior.update(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"out-of-range values \[3\]"):
        prior.update(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(TypeError, match="integer dtype"):
        prior.loss(torch.randn(5, 4), torch.zeros(5))
    assert "warmup_steps=10000" in repr(prior) and "decay=0.9999" in repr(prior)


# ----------------------------------------------------------------------------- distributed


def _data(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    # rank 0 never sees class 2, rank 1 sees it; different batch sizes per rank; at step 2
    # rank 0 has no points at all (it must still take part in the all-reduce)
    g = torch.Generator().manual_seed(100 + rank)
    n = 10 + 7 * rank
    z = F.normalize(torch.randn(n, 6, generator=g, dtype=torch.float64), dim=1) + 0.01 * step
    labels = torch.randint(0, 2 + rank, (n,), generator=g)
    if rank == 0 and step == 2:
        return z[:0], labels[:0]
    return z, labels


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        prior = VMFClassPrior(4, 6, decay=0.9, warmup_steps=3, process_group=dist.group.WORLD)
        for step in range(4):
            prior(*_data(rank, step))
        torch.save(prior.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_process_all_reduce_gives_identical_state(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    s0 = torch.load(tmp_path / "rank0.pt")
    s1 = torch.load(tmp_path / "rank1.pt")
    for name in s0:
        assert torch.equal(s0[name], s1[name]), name  # bit-identical on both ranks
    # and equal to one process that sees the global batch
    single = VMFClassPrior(4, 6, decay=0.9, warmup_steps=3)
    for step in range(4):
        (z0, y0), (z1, y1) = _data(0, step), _data(1, step)
        single(torch.cat([z0, z1]), torch.cat([y0, y1]))
    for name, value in single.state_dict().items():
        torch.testing.assert_close(s0[name], value, rtol=1e-12, atol=1e-14)
    assert s0["num_updates"].tolist() == [3, 3, 3, 0]
