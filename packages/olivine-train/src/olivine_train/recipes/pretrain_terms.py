"""The pretraining loss terms: each draws its pairs, calls an ``olivine_losses`` module and
reports its chance level; :data:`TERMS` lists them in the order they draw their pairs.

==============  =========================================================================  ======
name            what (OLIVINE paper, Sec. 3; reference: github.com/Eaphan/OLIVINE)          heads
==============  =========================================================================  ======
``ppnce``       InfoNCE, 3D anchors vs 2D candidates, ``num_pairs`` uniform pairs (PPKT)   pp
``sup``         semantic contrastive loss on ``num_pairs`` DCAS (or uniform) pairs         sem 3D+2D
``vmf``         vMF class prior on the 3D sem features of *all* pairs                      sem 3D
``superpixel``  SLidR-style superpixel-pooled InfoNCE (a superpixel = the pairs of one     pp
                image sharing a VFM label, or a connected component of it)
==============  =========================================================================  ======

A term's weight is ``loss.<name>_weight``; the recipe builds only the terms (and heads) whose
weight is > 0 and sums them with :class:`olivine_losses.WeightedSum` under these names. Adding a
term from outside the toolkit: subclass :class:`LossTerm` and decorate it with
:func:`olivine_train.register_term` (``docs/architecture.md``, "Adding a loss term"), which adds it
to :data:`TERMS` with its ``loss.<name>_weight``; :mod:`.pretrain_termset` derives the rest.

A step has two phases: every term first draws the pairs it reads (:meth:`LossTerm.draw`, before the
forward pass, in :data:`TERMS` order from the step's generator); the network then evaluates each
2D head only at the pixels of those pairs (:func:`plan_pixels`), and each term computes its loss
from the features of its own pairs (:meth:`LossTerm.__call__`).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from olivine_data.sampling import dcas_sample, uniform_pairs
from olivine_data.types import PretrainSample
from olivine_losses import (
    InfoNCELoss,
    SemanticContrastiveLoss,
    SuperpixelInfoNCELoss,
    VMFClassPrior,
    info_nce_chance,
    semantic_contrastive_chance,
    superpixel_chance,
)
from olivine_train.config import Config
from olivine_train.health import HealthMonitor
from olivine_train.recipes.common import SampleSource, check_finite
from olivine_train.recipes.pretrain_outputs import Head, PretrainOutputs
from olivine_train.superpixels import ComponentSuperpixels, SamSuperpixels

__all__ = [
    "BUILTIN_TERMS",
    "TERMS",
    "LossTerm",
    "PairBatch",
    "PixelPlan",
    "TermContext",
    "TermResult",
    "pixel_features",
    "plan_pixels",
    "vmf_schedule",
]


def pixel_features(maps: Tensor, pixels: Tensor) -> Tensor:
    """Gather (P, D) features from (B, D, H, W) maps at ``pixels`` (P, 3) = [image, row, col]."""
    return maps[pixels[:, 0], :, pixels[:, 1], pixels[:, 2]]


@dataclass
class PairBatch:
    """What every term sees at one step: the batch's pairs and (after the forward pass) the
    network outputs.
    """

    pair_voxels: Tensor
    pair_pixels: Tensor
    labels: Tensor | None
    range_bins: Tensor
    m: int  # pairs drawn per term: min(loss.num_pairs, number of pairs)
    generator: torch.Generator
    step: int  # the step being computed (1-based), for error messages
    run_dir: Path
    # the network's outputs (2D heads: full maps or rows at the pixels of a PixelPlan);
    # None while the terms draw their pairs, set after the forward pass
    out: PretrainOutputs | None = None

    @property
    def num_pairs(self) -> int:
        return int(self.pair_voxels.shape[0])

    @property
    def outputs(self) -> PretrainOutputs:
        """The network's outputs (only after the forward pass: :meth:`LossTerm.__call__`)."""
        if self.out is None:
            raise ValueError(
                f"step {self.step}: the network outputs are read before the forward pass "
                "(a term's draw() must use the pairs only)"
            )
        return self.out


@dataclass
class TermResult:
    """One term's loss, chance level, drawn pairs and the features it used."""

    loss: Tensor
    chance: float | None = None  # value on equal logits (olivine_losses.health)
    indices: Tensor | None = None  # the pairs drawn
    # the features it used, by health name (point_pp, image_pp, point_sem, image_sem)
    features: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class PixelPlan:
    """Which pixels each 2D head is evaluated at this step, and where each term's rows are.

    ``pixels[head]`` (a 2D head, ``Head.PP`` or ``Head.SEM_2D``): ``(P, 3)``
    ``[image, row, col]`` of the pairs that the terms reading that head drew, concatenated in
    term order; ``rows[name]``: the slice of those rows that are the term's own pairs (in the
    order it drew them).
    """

    pixels: dict[Head, Tensor]
    rows: dict[str, slice]


def plan_pixels(
    terms: Mapping[str, LossTerm], draws: dict[str, Tensor | None], pair_pixels: Tensor
) -> PixelPlan:
    """The :class:`PixelPlan` of a step from the terms' draws (``None`` = all pairs)."""
    parts: dict[Head, list[Tensor]] = {}
    rows: dict[str, slice] = {}
    for name, term in terms.items():
        head = term.image_head
        if head is None:
            continue
        idx = draws[name]
        px = pair_pixels if idx is None else pair_pixels[idx]
        start = sum(int(t.shape[0]) for t in parts.get(head, []))
        parts.setdefault(head, []).append(px)
        rows[name] = slice(start, start + int(px.shape[0]))
    pixels = {h: (ts[0] if len(ts) == 1 else torch.cat(ts)) for h, ts in parts.items()}
    return PixelPlan(pixels, rows)


@dataclass(frozen=True)
class TermContext:
    """What every term is built with, once per run (:class:`.pretrain_termset.TermSet`)."""

    cfg: Config
    ignore_index: int | None  # the vocabulary's unlabelled id when loss.ignore_unlabelled
    class_names: tuple[str, ...]  # of the VFM vocabulary
    prior: VMFClassPrior  # the run's vMF prior (always built: checkpoints hold it)


class LossTerm(abc.ABC):
    """A pretraining loss term (public base class: subclass it and register the subclass with
    :func:`olivine_train.register_term`). Class attributes say what it needs;
    :class:`.pretrain_termset.TermSet` derives the heads to build, whether labels are read and
    the DDP flag from them.
    """

    heads: ClassVar[tuple[Head, ...]] = ()  # the heads it trains
    # heads it trains at some steps only (no gradient at the others, e.g. the vMF prior while it
    # warms up): a head only such terms train makes DDP look for unused parameters
    intermittent_heads: ClassVar[tuple[Head, ...]] = ()
    needs_labels: ClassVar[bool] = False  # reads the VFM labels (pairs.labels)
    # the 2D head whose features __call__ gets as q (Head.PP -> q_pp, Head.SEM_2D -> q_sem)
    image_head: ClassVar[Head | None] = None

    def __init__(self, ctx: TermContext) -> None:  # noqa: B027
        """Built once per run by :class:`.pretrain_termset.TermSet`."""

    @classmethod
    def wrap_dataset(
        cls, cfg: Config, base: SampleSource[PretrainSample]
    ) -> SampleSource[PretrainSample]:
        """The raw pretraining dataset as the term needs it (before augmentation); default:
        unchanged.
        """
        return base

    def draw(self, p: PairBatch) -> Tensor | None:
        """The pairs the term reads this step (indices into the batch's pairs); ``None``: all.

        Called before the forward pass (``p.out`` is None), in :data:`TERMS` order.
        """
        return None

    @abc.abstractmethod
    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        """The term on the pairs it drew: ``idx`` from :meth:`draw` and ``q``, the features of
        its 2D head at those pairs' pixels (``None`` when it reads no 2D head).
        """

    def scalars(self) -> dict[str, float]:
        """Extra scalars to log after the step (beside ``loss/<name>``)."""
        return {}

    def observe_health(self, monitor: HealthMonitor, step: int) -> dict[str, float]:
        """Record the term's own health measures of the step just made; scalars to log."""
        return {}

    def describe(self) -> str | None:
        """The term's part of the start-of-run line, if any."""
        return None


def _drawn(idx: Tensor | None, name: str) -> Tensor:
    if idx is None:
        raise ValueError(f"loss term {name!r}: called without the pair indices it drew")
    return idx


def _image(q: Tensor | None, name: str) -> Tensor:
    if q is None:
        raise ValueError(f"loss term {name!r}: no 2D head features were computed for its pairs")
    return q


class PPNCETerm(LossTerm):
    heads = (Head.PP,)
    image_head = Head.PP

    def __init__(self, ctx: TermContext) -> None:
        self.loss = InfoNCELoss(temperature=ctx.cfg.loss.temperature)

    def draw(self, p: PairBatch) -> Tensor:
        return uniform_pairs(p.num_pairs, p.m, p.generator).to(p.pair_voxels.device)

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        idx = _drawn(idx, "ppnce")
        k = p.outputs.point(Head.PP)[p.pair_voxels[idx]]
        q = _image(q, "ppnce")
        return TermResult(
            self.loss(k, q), info_nce_chance(p.m), idx, {"point_pp": k, "image_pp": q}
        )


class SupTerm(LossTerm):
    heads = (Head.SEM_3D, Head.SEM_2D)
    needs_labels = True
    image_head = Head.SEM_2D

    def __init__(self, ctx: TermContext) -> None:
        self.sampling = ctx.cfg.loss.sup_sampling
        self.ignore_index = ctx.ignore_index
        self.loss = SemanticContrastiveLoss(
            temperature=ctx.cfg.loss.temperature, ignore_index=ctx.ignore_index
        )

    def draw(self, p: PairBatch) -> Tensor:
        labels = _labels(p, "loss.sup_weight")
        if self.sampling == "dcas":
            idx = dcas_sample(p.range_bins, labels, p.m, p.generator)
        else:
            idx = uniform_pairs(p.num_pairs, p.m, p.generator)
        return idx.to(p.pair_voxels.device)

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        idx = _drawn(idx, "sup")
        labels = _labels(p, "loss.sup_weight")
        k = p.outputs.point(Head.SEM_3D)[p.pair_voxels[idx]]
        q = _image(q, "sup")
        chance = semantic_contrastive_chance(labels[idx], ignore_index=self.ignore_index)
        return TermResult(
            self.loss(k, q, labels[idx]), chance, idx, {"point_sem": k, "image_sem": q}
        )


class VMFTerm(LossTerm):
    heads = (Head.SEM_3D,)
    intermittent_heads = (Head.SEM_3D,)  # no gradient while the prior warms up
    needs_labels = True

    def __init__(self, ctx: TermContext) -> None:
        self.prior = ctx.prior
        self.class_names = ctx.class_names
        self.was_frozen = True  # the prior's state before this step's update

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        self.was_frozen = self.prior.frozen
        labels = _labels(p, "loss.vmf_weight")
        z = p.outputs.point(Head.SEM_3D)[p.pair_voxels]
        # non-finite features stop the run like a non-finite loss, before the prior sees them
        check_finite(p.step, {"vmf features": z}, p.run_dir)
        return TermResult(self.prior(z, labels).to(z.dtype), features={"point_sem": z})

    def scalars(self) -> dict[str, float]:
        out = {"vmf/active": float(self.prior.frozen)}
        for c, kappa in enumerate(self.prior.kappa.tolist()):
            out[f"vmf/kappa/{self.class_names[c]}"] = kappa
        return out

    def observe_health(self, monitor: HealthMonitor, step: int) -> dict[str, float]:
        """The prior's direction statistics after each of its updates."""
        if self.was_frozen:
            return {}
        return monitor.observe_vmf(
            step,
            self.prior.direction_stats(),
            frozen_now=self.prior.frozen,
            warmup_end=int(self.prior.warmup_steps),
        )

    def describe(self) -> str:
        return f"vMF warm-up {self.prior.warmup_steps} steps, EMA {self.prior.decay:g}"


class SuperpixelTerm(LossTerm):
    heads = (Head.PP,)
    needs_labels = True
    image_head = Head.PP  # at all pairs (draw() returns None)

    def __init__(self, ctx: TermContext) -> None:
        self.loss = SuperpixelInfoNCELoss(temperature=ctx.cfg.loss.temperature)

    @classmethod
    def wrap_dataset(
        cls, cfg: Config, base: SampleSource[PretrainSample]
    ) -> SampleSource[PretrainSample]:
        """``loss.superpixel_source``: component or SAM superpixel ids as the pairs' labels."""
        if cfg.loss.superpixel_source == "vfm_components":
            return ComponentSuperpixels(base)
        if cfg.loss.superpixel_source == "sam":
            return SamSuperpixels(base)
        return base

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        labels = _labels(p, "loss.superpixel_weight")
        # superpixel = (image, VFM class), (image, connected component) or (image, SAM segment):
        # see superpixels.py; negative ids (pixels no SAM mask covers) stay negative = ignored
        seg = p.pair_pixels[:, 0] * (int(labels.max()) + 1) + labels
        seg = torch.where(labels >= 0, seg, torch.full_like(seg, -1))
        k = p.outputs.point(Head.PP)[p.pair_voxels]
        q = _image(q, "superpixel")
        return TermResult(self.loss(k, q, seg, seg), superpixel_chance(seg, seg))


def _labels(p: PairBatch, weight: str) -> Tensor:
    if p.labels is None:
        raise ValueError(
            f"{weight} needs VFM labels (pair_labels is None): run `olivine-train make-labels` "
            "or set data.label_root"
        )
    return p.labels


#: the built-in terms, whose weights are fields of ``LossConfig``
BUILTIN_TERMS: dict[str, type[LossTerm]] = {
    "ppnce": PPNCETerm,
    "sup": SupTerm,
    "vmf": VMFTerm,
    "superpixel": SuperpixelTerm,
}
#: every term by name, in the order they draw their pairs: the built-in ones, then those
#: registered with :func:`olivine_train.register_term` (``recipes/term_registry.py``)
TERMS: dict[str, type[LossTerm]] = dict(BUILTIN_TERMS)

_Term = LossTerm  # the base class's former private name (kept for code written against it)


def vmf_schedule(cfg: Config, total_steps: int) -> tuple[int, float]:
    """The vMF prior's (warm-up updates, EMA factor) for a run of ``total_steps`` steps.

    ``loss.vmf_warmup_fraction`` (short runs; then ``loss.vmf_warmup_steps`` is null) is that
    fraction of the run; ``loss.vmf_decay: null`` ties the EMA factor to the warm-up as the
    reference does (``1 - 1/warmup``: 0.9999 for 10,000 steps), at least 0.5.
    """
    lo = cfg.loss
    if lo.vmf_warmup_fraction is not None:
        warmup = max(1, round(lo.vmf_warmup_fraction * total_steps))
    elif lo.vmf_warmup_steps is not None:
        warmup = lo.vmf_warmup_steps
    else:
        raise ValueError("loss.vmf_warmup_steps / loss.vmf_warmup_fraction: set exactly one")
    decay = lo.vmf_decay if lo.vmf_decay is not None else 1.0 - 1.0 / max(warmup, 2)
    return warmup, decay
