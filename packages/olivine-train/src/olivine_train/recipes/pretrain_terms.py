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
term: a class here, an entry in :data:`TERMS` and its ``<name>_weight`` in the config schema.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from olivine_train.config import Config
from olivine_train.recipes.common import check_finite

__all__ = ["TERMS", "PairBatch", "TermResult", "build_terms", "pixel_features"]


def pixel_features(maps: Tensor, pixels: Tensor) -> Tensor:
    """Gather (P, D) features from (B, D, H, W) maps at ``pixels`` (P, 3) = [image, row, col]."""
    return maps[pixels[:, 0], :, pixels[:, 1], pixels[:, 2]]


@dataclass
class PairBatch:
    """What every term sees at one step: the network outputs and the batch's pairs."""

    out: dict[str, Tensor]  # backbone, k_pp, q_pp, k_sem, q_sem (those that exist)
    pair_voxels: Tensor
    pair_pixels: Tensor
    labels: Tensor | None
    range_bins: Tensor
    m: int  # pairs drawn per term: min(loss.num_pairs, number of pairs)
    generator: torch.Generator
    step: int  # the step being computed (1-based), for error messages
    run_dir: Path

    @property
    def num_pairs(self) -> int:
        return int(self.pair_voxels.shape[0])


@dataclass
class TermResult:
    """One term's loss, chance level, drawn pairs and the features it used."""

    loss: Tensor
    chance: float | None = None  # value on equal logits (olivine_losses.health)
    indices: Tensor | None = None  # the pairs drawn
    # the features it used, by health name (point_pp, image_pp, point_sem, image_sem)
    features: dict[str, Tensor] = field(default_factory=dict)


class _Term(abc.ABC):
    heads: tuple[str, ...] = ()  # "pp", "sem_3d", "sem_2d"
    needs_labels = False

    def __init__(self, cfg: Config, prior: Any, ignore_index: int | None) -> None:  # noqa: B027
        """Built once per run from the config (``prior``: the run's vMF prior); the signature
        every term is constructed with by :func:`build_terms`.
        """

    @abc.abstractmethod
    def __call__(self, p: PairBatch) -> TermResult:
        """The term on this step's pairs."""


class PPNCETerm(_Term):
    heads = ("pp",)

    def __init__(self, cfg: Config, prior: Any, ignore_index: int | None) -> None:
        from olivine_losses import InfoNCELoss

        self.loss = InfoNCELoss(temperature=cfg.loss.temperature)

    def __call__(self, p: PairBatch) -> TermResult:
        from olivine_data.sampling import uniform_pairs
        from olivine_losses import info_nce_chance

        idx = uniform_pairs(p.num_pairs, p.m, p.generator).to(p.pair_voxels.device)
        k = p.out["k_pp"][p.pair_voxels[idx]]
        q = pixel_features(p.out["q_pp"], p.pair_pixels[idx])
        return TermResult(
            self.loss(k, q), info_nce_chance(p.m), idx, {"point_pp": k, "image_pp": q}
        )


class SupTerm(_Term):
    heads = ("sem_3d", "sem_2d")
    needs_labels = True

    def __init__(self, cfg: Config, prior: Any, ignore_index: int | None) -> None:
        from olivine_losses import SemanticContrastiveLoss

        self.sampling = cfg.loss.sup_sampling
        self.ignore_index = ignore_index
        self.loss = SemanticContrastiveLoss(
            temperature=cfg.loss.temperature, ignore_index=ignore_index
        )

    def __call__(self, p: PairBatch) -> TermResult:
        from olivine_data.sampling import dcas_sample, uniform_pairs
        from olivine_losses import semantic_contrastive_chance

        labels = _labels(p, "loss.sup_weight")
        if self.sampling == "dcas":
            idx = dcas_sample(p.range_bins, labels, p.m, p.generator)
        else:
            idx = uniform_pairs(p.num_pairs, p.m, p.generator)
        idx = idx.to(p.pair_voxels.device)
        k = p.out["k_sem"][p.pair_voxels[idx]]
        q = pixel_features(p.out["q_sem"], p.pair_pixels[idx])
        chance = semantic_contrastive_chance(labels[idx], ignore_index=self.ignore_index)
        return TermResult(
            self.loss(k, q, labels[idx]), chance, idx, {"point_sem": k, "image_sem": q}
        )


class VMFTerm(_Term):
    heads = ("sem_3d",)
    needs_labels = True

    def __init__(self, cfg: Config, prior: Any, ignore_index: int | None) -> None:
        self.prior = prior

    def __call__(self, p: PairBatch) -> TermResult:
        labels = _labels(p, "loss.vmf_weight")
        z = p.out["k_sem"][p.pair_voxels]
        # non-finite features stop the run like a non-finite loss, before the prior sees them
        check_finite(p.step, {"vmf features": z}, p.run_dir)
        return TermResult(self.prior(z, labels).to(z.dtype), features={"point_sem": z})


class SuperpixelTerm(_Term):
    heads = ("pp",)
    needs_labels = True

    def __init__(self, cfg: Config, prior: Any, ignore_index: int | None) -> None:
        from olivine_losses import SuperpixelInfoNCELoss

        self.loss = SuperpixelInfoNCELoss(temperature=cfg.loss.temperature)

    def __call__(self, p: PairBatch) -> TermResult:
        from olivine_losses import superpixel_chance

        labels = _labels(p, "loss.superpixel_weight")
        # superpixel = (image, VFM class) or (image, connected component): see superpixels.py
        seg = p.pair_pixels[:, 0] * (int(labels.max()) + 1) + labels
        k = p.out["k_pp"][p.pair_voxels]
        q = pixel_features(p.out["q_pp"], p.pair_pixels)
        return TermResult(self.loss(k, q, seg, seg), superpixel_chance(seg, seg))


def _labels(p: PairBatch, weight: str) -> Tensor:
    if p.labels is None:
        raise ValueError(
            f"{weight} needs VFM labels (pair_labels is None): run `olivine-train make-labels` "
            "or set data.label_root"
        )
    return p.labels


TERMS: dict[str, type[_Term]] = {
    "ppnce": PPNCETerm,
    "sup": SupTerm,
    "vmf": VMFTerm,
    "superpixel": SuperpixelTerm,
}


def term_weights(cfg: Config) -> dict[str, float]:
    """``{name: loss.<name>_weight}`` of the active terms (weight > 0), in :data:`TERMS` order."""
    weights = {name: float(getattr(cfg.loss, f"{name}_weight")) for name in TERMS}
    return {name: w for name, w in weights.items() if w > 0}


def build_terms(cfg: Config, prior: Any, ignore_index: int | None) -> dict[str, _Term]:
    """The active terms, built once (their loss modules hold the hyperparameters)."""
    return {name: TERMS[name](cfg, prior, ignore_index) for name in term_weights(cfg)}
