"""Training health of a pretraining run: did the losses leave chance, did the features collapse?

A pretraining run is evidence only when its contrastive terms are below their chance levels and
its features span more than one direction. :class:`HealthMonitor` records, per step,

* each contrastive term's value and its chance level on the same candidates (``health/<term>/
  chance`` and ``health/<term>/margin`` = loss - chance, negative when learning);
* at the ``health.every`` cadence, the effective rank (RankMe) of the backbone features and of
  each head's features on the step's sampled pairs (``health/erank/<features>``);
* for the vMF prior, the mean/max pairwise cosine of the class directions ``mu`` and the kappa
  range (``vmf/mu_cos_mean``, ...) and the same at the freeze;

and :meth:`HealthMonitor.summary` turns them into a verdict with warnings:

* ``at_chance``: a term whose mean over the final ``health.window`` of the run's steps is not
  below ``chance * (1 - health.chance_margin)``;
* ``collapsed``: features whose last effective rank is below ``health.min_effective_rank``;
* ``no_labelled_anchors``: a term whose chance level was 0 at every step of the window (no
  anchor had a positive: every pair unlabelled), said instead of ``at_chance``;
* ``vmf_collinear``: class directions frozen with a mean cosine above ``health.max_mu_cosine``;
* ``vmf_not_frozen``: the warm-up ended but the freeze guard kept the prior warming up (the
  vMF term never acted).

The monitor's history is part of the checkpoint, so a resumed run summarises the whole run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from olivine_train.checkpoint import Payload, atomic_write_text
from olivine_train.config import HealthConfig, Tree

__all__ = ["HealthMonitor", "HealthSummary", "format_summary", "write_summary"]


@dataclass
class HealthSummary:
    """What :meth:`HealthMonitor.summary` returns (also stored as ``health.json``)."""

    steps: int
    terms: dict[str, dict[str, float]] = field(default_factory=dict)
    effective_ranks: dict[str, float] = field(default_factory=dict)
    # warmup_end (steps), at_freeze and last (direction statistics), when the prior was active
    vmf: dict[str, dict[str, float] | int | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.warnings

    def to_dict(self) -> Tree:
        return {
            "steps": self.steps,
            "healthy": self.healthy,
            "terms": self.terms,
            "effective_ranks": self.effective_ranks,
            "vmf": self.vmf,
            "warnings": self.warnings,
            "thresholds": self.thresholds,
        }


class HealthMonitor:
    """Accumulates the per-step health measures of one run (see the module docstring)."""

    def __init__(self, cfg: HealthConfig, total_steps: int | None = None) -> None:
        self.cfg = cfg
        # with the run's length known, only the final window is kept (checkpoints stay small)
        self.keep = None if total_steps is None else max(1, math.ceil(cfg.window * total_steps))
        # term -> list of (step, loss, chance)
        self.margins: dict[str, list[tuple[int, float, float]]] = {}
        # features -> (step, effective rank), last measurement
        self.ranks: dict[str, tuple[int, float]] = {}
        self.vmf_freeze: dict[str, float] | None = None
        self.vmf_last: dict[str, float] | None = None
        self.vmf_warmup_end: int | None = None

    def observe_terms(self, step: int, terms: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Record ``{term: (loss, chance)}``; returns the scalars to log."""
        out: dict[str, float] = {}
        for name, (loss, chance) in terms.items():
            history = self.margins.setdefault(name, [])
            history.append((step, loss, chance))
            if self.keep is not None and len(history) > self.keep:
                del history[: len(history) - self.keep]
            out[f"health/{name}/chance"] = chance
            out[f"health/{name}/margin"] = loss - chance
        return out

    def observe_ranks(self, step: int, ranks: dict[str, float]) -> dict[str, float]:
        """Record effective ranks ``{features: erank}``; returns the scalars to log."""
        for name, value in ranks.items():
            self.ranks[name] = (step, value)
        return {f"health/erank/{k}": v for k, v in ranks.items()}

    def observe_vmf(
        self, step: int, stats: dict[str, float], *, frozen_now: bool, warmup_end: int
    ) -> dict[str, float]:
        """Record the prior's direction statistics after an update (``frozen_now``: this update
        froze it); returns the scalars to log.
        """
        self.vmf_last = dict(stats, step=float(step))
        self.vmf_warmup_end = warmup_end
        if frozen_now:
            self.vmf_freeze = dict(stats, step=float(step))
        return {f"vmf/{k}": v for k, v in stats.items()}

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> Payload:
        return {
            "margins": {k: [list(t) for t in v] for k, v in self.margins.items()},
            "ranks": {k: list(v) for k, v in self.ranks.items()},
            "vmf_freeze": self.vmf_freeze,
            "vmf_last": self.vmf_last,
            "vmf_warmup_end": self.vmf_warmup_end,
        }

    def load_state_dict(self, state: Payload) -> None:
        self.margins = {
            k: [(int(s), float(a), float(b)) for s, a, b in v] for k, v in state["margins"].items()
        }
        self.ranks = {k: (int(s), float(v)) for k, (s, v) in state["ranks"].items()}
        self.vmf_freeze = state["vmf_freeze"]
        self.vmf_last = state["vmf_last"]
        self.vmf_warmup_end = state["vmf_warmup_end"]

    # ------------------------------------------------------------------ verdict
    def summary(self, steps: int, *, vmf_active: bool) -> HealthSummary:
        """The run's verdict: final margins, last effective ranks, vMF freeze, warnings."""
        c = self.cfg
        out = HealthSummary(
            steps=steps,
            thresholds={
                "chance_margin": c.chance_margin,
                "window": c.window,
                "min_effective_rank": c.min_effective_rank,
                "max_mu_cosine": c.max_mu_cosine,
            },
        )
        for name, history in self.margins.items():
            n = self.keep if self.keep is not None else math.ceil(len(history) * c.window)
            n = max(1, min(n, len(history)))
            tail = history[-n:]
            if all(t[2] == 0 for t in tail):  # chance 0: no anchor had a positive at any step
                out.terms[name] = _no_anchors(tail)
                out.warnings.append(
                    f"no_labelled_anchors: {name} had no labelled anchor in any of the last {n} "
                    f"steps (loss {out.terms[name]['loss']:.4f} against a chance level of 0): "
                    "every pair is unlabelled (e.g. loss.ignore_unlabelled=true on data whose VFM "
                    "labels are all unlabelled), so this term did nothing; check the label store"
                )
                continue
            loss = sum(t[1] for t in tail) / n
            chance = sum(t[2] for t in tail) / n
            rel = (chance - loss) / chance if chance > 0 else 0.0
            left = chance > 0 and loss < chance * (1.0 - c.chance_margin)
            out.terms[name] = {
                "loss": loss,
                "chance": chance,
                "margin": loss - chance,
                "relative_margin": rel,
                "left_chance": float(left),
                "window_steps": float(n),
            }
            if not left:
                out.warnings.append(
                    f"at_chance: {name} = {loss:.4f} over the last {n} steps is not below "
                    f"its chance level {chance:.4f} by {100 * c.chance_margin:.0f} % "
                    f"(it is {100 * rel:+.1f} %): this term did not learn (lower optim.lr?)"
                )
        for name, (_, value) in sorted(self.ranks.items()):
            out.effective_ranks[name] = value
            if value < c.min_effective_rank:
                out.warnings.append(
                    f"collapsed: the {name} features have effective rank {value:.2f} < "
                    f"{c.min_effective_rank} (nearly one direction)"
                )
        if vmf_active:
            out.vmf = {
                "warmup_end": self.vmf_warmup_end,
                "at_freeze": self.vmf_freeze,
                "last": self.vmf_last,
            }
            frozen = self.vmf_freeze
            if frozen is not None and frozen["mu_cos_mean"] > c.max_mu_cosine:
                out.warnings.append(
                    f"vmf_collinear: the vMF class directions froze at step {int(frozen['step'])} "
                    f"with mean pairwise cosine {frozen['mu_cos_mean']:.3f} > {c.max_mu_cosine} "
                    "(max {:.3f}): L_kl pulls the classes towards nearly one direction".format(
                        frozen["mu_cos_max"]
                    )
                )
            last_cos = self.vmf_last["mu_cos_mean"] if self.vmf_last is not None else 0.0
            if self.vmf_last is not None and not math.isfinite(last_cos):
                out.warnings.append(
                    "vmf_no_classes: the vMF prior estimated no class direction (no labelled "
                    "pair reached it), so L_kl never acted"
                )
            elif (
                frozen is None
                and self.vmf_warmup_end is not None
                and steps > self.vmf_warmup_end
                and self.vmf_last is not None
            ):
                out.warnings.append(
                    f"vmf_not_frozen: the freeze guard kept the vMF prior warming up for "
                    f"{steps - self.vmf_warmup_end} steps after its warm-up (mean cosine of the "
                    f"class directions {self.vmf_last['mu_cos_mean']:.3f} stayed above "
                    "loss.vmf_freeze_max_cosine), so L_kl never acted"
                )
        return out


def _no_anchors(tail: list[tuple[int, float, float]]) -> dict[str, float]:
    """The summary entry of a term that had no anchor over ``tail`` (chance level 0)."""
    return {
        "loss": sum(t[1] for t in tail) / len(tail),
        "chance": 0.0,
        "margin": 0.0,
        "relative_margin": 0.0,
        "left_chance": 0.0,
        "no_anchors": 1.0,
        "window_steps": float(len(tail)),
    }


def format_summary(summary: HealthSummary) -> str:
    """Human-readable health summary (printed at the end of a run and by the demo)."""
    lines = [f"training health after {summary.steps} steps:"]
    for name, t in summary.terms.items():
        if t.get("no_anchors"):
            lines.append(f"  {name:<12} loss {t['loss']:.4f}  NO LABELLED ANCHORS (chance 0)")
            continue
        verdict = "below chance" if t["left_chance"] else "AT CHANCE"
        lines.append(
            f"  {name:<12} loss {t['loss']:.4f}  chance {t['chance']:.4f}  "
            f"margin {t['margin']:+.4f} ({100 * t['relative_margin']:+.1f} %)  {verdict}"
        )
    if summary.effective_ranks:
        ranks = ", ".join(f"{k} {v:.2f}" for k, v in summary.effective_ranks.items())
        lines.append(f"  effective rank: {ranks}")
    if summary.vmf:
        f = summary.vmf.get("at_freeze")
        last = summary.vmf.get("last")
        if isinstance(last, dict) and not math.isfinite(last.get("mu_cos_mean", 0.0)):
            lines.append("  vMF prior: no class direction estimated (no labelled pair)")
        elif isinstance(f, dict):
            lines.append(
                f"  vMF froze at step {int(f['step'])}: mu cosine mean {f['mu_cos_mean']:.3f} "
                f"max {f['mu_cos_max']:.3f}, kappa {f['kappa_min']:.1f}-{f['kappa_max']:.1f}"
            )
        else:
            lines.append("  vMF prior not frozen (L_kl never acted)")
    if summary.warnings:
        lines.extend(f"  WARNING {w}" for w in summary.warnings)
    else:
        lines.append("  healthy: every active term left chance, no feature collapse")
    return "\n".join(lines)


def write_summary(summary: HealthSummary, path: str | Path) -> Path:
    """Store the summary as JSON (NaN as null), atomically."""
    return atomic_write_text(json.dumps(_finite(summary.to_dict()), indent=2) + "\n", path)


def _finite(obj: object) -> object:
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
