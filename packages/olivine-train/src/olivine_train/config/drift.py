"""Resume against a changed config: which differences are refused, which pass, which are recorded.

A checkpoint stores the resolved config it was trained with. Resuming compares the new config
with it field by field (:func:`config_changes`). A difference in a field that changes what the
run computes (data, model, loss, optimiser, schedule, seed, precision, ...) is refused
(:class:`ResumeConfigError`, exit code 2) unless the user names it in ``run.allow_changes`` (a
dotted field such as ``optim.lr`` or a whole section such as ``optim``); the accepted changes are
returned so that the recipe records them (``config.resume-<step>.yaml`` and a ``resume_changes``
record in ``metrics.jsonl``; ``config.yaml`` keeps the run's original config).

Fields that cannot change a result pass silently: :data:`NEUTRAL_FIELDS` (logging and checkpoint
cadence, progress, threads, data-loader workers, the device, the run folder's name, ``run.resume``
and ``run.allow_changes`` themselves).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from olivine_train.config.coerce import config_to_dict
from olivine_train.config.schema import Config, ConfigError, Tree

__all__ = [
    "NEUTRAL_FIELDS",
    "ConfigChange",
    "ResumeConfigError",
    "check_resume_config",
    "config_changes",
    "config_field_names",
]

#: fields whose value cannot change what a run computes; a resume may change them freely
NEUTRAL_FIELDS: frozenset[str] = frozenset(
    {
        "description",
        "data.num_workers",
        "run.out_dir",
        "run.name",
        "run.device",
        "run.log_every",
        "run.image_log_every",
        "run.checkpoint_every",
        "run.resume",
        "run.allow_changes",
        "run.overwrite",
        "run.progress",
        "run.num_threads",
    }
)


#: the "now" value of the weight of a loss term that is not registered in this process
UNREGISTERED = "<term not registered>"


@dataclass(frozen=True)
class ConfigChange:
    """One field whose value differs between the stored and the new config."""

    field: str
    stored: object
    new: object

    def describe(self) -> str:
        return f"{self.field}: {self.stored!r} (stored) -> {self.new!r} (now)"


class ResumeConfigError(ConfigError):
    """Resuming with a config that differs from the checkpoint's in fields that change the run."""

    def __init__(self, checkpoint: str, changes: list[ConfigChange]) -> None:
        names = ",".join(c.field for c in changes)
        head = (
            f"{checkpoint}: refusing to resume: the config differs from the one this run was "
            f"trained with in {len(changes)} field(s) that change its result; to change them on "
            f"purpose add run.allow_changes=[{names}] (the change is recorded in the run folder), "
            "or start a new run with another run.name"
        )
        super().__init__([c.describe() for c in changes], source=checkpoint)
        self.changes = list(changes)
        self.args = (head + ":\n" + "\n".join(f"  - {c.describe()}" for c in changes),)

    def __str__(self) -> str:
        return str(self.args[0])


def _flatten(tree: Tree, prefix: str = "") -> Tree:
    """``{"optim": {"lr": 0.5}}`` -> ``{"optim.lr": 0.5}`` (lists are values)."""
    out: Tree = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def config_field_names() -> list[str]:
    """Every dotted field name of the schema (``optim.lr``, ...) and every section name."""
    fields = list(_flatten(config_to_dict(Config())))
    return sorted({*fields, *(n.split(".")[0] for n in fields if "." in n)})


def config_changes(stored: Tree, new: Config) -> list[ConfigChange]:
    """The fields whose values differ between a checkpoint's stored config (a nested dict) and
    ``new``. A field the stored config lacks (written by an older version) counts with the
    schema's default; fields the schema no longer has are ignored.
    """
    now = _flatten(config_to_dict(new))
    defaults = _flatten(config_to_dict(Config()))
    flat = _flatten(stored)
    old = {**defaults, **{k: v for k, v in flat.items() if k in now}}
    changes = [ConfigChange(k, old[k], now[k]) for k in now if _differs(old[k], now[k])]
    # a term registered (olivine_train.register_term) when the run was trained but not now: its
    # weight is no field any more, yet dropping a term that was on changes the run
    gone = [
        k
        for k, v in flat.items()
        if k.startswith("loss.") and k.endswith("_weight") and k not in now and _differs(v, 0)
    ]
    return changes + [ConfigChange(k, flat[k], UNREGISTERED) for k in gone]


def _differs(a: object, b: object) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if not isinstance(a, bool) and not isinstance(b, bool):
            return float(a) != float(b)  # 1 and 1.0 read from YAML are the same value
    return bool(a != b)


def _allowed(field: str, allow: Iterable[str]) -> bool:
    return any(field == a or field.startswith(a + ".") for a in allow)


def check_resume_config(stored: Tree, new: Config, checkpoint: str) -> list[ConfigChange]:
    """Refuse (:class:`ResumeConfigError`) a resume whose config changes a result-changing field
    not named in ``new.run.allow_changes``; return the accepted result-changing changes (empty
    when the run continues unchanged).
    """
    changes = [c for c in config_changes(stored, new) if c.field not in NEUTRAL_FIELDS]
    refused = [c for c in changes if not _allowed(c.field, new.run.allow_changes)]
    if refused:
        raise ResumeConfigError(checkpoint, refused)
    return changes
