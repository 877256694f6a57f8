"""The vMF likelihood of OLIVINE's semantic-consistency term (the paper's ``L_kl``).

The 3D semantic features of class ``k`` are modelled as ``vMF(mu_k, kappa_k)`` on ``S^(C-1)``;
:func:`vmf_nll` is their negative log-likelihood under constant class vMFs and
:func:`banerjee_kappa` the concentration estimate. The stateful prior that estimates ``mu`` and
``kappa`` is :class:`olivine_losses.vmf.VMFClassPrior`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from olivine_losses._checks import (
    check_features,
    check_label_range,
    check_labels,
    check_optional_int,
    compute_dtype,
)
from olivine_losses.special import vmf_log_normalizer

__all__ = ["vmf_nll", "banerjee_kappa"]


def vmf_nll(
    z: Tensor,
    labels: Tensor,
    mu: Tensor,
    kappa: Tensor,
    *,
    ignore_index: int | None = None,
    valid_classes: Tensor | None = None,
    log_normalizer: Tensor | None = None,
) -> Tensor:
    """Class-averaged vMF negative log-likelihood of features (OLIVINE's ``L_kl``).

    For each class ``k`` present in ``labels`` (and allowed by ``valid_classes``)::

        l_k = -log C_C(kappa_k) - kappa_k * (1/n_k) sum_{i: y_i = k} mu_k^T z_i

    and the loss is the unweighted mean of ``l_k`` over those classes (the reference's
    ``kl_divergence_stopvmf``). ``mu`` and ``kappa`` are treated as constants (detached), so the
    gradient for a point of class ``k`` is ``-kappa_k mu_k / (n_k |K|)``.

    Args:
        z: ``(N, C)`` features (the reference uses unit vectors; they are not re-normalised here).
            ``N = 0`` gives 0.
        labels: ``(N,)`` integer class ids in ``[0, K)`` (or ``ignore_index``).
        mu: ``(K, C)`` mean directions.
        kappa: ``(K,)`` concentrations ``>= 0`` (checked for the classes that take part: a
            negative or NaN ``kappa`` raises ``ValueError``; left-out classes are not read).
        ignore_index: label of points that are left out, or ``None``.
        valid_classes: optional ``(K,)`` bool mask; classes where it is False are left out even if
            present (e.g. classes a prior never observed, whose ``mu`` is undefined).
        log_normalizer: optional precomputed ``(K,)`` ``log C_C(kappa)`` (what
            :class:`VMFClassPrior` caches once frozen); computed from ``kappa`` when None.

    Returns:
        A scalar in the dtype of ``z`` (float32 for half/bfloat16 ``z``: the value is computed in
        float32 and an fp16 result could overflow); 0 (connected to the graph of ``z``) when no
        class is left.
        ``C_C`` uses the exact ``log I_(C/2-1)``
        (:func:`~olivine_losses.special.vmf_log_normalizer`), not the reference's ``I_0``; this
        changes the value by a per-class constant only.

    Raises:
        ValueError: on shape mismatches, labels outside ``[0, K)``, or a negative or NaN
            ``kappa`` of a class that takes part (the vMF density is undefined there; this reads
            the ``K`` values of ``kappa``, one device synchronisation).
    """
    zt = check_features("z", z, allow_empty=True)
    n, dim = zt.shape
    lab = check_labels("labels", labels, n, "N")
    num_classes = _check_prior(mu, kappa, tuple(zt.shape), valid_classes, log_normalizer)
    ignore = check_optional_int("ignore_index", ignore_index)

    cdt = compute_dtype(zt.dtype)
    device = zt.device
    lab = lab.to(device=device, dtype=torch.int64)
    feats, lab = _labelled(zt.to(cdt), lab, ignore, num_classes)

    counts = torch.bincount(lab, minlength=num_classes).to(cdt)
    present = counts > 0
    if valid_classes is not None:
        present = present & valid_classes.to(device)
    _check_kappa(kappa, present)
    mu_c, kappa_c, log_c = _class_constants(mu, kappa, log_normalizer, present, dim, cdt)

    # per-class feature sums, then one dot product per class: (1/n_k) sum_i mu_k^T z_i
    class_sums = torch.zeros(num_classes, dim, dtype=cdt, device=device).index_add(0, lab, feats)
    mean_dot = (class_sums * mu_c).sum(dim=1) / counts.clamp(min=1.0)
    per_class = -log_c - kappa_c * mean_dot
    per_class = torch.where(present, per_class, torch.zeros_like(per_class))
    n_present = present.sum().to(cdt).clamp(min=1.0)
    return per_class.sum() / n_present


def _class_constants(
    mu: Tensor,
    kappa: Tensor,
    log_normalizer: Tensor | None,
    present: Tensor,
    dim: int,
    cdt: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """``mu``, ``kappa`` and ``log C_C(kappa)`` as detached constants in ``cdt`` on the device of
    ``present``, zero for the classes that are left out (so that a NaN ``mu`` or ``kappa`` there
    cannot leak into the value or the gradient: 0 * NaN = NaN).
    """
    device = present.device
    mu_c = mu.detach().to(device=device, dtype=cdt)
    kappa_c = kappa.detach().to(device=device, dtype=cdt)
    mu_c = torch.where(present[:, None], mu_c, torch.zeros_like(mu_c))
    kappa_c = torch.where(present, kappa_c, torch.zeros_like(kappa_c))
    if log_normalizer is None:
        log_c = vmf_log_normalizer(dim, kappa_c)
    else:
        log_c = log_normalizer.detach().to(device=device, dtype=cdt)
        log_c = torch.where(present, log_c, torch.zeros_like(log_c))
    return mu_c, kappa_c, log_c


def _check_prior(
    mu: Tensor,
    kappa: Tensor,
    z_shape: tuple[int, ...],
    valid_classes: Tensor | None,
    log_normalizer: Tensor | None,
) -> int:
    """The argument checks of :func:`vmf_nll` on the prior's tensors; returns ``K``."""
    if not isinstance(mu, Tensor) or not isinstance(kappa, Tensor):
        raise TypeError(
            f"mu and kappa must be tensors, got {type(mu).__name__} and {type(kappa).__name__}"
        )
    if mu.ndim != 2 or mu.shape[1] != z_shape[1]:
        raise ValueError(f"mu must have shape (K, C={z_shape[1]}), got {tuple(mu.shape)}")
    num_classes = int(mu.shape[0])
    if kappa.shape != (num_classes,):
        raise ValueError(f"kappa must have shape (K={num_classes},), got {tuple(kappa.shape)}")
    if z_shape[1] < 2:
        raise ValueError(f"the feature size C must be >= 2 for a vMF, got z {z_shape}")
    if valid_classes is not None and (
        not isinstance(valid_classes, Tensor)
        or valid_classes.dtype != torch.bool
        or valid_classes.shape != (num_classes,)
    ):
        raise ValueError(
            f"valid_classes must be a bool tensor of shape (K={num_classes},), got "
            f"{getattr(valid_classes, 'dtype', type(valid_classes).__name__)} "
            f"{tuple(getattr(valid_classes, 'shape', ()))}"
        )
    if log_normalizer is not None and (
        not isinstance(log_normalizer, Tensor) or log_normalizer.shape != (num_classes,)
    ):
        raise ValueError(
            f"log_normalizer must be a tensor of shape (K={num_classes},), got "
            f"{tuple(getattr(log_normalizer, 'shape', ()))}"
        )
    return num_classes


def _labelled(
    feats: Tensor, lab: Tensor, ignore: int | None, num_classes: int
) -> tuple[Tensor, Tensor]:
    """The features and labels of the points that take part (``ignore`` left out); labels
    checked to lie in ``[0, K)``.
    """
    if ignore is not None:
        include = lab != ignore
        check_label_range(lab, include, num_classes)
        keep = include.nonzero().squeeze(1)
        return feats[keep], lab[keep]
    check_label_range(lab, torch.ones_like(lab, dtype=torch.bool), num_classes)
    return feats, lab


def _check_kappa(kappa: Tensor, used: Tensor) -> None:
    """A vMF needs ``kappa >= 0``; only the classes in the ``(K,)`` bool mask ``used`` are read."""
    k = kappa.detach()
    bad = ((k < 0) | torch.isnan(k)) & used.to(k.device)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1).tolist()
        shown = {int(i): float(k[i]) for i in idx[:10]}
        raise ValueError(
            f"kappa must be >= 0 (the vMF concentration) for every class in the batch, got "
            f"{shown} (class: value)"
        )


def banerjee_kappa(resultant_length: Tensor, dim: int) -> Tensor:
    """Banerjee et al. (2005) approximation ``kappa = R (C - R^2) / (1 - R^2)`` of the vMF MLE.

    ``resultant_length`` is the norm ``R`` in ``[0, 1)`` of the mean of unit vectors; values are
    clamped to ``[0, 1 - 1e-6]`` so that the result is finite (``R = 1`` means all the vectors
    coincide, ``kappa = inf``).
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2, got {dim!r}")
    r = resultant_length.clamp(min=0.0, max=1.0 - 1e-6)
    r2 = r * r
    return r * (dim - r2) / (1.0 - r2)
