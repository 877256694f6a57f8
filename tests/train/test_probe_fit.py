"""The converged probe's fit (``olivine_train.recipes.probe``) against an independent optimum, its
convergence report and its bad-input errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from olivine_train.recipes.probe import ProbeSettings, fit_logistic


def _problem(
    seed: int = 0, n: int = 300, d: int = 6, k: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)  # class 0 = ignore
    centres = torch.randn(k, d, generator=g)
    x = centres[y] + 1.5 * torch.randn(n, d, generator=g) + 3.0  # non-standardised on purpose
    return x, y


def _scipy_optimum(x: np.ndarray, y: np.ndarray, k: int, l2: float) -> tuple[np.ndarray, float]:
    """The same objective, written in numpy and minimised by scipy's L-BFGS-B (float64)."""
    keep = y != 0
    x, y = x[keep], y[keep]
    z = (x - x.mean(0)) / x.std(0, ddof=1)
    n, d = z.shape
    onehot = np.eye(k)[y]

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: d * k].reshape(d, k), theta[d * k :]
        logits = z @ w + b
        logits[:, 0] = -np.inf
        m = logits.max(1, keepdims=True)
        p = np.exp(logits - m)
        lse = np.log(p.sum(1, keepdims=True)) + m
        p /= p.sum(1, keepdims=True)
        loss = float(-(logits[np.arange(n), y] - lse[:, 0]).mean() + 0.5 * l2 * (w * w).sum())
        r = (p - onehot) / n
        gw, gb = z.T @ r + l2 * w, r.sum(0)
        return loss, np.concatenate([gw.ravel(), gb])

    res = minimize(f, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000})  # fmt: skip
    return res.x, float(res.fun)


def test_fit_matches_an_independent_optimum() -> None:
    x, y = _problem()
    k, l2 = 4, 1e-2
    fit = fit_logistic(x, y, k, ProbeSettings(l2=l2, tolerance=1e-7, dtype="float64"))
    assert fit.converged and fit.max_abs_grad <= 1e-7
    theta, loss = _scipy_optimum(x.double().numpy(), y.numpy(), k, l2)
    d = x.shape[1]
    w_ref, b_ref = theta[: d * k].reshape(d, k), theta[d * k :]
    assert fit.loss == pytest.approx(loss, abs=1e-10)
    np.testing.assert_allclose(fit.weight[:, 1:].numpy(), w_ref[:, 1:], atol=1e-5)
    # the bias is defined up to a constant over the predicted classes: compare the differences
    b = fit.bias.numpy()
    np.testing.assert_allclose(b[1:] - b[1:].mean(), b_ref[1:] - b_ref[1:].mean(), atol=1e-5)


def test_ignored_rows_do_not_change_the_fit() -> None:
    x, y = _problem(1)
    s = ProbeSettings(tolerance=1e-7, dtype="float64")
    keep = y != 0
    a = fit_logistic(x, y, 4, s)
    b = fit_logistic(x[keep], y[keep], 4, s)
    torch.testing.assert_close(a.weight, b.weight)
    assert a.logits(x)[:, 1:].argmax(1).tolist() == b.logits(x)[:, 1:].argmax(1).tolist()


def test_unconverged_fit_says_so() -> None:
    x, y = _problem(2)
    fit = fit_logistic(x, y, 4, ProbeSettings(tolerance=1e-10, max_iter=2))
    assert not fit.converged
    assert 1 <= fit.iterations <= 2 and fit.max_abs_grad > 1e-10


def test_fit_is_deterministic() -> None:
    x, y = _problem(3)
    a = fit_logistic(x, y, 4)
    b = fit_logistic(x, y, 4)
    assert torch.equal(a.weight, b.weight) and a.iterations == b.iterations


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"l2": -1.0}, "l2 must be"),
        ({"tolerance": 0.0}, "tolerance must be"),
        ({"max_iter": 0}, "max_iter must be"),
        ({"dtype": "float16"}, "dtype must be"),
    ],
)
def test_bad_settings(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ProbeSettings(**kw)  # type: ignore[arg-type]


def test_bad_inputs() -> None:
    x, y = _problem()
    with pytest.raises(ValueError, match=r"expected x \(N, D\)"):
        fit_logistic(x[:, 0], y, 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        fit_logistic(x, y + 1, 4)
    with pytest.raises(ValueError, match="no labelled training voxels"):
        fit_logistic(x, torch.zeros_like(y), 4)
    bad = x.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_logistic(bad, y, 4)
