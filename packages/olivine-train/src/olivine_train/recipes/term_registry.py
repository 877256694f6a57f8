"""Registering pretraining loss terms from outside the toolkit (no source edits).

Example (a module of your own; nothing of the toolkit is edited)::

    from olivine_train import Head, LossTerm, PairBatch, TermResult, register_term

    @register_term("toy", weight=0.0)  # adds TERMS["toy"] and the field loss.toy_weight
    class ToyTerm(LossTerm):
        heads = (Head.PP,)
        image_head = Head.PP

        def __call__(self, p: PairBatch, idx, q) -> TermResult:
            ...

A registered term is one more entry of :data:`.pretrain_terms.TERMS` (after the built-in ones:
the order in which the terms draw their pairs) and one more weight ``loss.<name>_weight`` of the
config (default ``weight``), validated like the built-in weights (``>= 0``; one term > 0) by
:func:`olivine_train.validate` and ``olivine-train validate-config``. Registration is per process:
import the module that registers before loading a config that sets its weight (a config file
naming an unregistered ``loss.<name>_weight`` is refused as an unknown key). The registries follow
Pointcept's and mmdetection3d's decorator registration, with the weight next to the term.

The ``olivine-train`` command imports the modules that register terms before it reads its
config (:func:`load_term_plugins`): those named in the ``OLIVINE_PLUGINS`` environment variable
(comma-separated module names) and those an installed package declares under the entry-point
group ``olivine_train.plugins`` (``[project.entry-points."olivine_train.plugins"]`` in its
``pyproject.toml``: ``mine = "my_package.my_terms"``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import math
import os
import re
from collections.abc import Callable
from typing import TypeVar

from olivine_train.config.schema import LossConfig, add_term_weight, remove_term_weight
from olivine_train.recipes.pretrain_terms import BUILTIN_TERMS, TERMS, LossTerm

__all__ = [
    "PLUGIN_ENV",
    "PLUGIN_GROUP",
    "PluginError",
    "load_term_plugins",
    "register_term",
    "registered_terms",
    "unregister_term",
]

PLUGIN_ENV = "OLIVINE_PLUGINS"
PLUGIN_GROUP = "olivine_train.plugins"


class PluginError(ValueError):
    """A plugin module named by ``OLIVINE_PLUGINS`` or an entry point could not be imported."""


T = TypeVar("T", bound=type[LossTerm])

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def registered_terms() -> dict[str, type[LossTerm]]:
    """Every term by name (built-in and registered), in the order they draw their pairs."""
    return dict(TERMS)


def _check(name: str, cls: object, weight: float) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"register_term: a term name is lower-case letters, digits and '_' starting with a "
            f"letter (it becomes loss.<name>_weight and loss/<name>), got {name!r}"
        )
    if name in TERMS:
        owner = TERMS[name]
        raise ValueError(
            f"register_term: a loss term {name!r} is already registered "
            f"({owner.__module__}.{owner.__qualname__}); unregister_term({name!r}) first or "
            "choose another name"
        )
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    if f"{name}_weight" in fields:
        raise ValueError(
            f"register_term: {name!r}: loss.{name}_weight is already a LossConfig field"
        )
    if not (inspect.isclass(cls) and issubclass(cls, LossTerm)):
        raise ValueError(
            f"register_term({name!r}): expected a subclass of olivine_train.LossTerm, got {cls!r}"
        )
    if inspect.isabstract(cls):
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        raise ValueError(
            f"register_term({name!r}): {cls.__qualname__} does not implement {missing}"
        )
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"register_term({name!r}): weight must be a number, got {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"register_term({name!r}): weight must be finite and >= 0, got {weight!r}")


def register_term(name: str, *, weight: float = 0.0) -> Callable[[T], T]:
    """Class decorator: register a :class:`~olivine_train.LossTerm` subclass as pretraining term
    ``name`` with the config weight ``loss.<name>_weight`` (default ``weight``; 0 = off, so that
    existing configs train as before).

    Raises ``ValueError`` for a name already registered (built-in or not), a name whose weight
    field exists, a class that is not a concrete ``LossTerm`` or a negative weight.
    """

    def decorate(cls: T) -> T:
        _check(name, cls, weight)
        TERMS[name] = cls
        add_term_weight(name, float(weight))
        return cls

    return decorate


def unregister_term(name: str) -> type[LossTerm]:
    """Remove a term registered with :func:`register_term` (and its weight field); returns its
    class. The built-in terms cannot be removed (``ValueError``), nor an unknown name.
    """
    if name in BUILTIN_TERMS:
        raise ValueError(f"unregister_term: {name!r} is a built-in loss term; set its weight to 0")
    if name not in TERMS:
        known = ", ".join(n for n in TERMS if n not in BUILTIN_TERMS) or "none"
        raise ValueError(f"unregister_term: no registered loss term {name!r} (registered: {known})")
    remove_term_weight(name)
    return TERMS.pop(name)


def load_term_plugins() -> list[str]:
    """Import the plugin modules (``OLIVINE_PLUGINS``, then the ``olivine_train.plugins`` entry
    points); returns their names. A module that fails to import raises :class:`PluginError`
    naming it and where it was named; a module imported before is not imported twice.
    """
    named = [(m.strip(), f"${PLUGIN_ENV}") for m in os.environ.get(PLUGIN_ENV, "").split(",")]
    named = [(m, src) for m, src in named if m]
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        named.append((ep.value.split(":")[0], f"entry point {ep.name!r} of {PLUGIN_GROUP}"))
    loaded = []
    for module, source in named:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PluginError(
                f"plugin module {module!r} (named by {source}) cannot be imported: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        loaded.append(module)
    return loaded
