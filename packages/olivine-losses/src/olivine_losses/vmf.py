"""OLIVINE's semantic-consistency term ``L_kl``: a von Mises–Fisher prior per class.

The 3D semantic features of class ``k`` are modelled as ``vMF(mu_k, kappa_k)`` on ``S^(C-1)``.
:class:`VMFClassPrior` estimates ``mu_k`` and ``kappa_k`` from an exponential moving average (EMA)
of class-mean features during a warm-up, then freezes them; :func:`vmf_nll` is the negative
log-likelihood of the features under the (constant) class vMFs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from olivine_losses._checks import (
    check_features,
    check_labels,
    check_optional_int,
    compute_dtype,
    graph_zero,
)
from olivine_losses.special import vmf_log_normalizer

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["vmf_nll", "banerjee_kappa", "VMFClassPrior"]


def _check_label_range(labels: Tensor, include: Tensor, num_classes: int) -> None:
    bad = include & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()[:10]
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}) (or equal ignore_index), "
            f"got out-of-range values {values}"
        )


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
    if not isinstance(mu, Tensor) or not isinstance(kappa, Tensor):
        raise TypeError(
            f"mu and kappa must be tensors, got {type(mu).__name__} and {type(kappa).__name__}"
        )
    if mu.ndim != 2 or mu.shape[1] != dim:
        raise ValueError(f"mu must have shape (K, C={dim}), got {tuple(mu.shape)}")
    num_classes = mu.shape[0]
    if kappa.shape != (num_classes,):
        raise ValueError(f"kappa must have shape (K={num_classes},), got {tuple(kappa.shape)}")
    if dim < 2:
        raise ValueError(f"the feature size C must be >= 2 for a vMF, got z {tuple(zt.shape)}")
    ignore = check_optional_int("ignore_index", ignore_index)
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

    cdt = compute_dtype(zt.dtype)
    device = zt.device
    lab = lab.to(device=device, dtype=torch.int64)
    feats = zt.to(cdt)
    if ignore is not None:
        include = lab != ignore
        _check_label_range(lab, include, num_classes)
        keep = include.nonzero().squeeze(1)
        feats, lab = feats[keep], lab[keep]
    else:
        _check_label_range(lab, torch.ones_like(lab, dtype=torch.bool), num_classes)

    counts = torch.bincount(lab, minlength=num_classes).to(cdt)
    present = counts > 0
    if valid_classes is not None:
        present = present & valid_classes.to(device)
    _check_kappa(kappa, present)
    mu_c = mu.detach().to(device=device, dtype=cdt)
    kappa_c = kappa.detach().to(device=device, dtype=cdt)
    # sanitise classes that are left out, so that a NaN mu or kappa there cannot leak into the
    # value or the gradient (0 * NaN = NaN)
    mu_c = torch.where(present[:, None], mu_c, torch.zeros_like(mu_c))
    kappa_c = torch.where(present, kappa_c, torch.zeros_like(kappa_c))
    if log_normalizer is None:
        log_c = vmf_log_normalizer(dim, kappa_c)
    else:
        log_c = log_normalizer.detach().to(device=device, dtype=cdt)
        log_c = torch.where(present, log_c, torch.zeros_like(log_c))

    # per-class feature sums, then one dot product per class: (1/n_k) sum_i mu_k^T z_i
    class_sums = torch.zeros(num_classes, dim, dtype=cdt, device=device).index_add(0, lab, feats)
    mean_dot = (class_sums * mu_c).sum(dim=1) / counts.clamp(min=1.0)
    per_class = -log_c - kappa_c * mean_dot
    per_class = torch.where(present, per_class, torch.zeros_like(per_class))
    n_present = present.sum().to(cdt).clamp(min=1.0)
    return per_class.sum() / n_present


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


class VMFClassPrior(nn.Module):
    """Per-class vMF prior of OLIVINE with EMA warm-up, then frozen (``L_kl``).

    State (all buffers, none is a parameter, all in ``state_dict``):

    * ``ema_mean`` ``(K, C)``: EMA of the batch class means, ``m_k <- a m_k + (1 - a) mean_k``
      for every class present in the batch (absent classes keep their value), starting at 0;
    * ``mu`` ``(K, C)`` = ``m_k / ||m_k||`` and ``kappa`` ``(K,)`` = Banerjee's
      ``R (C - R^2) / (1 - R^2)`` with ``R = ||m_k||`` (recomputed after every update);
    * ``num_updates`` ``(K,)``: EMA updates each class received (0 = never observed);
    * ``num_steps`` ``()``: calls to :meth:`update` so far.

    Non-finite features. A NaN or inf feature of class ``k`` during the warm-up would make
    ``ema_mean[k]`` NaN for good (every later EMA step keeps it), and ``mu_k``, ``kappa_k`` would
    silently read 0 — the class would drop out of the loss for the rest of training. :meth:`update`
    therefore raises ``ValueError`` naming the classes and the step instead, and leaves the state
    unchanged (checked after the all-reduce, so every rank raises together).

    Schedule: the first ``warmup_steps`` calls to :meth:`update` move the EMA; after that ``mu`` and
    ``kappa`` are frozen (``frozen_at`` records the update count at the freeze). :meth:`loss` is 0 during the warm-up and :func:`vmf_nll` after it;
    :meth:`forward` does both for one training step (0 during warm-up, like the reference).

    The reference (``global_step <= 10000`` with Lightning's 0-based step) makes 10,001 updates
    and switches the loss on at step 10,001; ``warmup_steps=10001`` reproduces that exactly.

    Bias correction. The EMA starts at 0 and the reference does not correct for it, so after
    ``n`` updates of a constant class mean ``m`` it holds ``(1 - a^n) m``: with ``a = 0.9999`` and
    ``n = 10,000`` that is ``0.632 m``, so ``R`` and hence ``kappa`` are underestimated (for a true
    ``R = 0.9`` in ``C = 64``: ``kappa = 53.6`` instead of ``299.3``). ``bias_correction=True``
    divides by ``1 - a^(n_k)`` (per class, with ``n_k`` its own update count, as Adam does) before
    computing ``mu`` and ``kappa``. The default ``False`` reproduces the reference; ``mu`` is the
    same either way.

    Freeze guard (not in the reference). ``L_kl`` has no repulsive term: if ``mu`` freezes while
    the class directions are nearly collinear (a barely trained network), it pulls every class
    towards nearly one direction and collapses the features. With ``freeze_max_cosine`` set, the
    freeze waits, after ``warmup_steps``, until the mean pairwise cosine of the observed class
    directions (:meth:`direction_stats`) is at most that value; until then the EMA keeps updating
    and the loss stays 0. ``None`` (default) freezes on schedule, as the reference.

    Unobserved classes (``num_updates == 0``) have ``mu = 0``, ``kappa = 0`` and are left out of the
    loss (the reference gets a NaN ``mu`` and a NaN loss for them).

    Distributed: with ``process_group`` set, the per-class sums and counts of each batch are
    all-reduced over the group before the EMA update, so the EMA follows the class means of the
    global batch and every rank holds bit-identical ``mu`` and ``kappa``. (The reference instead
    all-reduces the per-rank EMAs and divides by the world size; that weights ranks equally and
    lets a rank where a class is absent pull the average back. Single-process results are the
    same.)

    Args:
        num_classes: ``K`` (17 for SEEM labels, 14 for Grounded-SAM labels in the reference).
        dim: feature size ``C`` (64).
        decay: EMA factor ``a`` in ``(0, 1)`` (0.9999; the reference's ``decay = 1e-4`` is
            ``1 - a``).
        warmup_steps: number of EMA updates before freezing (10,000).
        bias_correction: divide the EMA by ``1 - a^n`` (default False, as the reference).
        freeze_max_cosine: the freeze guard's threshold in ``(-1, 1]``, or ``None`` (no guard).
        process_group: a ``torch.distributed`` process group (e.g. ``dist.group.WORLD``) to
            all-reduce over, or ``None`` for no communication.
        ignore_index: label that is neither counted nor penalised (``None``: every label is a
            class, as the reference).
        state_dtype: dtype of the buffers (float64: the 1e-4 EMA increments stay exact). Note that
            ``module.half()`` casts floating buffers as for any module; cast the network instead.
    """

    ema_mean: Tensor
    mu: Tensor
    kappa: Tensor
    num_updates: Tensor
    num_steps: Tensor
    frozen_at: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        decay: float = 0.9999,
        warmup_steps: int = 10_000,
        bias_correction: bool = False,
        freeze_max_cosine: float | None = None,
        process_group: ProcessGroup | None = None,
        ignore_index: int | None = None,
        state_dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2, got {dim!r}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if freeze_max_cosine is not None and (
            isinstance(freeze_max_cosine, bool)
            or not isinstance(freeze_max_cosine, (int, float))
            or not -1.0 < freeze_max_cosine <= 1.0
        ):
            raise ValueError(
                f"freeze_max_cosine must be None or a float in (-1, 1], got {freeze_max_cosine!r}"
            )
        if not state_dtype.is_floating_point:
            raise TypeError(f"state_dtype must be a floating dtype, got {state_dtype}")
        self.num_classes = num_classes
        self.dim = dim
        self.decay = float(decay)
        self.warmup_steps = warmup_steps
        self.bias_correction = bool(bias_correction)
        self.freeze_max_cosine = None if freeze_max_cosine is None else float(freeze_max_cosine)
        self.process_group = process_group
        self.ignore_index = check_optional_int("ignore_index", ignore_index)
        self.register_buffer("ema_mean", torch.zeros(num_classes, dim, dtype=state_dtype))
        self.register_buffer("mu", torch.zeros(num_classes, dim, dtype=state_dtype))
        self.register_buffer("kappa", torch.zeros(num_classes, dtype=state_dtype))
        self.register_buffer("num_updates", torch.zeros(num_classes, dtype=torch.int64))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        # update count at the freeze; -1 while warming up (a zero warm-up is frozen from the start)
        self.register_buffer("frozen_at", torch.tensor(0 if warmup_steps == 0 else -1))
        self._log_c: Tensor | None = None
        self._log_c_key: tuple[object, ...] | None = None

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, decay={self.decay}, "
            f"warmup_steps={self.warmup_steps}, bias_correction={self.bias_correction}, "
            f"freeze_max_cosine={self.freeze_max_cosine}, "
            f"ignore_index={self.ignore_index}, distributed={self.process_group is not None}"
        )

    @property
    def observed(self) -> Tensor:
        """``(K,)`` bool: classes that received at least one EMA update."""
        return self.num_updates > 0

    @property
    def frozen(self) -> bool:
        """True once the prior has frozen (the loss is then active): after ``warmup_steps``
        updates, and with the guard on, once the class directions have separated."""
        return int(self.frozen_at.item()) >= 0

    def direction_stats(self) -> dict[str, float]:
        """Health of the class directions: mean and max pairwise cosine of the observed ``mu``
        (``mu_cos_mean``, ``mu_cos_max``; NaN below two classes), the ``kappa`` range over the
        observed classes (``kappa_min``, ``kappa_max``; NaN if none) and ``observed`` classes."""
        from olivine_losses.health import direction_cosines

        seen = self.observed
        mean, top = direction_cosines(self.mu, seen)
        kappa = self.kappa[seen]
        empty = kappa.numel() == 0
        return {
            "mu_cos_mean": mean,
            "mu_cos_max": top,
            "kappa_min": float("nan") if empty else float(kappa.min()),
            "kappa_max": float("nan") if empty else float(kappa.max()),
            "observed": float(seen.sum()),
        }

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # checkpoints of olivine-losses 0.1 have no frozen_at: they froze on schedule
        if prefix + "num_steps" in state_dict and prefix + "frozen_at" not in state_dict:
            done = int(state_dict[prefix + "num_steps"]) >= self.warmup_steps
            state_dict[prefix + "frozen_at"] = torch.tensor(self.warmup_steps if done else -1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check(self, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        # N = 0 is allowed: under a process group every rank must take part in each all-reduce
        zt = check_features("z", z, allow_empty=True)
        if zt.shape[1] != self.dim:
            raise ValueError(f"z must have shape (N, dim={self.dim}), got {tuple(zt.shape)}")
        lab = check_labels("labels", labels, zt.shape[0], "N")
        return zt, lab.to(device=zt.device, dtype=torch.int64)

    @torch.no_grad()
    def update(self, z: Tensor, labels: Tensor) -> bool:
        """One warm-up step: fold the batch class means of ``z`` (detached) into the EMA.

        Counts the call in ``num_steps``; once frozen, nothing else changes. With a
        ``process_group``, every rank must call it at every step (it runs one all-reduce).

        Returns:
            True if the EMA was updated (i.e. the prior was still warming up).

        Raises:
            ValueError: if the features of a class in this batch (of any rank) hold NaN or inf;
                nothing is updated then.
        """
        zt, lab = self._check(z, labels)
        if self.frozen:
            self.num_steps += 1
            return False
        state = self.ema_mean
        include = (
            torch.ones_like(lab, dtype=torch.bool)
            if self.ignore_index is None
            else lab != self.ignore_index
        )
        _check_label_range(lab, include, self.num_classes)
        feats = zt.detach()
        if self.ignore_index is not None:
            keep = include.nonzero().squeeze(1)
            feats, lab = feats[keep], lab[keep]
        # sum in the features' compute dtype (no (N, C) float64 copy), then widen the (K, C) sums
        cdt = compute_dtype(feats.dtype)
        sums = torch.zeros(self.num_classes, self.dim, dtype=cdt, device=feats.device)
        sums = sums.index_add(0, lab, feats.to(cdt)).to(device=state.device, dtype=state.dtype)
        counts = torch.bincount(lab, minlength=self.num_classes)
        counts = counts.to(device=state.device, dtype=state.dtype)
        if self.process_group is not None:
            import torch.distributed as dist

            packed = torch.cat([sums.reshape(-1), counts])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=self.process_group)
            sums = packed[: sums.numel()].reshape(sums.shape)
            counts = packed[sums.numel() :]
        present = counts > 0
        nonfinite = present & ~torch.isfinite(sums).all(dim=1)
        if bool(nonfinite.any()):
            classes = nonfinite.nonzero().squeeze(1).tolist()
            raise ValueError(
                f"VMFClassPrior.update at step {int(self.num_steps.item())} (warm-up update "
                f"{int(self.num_steps.item()) + 1} of {self.warmup_steps}): the features of "
                f"class(es) {classes} contain NaN or inf; refusing to fold them into the EMA "
                "(it would stay NaN and silently disable those classes). The state is unchanged; "
                "find where the network output becomes non-finite (e.g. a diverged learning rate)."
            )
        batch_mean = sums / counts.clamp(min=1.0)[:, None]
        updated = self.decay * state + (1.0 - self.decay) * batch_mean
        self.ema_mean.copy_(torch.where(present[:, None], updated, state))
        self.num_updates += present.to(self.num_updates.dtype)
        self.num_steps += 1
        self._refresh()
        if int(self.num_steps.item()) >= self.warmup_steps and self._may_freeze():
            self.frozen_at.fill_(self.num_steps.item())
        return True

    def _may_freeze(self) -> bool:
        """The freeze guard: no threshold, or the class directions are separated enough."""
        if self.freeze_max_cosine is None:
            return True
        mean = self.direction_stats()["mu_cos_mean"]
        return mean == mean and mean <= self.freeze_max_cosine  # NaN (< 2 classes): keep waiting

    def _corrected_mean(self) -> Tensor:
        mean = self.ema_mean
        if self.bias_correction:
            n = self.num_updates.to(mean.dtype)
            correction = 1.0 - torch.pow(torch.full_like(n, self.decay), n)
            mean = mean / torch.where(n > 0, correction, torch.ones_like(correction))[:, None]
        return mean

    @torch.no_grad()
    def _refresh(self) -> None:
        mean = self._corrected_mean()
        r = torch.linalg.vector_norm(mean, dim=1)
        ok = self.observed & (r > 0)
        self.mu.copy_(torch.where(ok[:, None], mean / r.clamp(min=1e-300)[:, None], 0.0))
        self.kappa.copy_(torch.where(ok, banerjee_kappa(r, self.dim), 0.0))

    def mean_resultant_length(self) -> Tensor:
        """``(K,)`` the ``R = ||m_k||`` behind ``kappa`` (bias-corrected when enabled)."""
        r: Tensor = torch.linalg.vector_norm(self._corrected_mean(), dim=1)
        return r

    def loss(self, z: Tensor, labels: Tensor) -> Tensor:
        """0 during the warm-up; afterwards :func:`vmf_nll` under the frozen ``mu``, ``kappa``.

        Classes never observed during the warm-up are left out (never NaN).
        """
        zt, lab = self._check(z, labels)
        if not self.frozen:
            return graph_zero(zt).to(compute_dtype(zt.dtype))
        return vmf_nll(
            zt,
            lab,
            self.mu,
            self.kappa,
            ignore_index=self.ignore_index,
            valid_classes=self.observed,
            log_normalizer=self.log_normalizer(),
        )

    def log_normalizer(self) -> Tensor:
        """``(K,)`` ``log C_C(kappa_k)``, cached until ``kappa`` changes (in place or on load)."""
        key = (self.kappa.data_ptr(), self.kappa._version, self.kappa.device, self.kappa.dtype)
        if self._log_c_key != key or self._log_c is None:
            self._log_c = vmf_log_normalizer(self.dim, self.kappa.detach())
            self._log_c_key = key
        return self._log_c

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        """One training step: the loss under the state *before* this step, then :meth:`update`.

        Returns 0 for the first ``warmup_steps`` calls (which update the EMA) and the vMF NLL
        afterwards (the state no longer changes), in the dtype of ``z`` (float32 for half and
        bfloat16 ``z``, as :func:`vmf_nll`).
        """
        active = self.frozen
        zt = self._check(z, labels)[0]
        out = self.loss(z, labels) if active else graph_zero(zt)
        self.update(z, labels)
        return out.to(compute_dtype(zt.dtype))
