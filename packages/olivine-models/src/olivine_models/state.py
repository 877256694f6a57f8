"""Loading state dicts into models: one prefix rule, one report, one message format.

Every loader of the package goes through :func:`load_state`: checkpoint names lose their wrapper
prefixes (``module.``, ``backbone.``, ... stripped repeatedly), entries under ignored prefixes
(classifier heads) are left out on both sides, and each entry is matched to the model by name and
shape. The outcome is a :class:`LoadReport`. ``strict=True`` loads only an exact fit and otherwise
raises ``ValueError("<source>: weights do not fit <target>: 1 missing key(s) (e.g. ...); ...")``;
``strict=False`` loads what matches (:func:`load_matching_state`, the reference
``load_state_with_same_shape`` of github.com/valeoai/SLidR and github.com/Eaphan/OLIVINE). A
model is never modified by a load that raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LoadReport",
    "StateMismatchError",
    "load_state",
    "load_matching_state",
    "strip_prefixes",
]

_SHAPE_MISMATCH = "shape mismatch: "


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_state` matched (and, unless it raised, loaded).

    Attributes:
        loaded: model parameter/buffer names that received a checkpoint tensor.
        skipped: ``(checkpoint name, reason)`` for checkpoint entries that were not loaded
            (``"not in model"``, ``"shape mismatch: checkpoint (..) vs model (..)"``, ``"not a
            tensor (..)"`` or a duplicate after prefix stripping).
        missing: model names that the checkpoint did not provide (they keep their values).
        wrong_shape: the model names among ``missing`` that the checkpoint holds with another
            shape (:meth:`problems` counts them as shape mismatches only).
    """

    loaded: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    missing: tuple[str, ...]
    wrong_shape: tuple[str, ...] = ()

    @property
    def meaningful(self) -> tuple[str, ...]:
        """The loaded names that carry weights: every one except BatchNorm's
        ``num_batches_tracked`` step counters, which any two models with BatchNorm share by
        name and shape (``()``) and which therefore prove nothing about a match.
        """
        return tuple(n for n in self.loaded if not _is_counter(n))

    @property
    def unexpected(self) -> tuple[str, ...]:
        """Checkpoint names that the model does not have."""
        return tuple(n for n, why in self.skipped if why == "not in model")

    @property
    def mismatched(self) -> tuple[str, ...]:
        """Checkpoint names whose shape differs from the model's."""
        return tuple(n for n, why in self.skipped if why.startswith(_SHAPE_MISMATCH))

    @property
    def exact(self) -> bool:
        """True when every model entry is loaded and no checkpoint entry is skipped."""
        return not self.skipped and not self.missing

    def problems(self, max_items: int = 3) -> str:
        """One line naming what keeps the load from being exact, e.g. ``1 missing key(s) (e.g.
        a.bias); 1 shape mismatch(es) (e.g. a.weight: checkpoint (5, 3) vs model (4, 3))``.
        """
        mismatches = [
            f"{n}: {why[len(_SHAPE_MISMATCH) :]}"
            for n, why in sorted(self.skipped)
            if why.startswith(_SHAPE_MISMATCH)
        ]
        others = [
            f"{n}: {why}"
            for n, why in sorted(self.skipped)
            if why != "not in model" and not why.startswith(_SHAPE_MISMATCH)
        ]
        parts = []
        for items, what in (
            (sorted(set(self.missing) - set(self.wrong_shape)), "missing key(s)"),
            (sorted(self.unexpected), "unexpected key(s)"),
            (mismatches, "shape mismatch(es)"),
            (others, "other skipped entr(ies)"),
        ):
            if items:
                parts.append(f"{len(items)} {what} (e.g. {', '.join(items[:max_items])})")
        return "; ".join(parts)

    def summary(self, max_items: int = 10) -> str:
        """Human-readable multi-line summary (the loaders themselves print nothing)."""
        counters = len(self.loaded) - len(self.meaningful)
        total = len(self.loaded) + len(self.missing)
        lines = [
            f"loaded {len(self.loaded)} tensors ({len(self.meaningful)} weights + {counters} "
            f"BatchNorm num_batches_tracked counters) of the model's {total}, skipped "
            f"{len(self.skipped)} ({len(self.unexpected)} unexpected, {len(self.mismatched)} "
            f"shape mismatches), missing {len(self.missing)}"
        ]
        for name, reason in self.skipped[:max_items]:
            lines.append(f"  skipped {name}: {reason}")
        if len(self.skipped) > max_items:
            lines.append(f"  ... {len(self.skipped) - max_items} more skipped")
        for name in self.missing[:max_items]:
            lines.append(f"  missing in checkpoint: {name}")
        if len(self.missing) > max_items:
            lines.append(f"  ... {len(self.missing) - max_items} more missing")
        return "\n".join(lines)


class StateMismatchError(ValueError):
    """A strict :func:`load_state` found no exact fit; ``report`` tells what differs."""

    def __init__(self, message: str, report: LoadReport) -> None:
        super().__init__(message)
        self.report = report


def _is_counter(name: str) -> bool:
    return name == "num_batches_tracked" or name.endswith(".num_batches_tracked")


def strip_prefixes(name: str, prefixes: Sequence[str]) -> str:
    """``name`` without the given prefixes, stripped repeatedly (``module.backbone.x`` -> ``x``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if prefix and name.startswith(prefix):
                name = name[len(prefix) :]
                changed = True
    return name


def load_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
    strip: Sequence[str] = (),
    ignore: Sequence[str] = (),
    require_match: bool = True,
    source: str = "state_dict",
    target: str | None = None,
) -> LoadReport:
    """Match ``state_dict`` to ``model`` by (prefix-stripped) name and shape, then load it.

    Args:
        model: the module to fill in place.
        state_dict: checkpoint tensors, e.g. ``torch.load(path)["state_dict"]``.
        strict: load only an exact fit (every model entry given, nothing skipped) and raise
            :class:`StateMismatchError` (a ``ValueError``: ``"<source>: weights do not fit
            <target>: <LoadReport.problems()>"``) otherwise. ``False``: load the entries that
            match and keep the others' values.
        strip: prefixes removed repeatedly from checkpoint names (:func:`strip_prefixes`).
        ignore: name prefixes left out on both sides (e.g. a classifier ``"fc."``); the model's
            entries under them keep their values.
        require_match: with ``strict=False``, raise ``ValueError`` when no weight matches (only
            BatchNorm ``num_batches_tracked`` counters, which any two BatchNorm models share);
            ``False`` returns the report instead.
        source: what ``state_dict`` is (e.g. its file), first in every error.
        target: what ``model`` is in the error (default ``"the <class name>"``).

    Returns:
        The :class:`LoadReport` (raising leaves ``model`` untouched).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{source}: state_dict must be a mapping of name -> tensor, got "
            f"{type(state_dict).__name__}"
        )
    left_out = tuple(p for p in ignore if p)
    own = {k: v for k, v in model.state_dict().items() if not _under(k, left_out)}
    report, loaded = _match(own, state_dict, strip, left_out)
    what = target if target is not None else f"the {type(model).__name__}"
    _refuse_a_bad_fit(report, strict=strict, require_match=require_match, source=source, what=what)
    merged = dict(model.state_dict())
    merged.update(loaded)
    model.load_state_dict(merged, strict=True)
    return report


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return bool(prefixes) and name.startswith(prefixes)


def _match(
    own: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    strip: Sequence[str],
    left_out: tuple[str, ...],
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Step 1 of :func:`load_state`: pair the checkpoint's (stripped) names with the model's
    entries ``own`` by name and shape; the report and the tensors that fit.
    """
    loaded: dict[str, torch.Tensor] = {}
    skipped: list[tuple[str, str]] = []
    wrong_shape: list[str] = []
    for raw_name, value in state_dict.items():
        name = strip_prefixes(raw_name, strip)
        if _under(name, left_out):
            continue
        if not isinstance(value, torch.Tensor):
            skipped.append((raw_name, f"not a tensor ({type(value).__name__})"))
        elif name not in own:
            skipped.append((raw_name, "not in model"))
        elif tuple(own[name].shape) != tuple(value.shape):
            wrong_shape.append(name)
            skipped.append(
                (
                    raw_name,
                    f"{_SHAPE_MISMATCH}checkpoint {tuple(value.shape)} vs model "
                    f"{tuple(own[name].shape)}",
                )
            )
        elif name in loaded:
            skipped.append((raw_name, f"duplicate of {name!r} after stripping prefixes"))
        else:
            loaded[name] = value
    missing = tuple(n for n in own if n not in loaded)
    report = LoadReport(
        loaded=tuple(loaded),
        skipped=tuple(skipped),
        missing=missing,
        wrong_shape=tuple(n for n in dict.fromkeys(wrong_shape) if n in missing),
    )
    return report, loaded


def _refuse_a_bad_fit(
    report: LoadReport, *, strict: bool, require_match: bool, source: str, what: str
) -> None:
    """Step 2 of :func:`load_state`: raise before anything is loaded when the fit is not
    acceptable (not exact under ``strict``; nothing meaningful otherwise).
    """
    if strict and not report.exact:
        raise StateMismatchError(
            f"{source}: weights do not fit {what}: {report.problems()}", report
        )
    if not strict and require_match and not report.meaningful:
        raise ValueError(
            f"{source}: no weight matches {what} by name and shape (only "
            f"{len(report.loaded)} BatchNorm num_batches_tracked counters did): refusing to "
            "load, the network would stay randomly initialised; is it a checkpoint of another "
            f"model?\n{report.summary(max_items=5)}"
        )


def load_matching_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    strip_prefixes: Sequence[str] = ("module.", "model_points."),
    *,
    require_match: bool = True,
    source: str = "state_dict",
) -> LoadReport:
    """Load the checkpoint tensors whose (prefix-stripped) name and shape match the model.

    The reference ``load_state_with_same_shape``: pretrained 64-d heads, vMF or 2D parameters
    are skipped, the backbone is loaded; nothing is printed (see :meth:`LoadReport.summary`).
    Unlike the reference, a state dict of which no weight matches (only BatchNorm
    ``num_batches_tracked`` counters, shared by any two BatchNorm models) is refused with a
    ``ValueError`` naming ``source`` and the model is left untouched, unless
    ``require_match=False``. This is :func:`load_state` with ``strict=False``.
    """
    return load_state(
        model,
        state_dict,
        strict=False,
        strip=strip_prefixes,
        require_match=require_match,
        source=source,
    )
