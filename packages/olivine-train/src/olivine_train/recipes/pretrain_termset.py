"""What follows from the term registry (:data:`.pretrain_terms.TERMS`) and a config's weights.

:class:`ActiveTerms` (config-level facts, before anything is built): the active terms and their
weights, the heads to build, whether VFM labels are read, DDP's ``find_unused_parameters``.
:class:`TermSet` (one run): the active terms built once with the run's vMF prior and their
:class:`olivine_losses.WeightedSum`, and the hooks the recipe calls for all of them (draws,
logged scalars, health, the start-of-run line, the checkpointed state). The recipe itself
(:mod:`.pretrain`) names no term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from olivine_data.types import PretrainSample
from olivine_losses import VMFClassPrior, WeightedSum
from olivine_train.checkpoint import load_strict
from olivine_train.config import Config, term_weight_fields
from olivine_train.health import HealthMonitor, HealthSummary
from olivine_train.recipes.common import SampleSource
from olivine_train.recipes.pretrain_outputs import Head
from olivine_train.recipes.pretrain_terms import (
    TERMS,
    LossTerm,
    PairBatch,
    TermContext,
    vmf_schedule,
)

__all__ = ["ActiveTerms", "TermSet", "weight_fields"]


def weight_fields() -> dict[str, str]:
    """``{term name: "<name>_weight"}`` of every registered term, in :data:`TERMS` order.

    Raises ``ValueError`` when the registry and :class:`~olivine_train.config.LossConfig`
    disagree: a term without its weight field, or a ``*_weight`` field without a term.
    """
    fields = set(term_weight_fields())
    wanted = {name: f"{name}_weight" for name in TERMS}
    missing = [w for w in wanted.values() if w not in fields]
    orphans = sorted(fields - set(wanted.values()))
    if missing or orphans:
        raise ValueError(
            "the loss-term registry (recipes/pretrain_terms.py TERMS) and LossConfig "
            f"(config/schema.py) disagree: terms without a weight field: {missing}; weight "
            f"fields without a term: {orphans} (register a term with olivine_train.register_term, "
            "which adds both)"
        )
    return wanted


@dataclass(frozen=True)
class ActiveTerms:
    """The terms a config switches on (``loss.<name>_weight > 0``), in :data:`TERMS` order."""

    weights: dict[str, float]

    @classmethod
    def of(cls, cfg: Config) -> ActiveTerms:
        weights = {name: float(cfg.loss.weight(name)) for name in weight_fields()}
        return cls({name: w for name, w in weights.items() if w > 0})

    @property
    def classes(self) -> dict[str, type[LossTerm]]:
        return {name: TERMS[name] for name in self.weights}

    @property
    def heads(self) -> frozenset[Head]:
        """The heads the active terms train (the network builds these only)."""
        return frozenset(h for c in self.classes.values() for h in c.heads)

    @property
    def needs_labels(self) -> bool:
        """Whether an active term reads VFM labels (PPKT's L_PPNCE alone does not)."""
        return any(c.needs_labels for c in self.classes.values())

    @property
    def find_unused_parameters(self) -> bool:
        """DDP's flag: True when some step may leave a built head without gradient, i.e. a
        head that only terms training it intermittently train (the vMF prior without L_sup).
        """
        always = {
            h for c in self.classes.values() for h in c.heads if h not in c.intermittent_heads
        }
        return any(h not in always for h in self.heads)

    def wrap_dataset(
        self, cfg: Config, base: SampleSource[PretrainSample]
    ) -> SampleSource[PretrainSample]:
        """The raw dataset as the active terms need it (:meth:`LossTerm.wrap_dataset`)."""
        for cls in self.classes.values():
            base = cls.wrap_dataset(cfg, base)
        return base


class TermSet:
    """The active terms of one run, built once, with the run's vMF prior and their weighted sum.

    The prior is built whatever the weights (checkpoints always hold its state, so that a run
    may switch the vMF term on at a resume).
    """

    def __init__(
        self,
        cfg: Config,
        active: ActiveTerms,
        *,
        class_names: tuple[str, ...],
        ignore_index: int | None,
        total_steps: int,
        device: torch.device,
        process_group: torch.distributed.ProcessGroup | None,
    ) -> None:
        warmup, decay = vmf_schedule(cfg, total_steps)
        self.prior = VMFClassPrior(
            len(class_names),
            cfg.model.head_dim,
            decay=decay,
            warmup_steps=warmup,
            bias_correction=cfg.loss.vmf_bias_correction,
            freeze_max_cosine=cfg.loss.vmf_freeze_max_cosine,
            process_group=process_group,
            ignore_index=ignore_index,
        ).to(device)
        ctx = TermContext(cfg, ignore_index, class_names, self.prior)
        self.active = active
        self.terms: dict[str, LossTerm] = {n: c(ctx) for n, c in active.classes.items()}
        self.combine = WeightedSum(active.weights)

    def draw(self, pairs: PairBatch) -> dict[str, Tensor | None]:
        """Every term's draw, in :data:`TERMS` order (before the forward pass)."""
        return {name: term.draw(pairs) for name, term in self.terms.items()}

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for term in self.terms.values():
            out.update(term.scalars())
        return out

    def observe_health(self, monitor: HealthMonitor, step: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for term in self.terms.values():
            out.update(term.observe_health(monitor, step))
        return out

    def summarize(self, monitor: HealthMonitor, step: int) -> HealthSummary:
        """The run's health summary (with the prior's when its term is active)."""
        return monitor.summary(step, vmf_active="vmf" in self.terms)

    def describe(self) -> list[str]:
        """The active terms' parts of the start-of-run line."""
        return [d for t in self.terms.values() if (d := t.describe()) is not None]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Tensor]:
        """The terms' state (the prior's buffers), detached on the CPU."""
        return {k: v.detach().cpu() for k, v in self.prior.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor], path: str) -> None:
        load_strict(self.prior, state, f"{path}: vMF prior")

    def export_state(self) -> dict[str, Tensor]:
        """The terms' state for :class:`~.pretrain.PretrainResult` (keys ``vmf.<buffer>``)."""
        return {f"vmf.{k}": v.clone() for k, v in self.state_dict().items()}
