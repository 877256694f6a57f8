"""OLIVINE's semantic-consistency term (the paper's ``L_kl``): a von Mises–Fisher prior per class.

:class:`VMFClassPrior` estimates the class directions ``mu_k`` and concentrations ``kappa_k`` from
an exponential moving average (EMA) of class-mean features during a warm-up, then freezes them and
scores features with :func:`~olivine_losses.vmf_likelihood.vmf_nll` (re-exported here with
:func:`banerjee_kappa`). Reference: ``kl_divergence_stopvmf`` in github.com/Eaphan/OLIVINE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from olivine_losses._checks import (
    check_features,
    check_label_range,
    check_labels,
    check_optional_int,
    compute_dtype,
    graph_zero,
)
from olivine_losses.special import vmf_log_normalizer
from olivine_losses.vmf_likelihood import banerjee_kappa, vmf_nll

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

__all__ = ["vmf_nll", "banerjee_kappa", "VMFClassPrior"]


class VMFClassPrior(nn.Module):
    """Per-class vMF prior of OLIVINE (the paper's ``L_kl``): EMA warm-up, then frozen.

    State (buffers, saved in ``state_dict``): ``ema_mean`` ``(K, C)``, the EMA
    ``m_k <- a m_k + (1 - a) mean_k`` of the batch class means (classes absent from a batch keep
    theirs; starts at 0); ``mu = m_k / ||m_k||`` and ``kappa`` = :func:`banerjee_kappa` of
    ``R = ||m_k||``, refreshed after every update; ``num_updates`` ``(K,)`` (0 = never observed:
    ``mu = kappa = 0``, left out of the loss); ``num_steps``; ``frozen_at`` (update count at the
    freeze, -1 while warming up).

    Schedule: the first ``warmup_steps`` calls to :meth:`update` move the EMA, then ``mu`` and
    ``kappa`` freeze. :meth:`loss` is 0 until the freeze and :func:`vmf_nll` after it;
    :meth:`forward` is loss-then-update for one step. The reference makes 10,001 updates
    (``global_step <= 10000``, 0-based): ``warmup_steps=10001`` reproduces it.

    ``bias_correction=True`` divides each class's EMA by ``1 - a^(n_k)`` (as Adam). The reference
    does not: after 10,000 updates at ``a = 0.9999`` its EMA is ``0.632 m``, so for a true
    ``R = 0.9`` in ``C = 64`` it gets ``kappa = 53.6`` instead of ``299.3`` (``mu`` is the same).

    Freeze guard (not in the reference): with ``freeze_max_cosine`` set, the freeze waits past
    ``warmup_steps`` until the mean pairwise cosine of the observed class directions
    (:meth:`direction_stats`) is at most that value, since freezing nearly collinear directions
    collapses the features (``L_kl`` has no repulsive term).

    Distributed: with ``process_group`` set, each batch's class sums and counts are all-reduced
    before the EMA update, so every rank holds bit-identical ``mu`` and ``kappa`` of the global
    batch (the reference averages the per-rank EMAs instead); every rank must call :meth:`update`
    at every step. NaN/inf features of a class raise ``ValueError`` in :meth:`update` (on every
    rank) and leave the state unchanged. The package README compares all this with the
    reference in detail.

    Args:
        num_classes: ``K`` (17 for SEEM labels, 14 for Grounded-SAM labels in the reference).
        dim: feature size ``C`` (64).
        decay: EMA factor ``a`` in ``(0, 1)`` (0.9999; the reference's ``decay = 1e-4`` is
            ``1 - a``).
        warmup_steps: number of EMA updates before freezing (10,000).
        bias_correction: divide the EMA by ``1 - a^n`` (default False, as the reference).
        freeze_max_cosine: the freeze guard's threshold in ``(-1, 1]``, or ``None`` (no guard).
        process_group: a ``torch.distributed`` process group to all-reduce over, or ``None``.
        ignore_index: label that is neither counted nor penalised (``None``: as the reference).
        state_dtype: dtype of the buffers (float64 keeps the 1e-4 EMA increments exact;
            ``module.half()`` casts them like any buffer: cast the network instead).
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
        updates, and with the guard on, once the class directions have separated.
        """
        return int(self.frozen_at.item()) >= 0

    def direction_stats(self) -> dict[str, float]:
        """Health of the class directions: mean and max pairwise cosine of the observed ``mu``
        (``mu_cos_mean``, ``mu_cos_max``; NaN below two classes), the two classes of that maximum
        (``mu_cos_max_a``, ``mu_cos_max_b``: class indices as floats; -1 below two classes), the
        ``kappa`` range over the observed classes (``kappa_min``, ``kappa_max``; NaN if none) and
        ``observed`` classes.
        """
        from olivine_losses.health import direction_cosines, most_collinear_pair

        seen = self.observed
        mean, top = direction_cosines(self.mu, seen)
        a, b, _ = most_collinear_pair(self.mu, seen)
        kappa = self.kappa[seen]
        empty = kappa.numel() == 0
        return {
            "mu_cos_mean": mean,
            "mu_cos_max": top,
            "mu_cos_max_a": float(a),
            "mu_cos_max_b": float(b),
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
        check_label_range(lab, include, self.num_classes)
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
