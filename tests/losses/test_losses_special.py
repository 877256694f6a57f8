"""log I_nu(kappa) and the vMF normaliser against scipy and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sc
import torch

from olivine_losses import log_bessel_iv, vmf_log_normalizer

DIMS = [2, 3, 4, 5, 8, 16, 17, 32, 64, 65, 100, 128, 256, 511, 512, 1023, 1024]
KAPPAS = np.unique(
    np.concatenate(
        [
            np.logspace(-6, 4, 61),
            [0.5, 1.0, 3.99, 4.0, 4.01, 10.0, 31.9, 32.0, 64.0, 67.0, 92.0, 300.0, 9999.0],
        ]
    )
)


def scipy_log_iv(nu: float, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference log I_nu(k) from scipy and a mask of where it is trustworthy.

    ``log(ive) + k`` where ``ive`` is a normal float64; the ascending series through ``hyp0f1``
    where ``ive`` underflows; points where ``|log I| < 1e-6`` are left to the closed-form test
    (``log(ive) + k`` cancels there).
    """
    ive = sc.ive(nu, k)
    ok_ive = np.isfinite(ive) & (ive > 1e-280)
    ref = np.full_like(k, np.nan)
    ref[ok_ive] = np.log(ive[ok_ive]) + k[ok_ive]
    ks = k[~ok_ive]  # I_nu underflows: small kappa relative to nu, where 0F1 is moderate
    ref[~ok_ive] = nu * np.log(ks / 2) - sc.gammaln(nu + 1) + np.log(sc.hyp0f1(nu + 1, ks * ks / 4))
    trust = np.isfinite(ref) & (np.abs(ref) >= 1e-6)
    return ref, trust


@pytest.mark.parametrize("dim", DIMS)
def test_log_bessel_iv_matches_scipy(dim: int) -> None:
    nu = dim / 2 - 1
    ref, trust = scipy_log_iv(nu, KAPPAS)
    assert trust.sum() >= 50  # only |log I| < 1e-6 (nu = 0, tiny kappa) is left out
    ours = log_bessel_iv(nu, torch.tensor(KAPPAS, dtype=torch.float64)).numpy()
    err = np.abs(ours - ref)[trust]
    scale = np.minimum(1.0, np.abs(ref[trust]))
    # relative error of the log where |log I| < 1, relative error of I itself where |log I| >= 1
    # (which is the stronger of the two there); the contract is 1e-6, the method does ~1e-12
    assert np.max(err / scale) <= 1e-6, (nu, KAPPAS[trust][np.argmax(err / scale)])
    assert np.max(err / np.maximum(1.0, np.abs(ref[trust]))) <= 1e-9


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 31.0, 511.0])
def test_log_bessel_iv_small_kappa_closed_form(nu: float) -> None:
    # log I_nu(k) = nu log(k/2) - lgamma(nu+1) + log(1 + x/(nu+1) + x^2/(2(nu+1)(nu+2)) + ...)
    k = np.array([1e-6, 3e-6, 1e-5, 1e-4, 1e-3])
    x = k * k / 4
    s = (
        x / (nu + 1)
        + x * x / (2 * (nu + 1) * (nu + 2))
        + x**3 / (6 * (nu + 1) * (nu + 2) * (nu + 3))
    )
    ref = nu * np.log(k / 2) - sc.gammaln(nu + 1) + np.log1p(s)
    ours = log_bessel_iv(nu, torch.tensor(k, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=0)
    if nu == 0.0:  # log I_0(1e-6) = 2.5e-13 keeps its relative accuracy
        assert abs(ours[0] / 2.5e-13 - 1) < 1e-9


def test_log_bessel_iv_half_integer_closed_form() -> None:
    # I_{1/2}(k) = sqrt(2/(pi k)) sinh(k); log sinh(k) = k + log1p(-exp(-2k)) - log 2
    k = np.logspace(-3, 4, 50)
    log_sinh = k + np.log(-np.expm1(-2 * k)) - math.log(2)
    ref = 0.5 * np.log(2 / (math.pi * k)) + log_sinh
    ours = log_bessel_iv(0.5, torch.tensor(k, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-11, atol=1e-12)


def test_log_bessel_iv_at_zero_and_invalid() -> None:
    out = log_bessel_iv(torch.tensor([0.0, 2.0, 1.0, -1.0]), torch.tensor([0.0, 0.0, -1.0, 1.0]))
    assert out[0].item() == 0.0
    assert out[1].item() == -math.inf
    assert math.isnan(out[2].item()) and math.isnan(out[3].item())


@pytest.mark.parametrize("dim", [2, 3, 64, 1024])
def test_gradient_matches_bessel_ratio(dim: int) -> None:
    # d/dk log I_nu(k) = I_{nu+1}(k)/I_nu(k) + nu/k
    nu = dim / 2 - 1
    k = np.logspace(-4, 4, 41)
    kt = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_bessel_iv(nu, kt).sum(), kt)
    num, den = sc.ive(nu + 1, k), sc.ive(nu, k)
    ok = (num > 1e-280) & (den > 1e-280)
    ref = num[ok] / den[ok] + nu / k[ok]
    np.testing.assert_allclose(grad.numpy()[ok], ref, rtol=1e-9)


@pytest.mark.parametrize("nu", [0.0, 0.5, 31.0, 100.0])
def test_gradcheck_float64(nu: float) -> None:
    # points on both sides of the series/Debye switch (4 sqrt(nu+1)) and far into each regime
    edge = 4 * math.sqrt(nu + 1)
    k = torch.tensor(
        [1e-3, 0.7, edge - 1e-3, edge + 1e-3, 2 * edge, 800.0],
        dtype=torch.float64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(lambda x: log_bessel_iv(nu, x), (k,))
    assert torch.autograd.gradcheck(lambda x: vmf_log_normalizer(int(2 * nu + 2), x), (k,))


def test_continuous_across_branch_switch() -> None:
    for nu in [0.0, 7.5, 31.0, 511.0]:
        edge = 4 * math.sqrt(nu + 1)
        k = torch.tensor([edge * (1 - 1e-12), edge * (1 + 1e-12)], dtype=torch.float64)
        lo, hi = log_bessel_iv(nu, k).tolist()
        assert abs(hi - lo) <= 1e-10 * max(1.0, abs(lo))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_is_finite_and_returns_input_dtype(dtype: torch.dtype) -> None:
    k = torch.logspace(-6, 4, 200).to(dtype)
    ref64 = log_bessel_iv(511.0, k.double())
    for dim in [2, 64, 1024]:
        for out in (log_bessel_iv(dim / 2 - 1, k), vmf_log_normalizer(dim, k)):
            assert out.dtype == dtype
            assert torch.isfinite(out).all()
    out32 = log_bessel_iv(511.0, k.float())
    rel = (out32.double() - ref64).abs() / ref64.abs().clamp(min=1)
    assert rel.max() < 1e-6
    kg = torch.logspace(-6, 4, 50, dtype=torch.float32, requires_grad=True)
    (g,) = torch.autograd.grad(vmf_log_normalizer(64, kg).sum(), kg)
    assert torch.isfinite(g).all()


def test_vmf_log_normalizer_closed_forms() -> None:
    k = np.logspace(-4, 3.5, 40)
    kt = torch.tensor(k, dtype=torch.float64)
    # C_3(k) = k / (4 pi sinh k) = k / (2 pi (e^k - e^-k))
    log_sinh = k + np.log(-np.expm1(-2 * k)) - math.log(2)
    np.testing.assert_allclose(
        vmf_log_normalizer(3, kt).numpy(), np.log(k) - math.log(4 * math.pi) - log_sinh, rtol=1e-10
    )
    # C_2(k) = 1 / (2 pi I_0(k))
    np.testing.assert_allclose(
        vmf_log_normalizer(2, kt).numpy(),
        -math.log(2 * math.pi) - (np.log(sc.i0e(k)) + k),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("dim", [2, 3, 64, 1024])
def test_vmf_log_normalizer_kappa_zero_is_uniform(dim: int) -> None:
    # uniform density on S^(dim-1): 1 / area = Gamma(dim/2) / (2 pi^(dim/2))
    expected = sc.gammaln(dim / 2) - math.log(2) - dim / 2 * math.log(math.pi)
    out = vmf_log_normalizer(dim, torch.tensor([0.0, 1e-12], dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), [expected, expected], rtol=1e-12)


def test_vmf_log_normalizer_is_not_the_reference_i0_constant() -> None:
    # The reference evaluates I_0 instead of I_{C/2-1}: for C = 64 and kappa = 50 that is a
    # difference of log I_31(50) - log I_0(50), far from 0.
    k = torch.tensor([50.0], dtype=torch.float64)
    ours = vmf_log_normalizer(64, k)
    with_i0 = 31 * math.log(50.0) - 32 * math.log(2 * math.pi) - (math.log(sc.i0e(50.0)) + 50.0)
    diff = float(ours) - with_i0
    expected = (math.log(sc.i0e(50.0)) + 50.0) - (math.log(sc.ive(31, 50.0)) + 50.0)
    assert diff == pytest.approx(expected, rel=1e-9)
    assert abs(diff) > 5


def test_density_integrates_to_one_on_the_circle() -> None:
    # dim = 2: int_0^{2pi} C_2(k) exp(k cos t) dt = 1
    kappa = 7.5
    t = np.linspace(0, 2 * math.pi, 20001)
    log_c = float(vmf_log_normalizer(2, torch.tensor(kappa, dtype=torch.float64)))
    assert np.trapz(np.exp(log_c + kappa * np.cos(t)), t) == pytest.approx(1.0, rel=1e-9)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="dim must be >= 2"):
        vmf_log_normalizer(1, torch.tensor([1.0]))
    with pytest.raises(TypeError, match="dim must be an int"):
        vmf_log_normalizer(64.0, torch.tensor([1.0]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nu"):
        log_bessel_iv(-0.5, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="kappa must be >= 0"):
        log_bessel_iv(1.0, -2.0)
    with pytest.raises(TypeError, match="kappa"):
        log_bessel_iv(1.0, "3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="kappa"):
        log_bessel_iv(1.0, torch.tensor([True]))
