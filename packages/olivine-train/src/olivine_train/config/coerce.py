"""Nested dicts (YAML) to the schema's dataclasses, with type checks and did-you-mean hints."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, TypeVar, Union, cast, get_args, get_origin

from olivine_train.config.schema import Config, LossConfig, Tree, extra_term_weights

__all__ = ["build", "coerce", "config_to_dict", "did_you_mean"]


if TYPE_CHECKING:  # a typeshed-only protocol: it does not exist at run time
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def did_you_mean(
    value: object, known: Iterable[object], cutoff: float = 0.6, prefix: str = ""
) -> str:
    """``"; did you mean '<prefix>x'?"`` for the closest ``x`` of ``known`` to ``value``, or
    ``""`` when none is close enough (``difflib`` ratio below ``cutoff``).
    """
    close = difflib.get_close_matches(str(value), [str(k) for k in known], n=1, cutoff=cutoff)
    return f"; did you mean {prefix + close[0]!r}?" if close else ""


def _type_name(tp: object) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return f"list[{_type_name(inner)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: object, tp: object, where: str, problems: list[str]) -> object:
    """Return ``value`` converted to ``tp`` or record a problem (and return it unchanged)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_finite: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = coerce(value, arg, where, trial)
            if not trial:
                return out
            non_finite += [t for t in trial if "expected a finite number" in t]
        if non_finite:  # a number, just not a finite one: say so rather than "float | null"
            problems.append(non_finite[0])
            return value
        problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            problems.append(
                f"{where}: expected one of {', '.join(repr(c) for c in choices)}, "
                f"got {value!r}{did_you_mean(value, choices)}"
            )
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
            return value
        return [coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}: expected bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}: expected int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}: expected float, got {value!r}")
            return value
        if not math.isfinite(float(value)):  # nan/inf (YAML .nan, .inf or "nan"): never valid
            problems.append(f"{where}: expected a finite number, got {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}: expected str, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(cast("type[DataclassInstance]", tp), value, where, problems)
    problems.append(f"{where}: unsupported field type {_type_name(tp)}")
    return value


def build(cls: type[T], raw: object, where: str, problems: list[str]) -> T:
    """The dataclass ``cls`` from the mapping ``raw`` (at ``where``); unknown keys and values of
    the wrong type are appended to ``problems``.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a mapping, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: Tree = {}
    extra: dict[str, float] = {}
    if cls is LossConfig:  # registered terms' weights: loss.<name>_weight, held in extra_weights
        names.remove("extra_weights")
        extra = extra_term_weights()
        names += [f"{n}_weight" for n in extra]
        kwargs["extra_weights"] = extra
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        term = str(key).removesuffix("_weight")
        if term in extra and str(key).endswith("_weight"):
            extra[term] = cast(float, coerce(value, float, dotted, problems))
            continue
        if key not in names:
            hint = did_you_mean(key, names, cutoff=0.5, prefix=f"{where}." if where else "")
            problems.append(f"unknown key {dotted!r}{hint}")
            continue
        kwargs[key] = coerce(value, hints[key], dotted, problems)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # only reachable through a wrong nested type already reported
        problems.append(f"{where or 'config'}: {exc}")
        return cls()


def config_to_dict(cfg: Config) -> Tree:
    """Plain nested dict (YAML-serialisable); a registered term's weight is ``loss.<name>_weight``
    like the built-in ones.
    """
    tree = dataclasses.asdict(cfg)
    loss = tree["loss"]
    for name, weight in loss.pop("extra_weights").items():
        loss[f"{name}_weight"] = weight
    return tree
