"""info_nce and semantic_contrastive against per-row loops, closed forms and each other."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from losses_naive import info_nce_rows, reference_supcon, semantic_rows

from olivine_losses import (
    InfoNCELoss,
    SemanticContrastiveLoss,
    info_nce,
    semantic_contrastive,
)

TAU = 0.07


def make(m: int = 24, d: int = 5, seed: int = 0, classes: int = 4, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(m, d, generator=g, dtype=torch.float64) * scale
    q = torch.randn(m, d, generator=g, dtype=torch.float64) * scale
    labels = torch.randint(0, classes, (m,), generator=g)
    return k, q, labels


# ----------------------------------------------------------------------------- info_nce


def test_info_nce_matches_row_loop_and_cross_entropy() -> None:
    k, q, _ = make()
    rows = info_nce_rows(k, q, TAU)
    torch.testing.assert_close(info_nce(k, q, TAU, reduction="none"), rows)
    torch.testing.assert_close(info_nce(k, q, TAU), rows.mean())
    torch.testing.assert_close(
        info_nce(k, q, TAU), F.cross_entropy(k @ q.T / TAU, torch.arange(24))
    )


def test_info_nce_closed_forms() -> None:
    # identical candidates: every row is uniform, loss = log M
    k = torch.randn(7, 3, dtype=torch.float64)
    q = torch.ones(7, 3, dtype=torch.float64)
    assert info_nce(k, q).item() == pytest.approx(math.log(7), abs=1e-12)
    # orthonormal pairs: l_i = log(e^{1/tau} + (M-1)) - 1/tau
    e = torch.eye(4, dtype=torch.float64)
    expected = math.log(math.exp(1 / TAU) + 3) - 1 / TAU
    assert info_nce(e, e).item() == pytest.approx(expected, rel=1e-12)
    # a single pair: nothing to contrast, loss 0
    assert info_nce(e[:1], e[:1]).item() == 0.0


def test_info_nce_symmetric_is_mean_of_both_directions() -> None:
    k, q, _ = make()
    both = 0.5 * (info_nce_rows(k, q, TAU) + info_nce_rows(q, k, TAU))
    torch.testing.assert_close(info_nce(k, q, symmetric=True, reduction="none"), both)
    # the default is the one-directional 3D -> 2D loss of the reference
    assert not torch.allclose(info_nce(k, q), info_nce(k, q, symmetric=True))


def test_info_nce_weights_and_reductions() -> None:
    k, q, _ = make()
    w = torch.rand(24, dtype=torch.float64)
    rows = info_nce_rows(k, q, TAU)
    torch.testing.assert_close(info_nce(k, q, weights=w, reduction="none"), w * rows)
    torch.testing.assert_close(info_nce(k, q, weights=w, reduction="sum"), (w * rows).sum())
    torch.testing.assert_close(info_nce(k, q, weights=w), (w * rows).sum() / w.sum())
    torch.testing.assert_close(info_nce(k, q, reduction="sum"), rows.sum())
    assert info_nce(k, q, weights=torch.zeros(24, dtype=torch.float64)).item() == 0.0


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_permutation_invariant(symmetric: bool) -> None:
    k, q, _ = make()
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        info_nce(k[perm], q[perm], symmetric=symmetric), info_nce(k, q, symmetric=symmetric)
    )
    torch.testing.assert_close(
        info_nce(k[perm], q[perm], reduction="none", symmetric=symmetric),
        info_nce(k, q, reduction="none", symmetric=symmetric)[perm],
    )


def test_info_nce_does_not_need_unit_norm() -> None:
    # norms of 100 make logits of ~1e5 / 0.07: a raw exp would overflow even float64
    k, q, _ = make(scale=100.0)
    out = info_nce(k, q)
    assert torch.isfinite(out)
    torch.testing.assert_close(out, info_nce_rows(k, q, TAU).mean())


# ----------------------------------------------------------------------------- semantic


@pytest.mark.parametrize("variant", ["sum_in_log", "mean_log_prob"])
def test_semantic_matches_row_loop(variant: str) -> None:
    k, q, labels = make()
    rows = semantic_rows(k, q, labels, TAU, variant)
    out = semantic_contrastive(k, q, labels, TAU, variant=variant, reduction="none")  # type: ignore[arg-type]
    torch.testing.assert_close(out, rows)


def test_semantic_equals_reference_formulation_on_unit_vectors() -> None:
    k, q, labels = make(m=40)
    k, q = F.normalize(k, dim=1), F.normalize(q, dim=1)
    torch.testing.assert_close(semantic_contrastive(k, q, labels), reference_supcon(k, q, labels))


def test_semantic_with_distinct_labels_is_info_nce() -> None:
    k, q, _ = make()
    labels = torch.arange(24)
    for variant in ("sum_in_log", "mean_log_prob"):
        torch.testing.assert_close(
            semantic_contrastive(k, q, labels, variant=variant),  # type: ignore[arg-type]
            info_nce(k, q),
        )


def test_semantic_single_class_is_zero() -> None:
    k, q, _ = make()
    out = semantic_contrastive(k, q, torch.zeros(24, dtype=torch.long), reduction="none")
    torch.testing.assert_close(out, torch.zeros(24, dtype=torch.float64), atol=1e-12, rtol=0)


def test_semantic_ignore_index() -> None:
    k, q, labels = make()
    labels[:5] = 9  # "unlabelled"
    rows = semantic_rows(k, q, labels, TAU, "sum_in_log")
    keep = labels != 9
    out = semantic_contrastive(k, q, labels, ignore_index=9)
    torch.testing.assert_close(out, rows[keep].mean())
    none = semantic_contrastive(k, q, labels, ignore_index=9, reduction="none")
    assert (none[~keep] == 0).all()
    torch.testing.assert_close(none[keep], rows[keep])
    # the unlabelled pixels stay in the denominators: dropping them changes the loss
    dropped = semantic_contrastive(k[keep], q[keep], labels[keep])
    assert not torch.allclose(out, dropped)
    # every anchor ignored: 0, not NaN, and still differentiable
    kk = k.clone().requires_grad_(True)
    zero = semantic_contrastive(kk, q, torch.full((24,), 9), ignore_index=9)
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(kk.grad, torch.zeros_like(kk))


def test_semantic_without_ignore_index_reproduces_label_zero_collision() -> None:
    # reference: label 0 is both "barrier" and "unlabelled" -> unlabelled pixels are positives
    k, q, labels = make()
    torch.testing.assert_close(
        semantic_contrastive(k, q, labels), semantic_rows(k, q, labels, TAU, "sum_in_log").mean()
    )


@pytest.mark.parametrize("variant", ["sum_in_log", "mean_log_prob"])
def test_semantic_permutation_invariant(variant: str) -> None:
    k, q, labels = make()
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5))
    a = semantic_contrastive(k[perm], q[perm], labels[perm], variant=variant, symmetric=True)  # type: ignore[arg-type]
    b = semantic_contrastive(k, q, labels, variant=variant, symmetric=True)  # type: ignore[arg-type]
    torch.testing.assert_close(a, b)
    # relabelling the classes changes nothing
    torch.testing.assert_close(
        semantic_contrastive(k, q, labels * 7 + 3, variant=variant),  # type: ignore[arg-type]
        semantic_contrastive(k, q, labels, variant=variant),  # type: ignore[arg-type]
    )


def test_semantic_symmetric_and_weights() -> None:
    k, q, labels = make()
    w = torch.rand(24, dtype=torch.float64)
    rows = 0.5 * (
        semantic_rows(k, q, labels, TAU, "sum_in_log")
        + semantic_rows(q, k, labels, TAU, "sum_in_log")
    )
    out = semantic_contrastive(k, q, labels, symmetric=True, weights=w)
    torch.testing.assert_close(out, (w * rows).sum() / w.sum())


# ----------------------------------------------------------------------------- chunked


CASES = [
    ("info_nce", {}),
    ("info_nce", {"symmetric": True}),
    ("semantic", {}),
    ("semantic", {"variant": "mean_log_prob"}),
    ("semantic", {"symmetric": True, "ignore_index": 1}),
]


def _call(kind: str, k, q, labels, **kw):
    if kind == "info_nce":
        return info_nce(k, q, **kw)
    return semantic_contrastive(k, q, labels, **kw)


@pytest.mark.parametrize(("kind", "kw"), CASES)
@pytest.mark.parametrize("chunk", [1, 5, 23, 24, 100])
def test_chunked_equals_dense_values_and_gradients(kind: str, kw: dict, chunk: int) -> None:
    k, q, labels = make(m=24, classes=3)
    w = torch.rand(24, dtype=torch.float64)
    grads = []
    values = []
    for chunk_size in (None, chunk):
        kk = k.clone().requires_grad_(True)
        qq = q.clone().requires_grad_(True)
        out = _call(kind, kk, qq, labels, weights=w, chunk_size=chunk_size, **kw)
        out.backward()
        values.append(out.detach())
        grads.append((kk.grad, qq.grad))
    torch.testing.assert_close(values[1], values[0], rtol=1e-13, atol=1e-13)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("kind", "kw"), CASES)
@pytest.mark.parametrize("chunk_size", [None, 4])
def test_gradcheck_float64(kind: str, kw: dict, chunk_size: int | None) -> None:
    k, q, labels = make(m=9, d=3, classes=3, scale=0.1)
    k.requires_grad_(True)
    q.requires_grad_(True)
    w = torch.rand(9, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: _call(kind, a, b, labels, weights=w, chunk_size=chunk_size, **kw), (k, q)
    )


def test_chunked_only_grad_for_inputs_that_need_it() -> None:
    k, q, labels = make()
    kk = k.clone().requires_grad_(True)
    semantic_contrastive(kk, q, labels, chunk_size=5).backward()
    assert kk.grad is not None and torch.isfinite(kk.grad).all()


def test_double_backward_is_refused_loudly() -> None:
    # the fused kernel is differentiable once; a second-order use must fail, not be silently wrong
    k, q, _ = make(m=6, d=3, scale=0.1)
    k.requires_grad_(True)
    (g,) = torch.autograd.grad(info_nce(k, q), k, create_graph=True)
    with pytest.raises(
        RuntimeError, match="once_differentiable|differentiate twice|does not require grad"
    ):
        g.sum().backward()


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_sum_variant_exact_when_positive_mass_underflows(chunk_size: int | None) -> None:
    # float32, far from unit norm: the positives of the first rows sit ~300 nats below a negative,
    # so exp(L - max) of every positive underflows; those rows take the exact masked path
    k, q, labels = make(m=12, d=4, classes=3)
    labels = torch.arange(12) % 3
    q[1] = 40.0 * k[0] / k[0].norm()  # a negative of row 0 aligned with it...
    q[0] = -q[1] / 40.0  # ...and its positives pointing away
    q[3] = q[0]
    q[6], q[9] = q[0], q[0]
    k[0] = k[0] / k[0].norm() * 0.5
    rows = semantic_rows(k, q, labels, TAU, "sum_in_log")
    assert rows[0] > 100  # the regime the fallback exists for
    k32 = k.float().requires_grad_(True)
    q32 = q.float().requires_grad_(True)
    out = semantic_contrastive(k32, q32, labels, reduction="none", chunk_size=chunk_size)
    torch.testing.assert_close(out.double(), rows, rtol=1e-5, atol=1e-4)
    out.sum().backward()
    kk, qq = k.clone().requires_grad_(True), q.clone().requires_grad_(True)
    semantic_contrastive(kk, qq, labels, reduction="sum").backward()
    torch.testing.assert_close(k32.grad.double(), kk.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(q32.grad.double(), qq.grad, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["info_nce", "semantic"])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_half_precision_large_norms(dtype: torch.dtype, kind: str, chunk_size: int | None) -> None:
    # norms of 30 -> |k.q| up to ~1e3, logits ~1.4e4 at tau = 0.07: exp overflows fp16 (6.5e4)
    # and even the products overflow if the matmul ran in fp16 with norms this large
    k, q, labels = make(m=64, d=16, scale=30.0 / 4)
    k16, q16 = k.to(dtype).requires_grad_(True), q.to(dtype).requires_grad_(True)
    out = _call(kind, k16, q16, labels, chunk_size=chunk_size)
    out.backward()
    assert out.dtype == torch.float32  # computed and returned in float32 (fp16 could overflow)
    assert torch.isfinite(out)
    assert k16.grad is not None and k16.grad.dtype == dtype and torch.isfinite(k16.grad).all()
    ref = _call(kind, k16.detach().float(), q16.detach().float(), labels)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_autocast_does_not_downcast_the_kernel(chunk_size: int | None) -> None:
    k, q, labels = make(m=64, d=16, scale=30.0 / 4)
    k32, q32 = k.float(), q.float()
    ref = semantic_contrastive(k32, q32, labels, chunk_size=chunk_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = semantic_contrastive(k32, q32, labels, chunk_size=chunk_size)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_float32_large_norms_finite() -> None:
    k, q, labels = make(m=64, d=16, scale=1e3)
    out = semantic_contrastive(k.float(), q.float(), labels)
    assert torch.isfinite(out)


# ----------------------------------------------------------------------------- modules


def test_modules_wrap_functions() -> None:
    k, q, labels = make()
    w = torch.rand(24, dtype=torch.float64)
    mod = InfoNCELoss(0.1, symmetric=True, reduction="sum", chunk_size=5)
    torch.testing.assert_close(
        mod(k, q, w), info_nce(k, q, 0.1, symmetric=True, weights=w, reduction="sum")
    )
    sup = SemanticContrastiveLoss(variant="mean_log_prob", ignore_index=2)
    torch.testing.assert_close(
        sup(k, q, labels),
        semantic_contrastive(k, q, labels, variant="mean_log_prob", ignore_index=2),
    )
    assert "temperature=0.1" in repr(mod) and "ignore_index=2" in repr(sup)
    assert list(mod.parameters()) == [] and list(sup.buffers()) == []


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((torch.randn(4), torch.randn(4)), {}, ValueError, r"k must have shape \(N, D\).*\(4,\)"),
        ((torch.randn(4, 3, 1), torch.randn(4, 3, 1)), {}, ValueError, r"3 dimensions"),
        ((torch.randn(4, 3), torch.randn(5, 3)), {}, ValueError, r"\(4, 3\).*\(5, 3\)"),
        ((torch.randn(4, 3), torch.randn(4, 2)), {}, ValueError, r"\(4, 3\).*\(4, 2\)"),
        ((torch.randn(0, 3), torch.randn(0, 3)), {}, ValueError, r"non-empty.*\(0, 3\)"),
        ((torch.randn(4, 0), torch.randn(4, 0)), {}, ValueError, r"non-empty.*\(4, 0\)"),
        ((torch.randn(4, 3), torch.randn(4, 3), 0.0), {}, ValueError, r"temperature.*0\.0"),
        ((torch.randn(4, 3), torch.randn(4, 3), -0.1), {}, ValueError, r"temperature.*-0\.1"),
        ((torch.randn(4, 3), torch.randn(4, 3), math.nan), {}, ValueError, r"temperature"),
        ((torch.randn(4, 3), torch.randn(4, 3), "0.07"), {}, TypeError, r"temperature"),
        ((torch.randint(0, 3, (4, 3)), torch.randn(4, 3)), {}, TypeError, r"k must be a floating"),
        (([[1.0]], torch.randn(1, 1)), {}, TypeError, r"k must be a torch.Tensor"),
        (
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"reduction": "avg"},
            ValueError,
            r"reduction.*'avg'",
        ),
        ((torch.randn(4, 3), torch.randn(4, 3)), {"chunk_size": 0}, ValueError, r"chunk_size.*0"),
        ((torch.randn(4, 3), torch.randn(4, 3)), {"chunk_size": 2.0}, TypeError, r"chunk_size"),
        (
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"weights": torch.ones(3)},
            ValueError,
            r"weights.*\(4,\).*\(3,\)",
        ),
        (
            (torch.randn(4, 3), torch.randn(4, 3)),
            {"weights": torch.ones(4, dtype=torch.long)},
            TypeError,
            r"weights",
        ),
    ],
)
def test_info_nce_input_errors(args, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        info_nce(*args, **kwargs)


@pytest.mark.parametrize(
    ("labels", "kwargs", "exc", "match"),
    [
        (torch.zeros(4), {}, TypeError, r"labels must have an integer dtype.*float32"),
        (torch.zeros(4, dtype=torch.bool), {}, TypeError, r"integer dtype.*bool"),
        (
            torch.zeros(5, dtype=torch.long),
            {},
            ValueError,
            r"labels must have shape \(M=4,\).*\(5,\)",
        ),
        (torch.zeros(4, 1, dtype=torch.long), {}, ValueError, r"\(M=4,\).*\(4, 1\)"),
        ([0, 1, 2, 3], {}, TypeError, r"labels must be an integer torch.Tensor"),
        (torch.zeros(4, dtype=torch.long), {"variant": "supcon"}, ValueError, r"variant.*'supcon'"),
        (torch.zeros(4, dtype=torch.long), {"ignore_index": 1.5}, TypeError, r"ignore_index"),
    ],
)
def test_semantic_input_errors(labels, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        semantic_contrastive(torch.randn(4, 3), torch.randn(4, 3), labels, **kwargs)


def test_module_hyperparameter_errors() -> None:
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        InfoNCELoss(reduction="max")
    with pytest.raises(ValueError, match="variant"):
        SemanticContrastiveLoss(variant="other")  # type: ignore[arg-type]
