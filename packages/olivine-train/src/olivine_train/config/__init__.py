"""Typed run configuration: YAML files + ``key=value`` overrides + one validation pass.

A config is a tree of dataclasses (:class:`Config` at the root). It is built from

1. a shipped YAML (``olivine_train/configs/<name>.yaml``) or any YAML path, which may name a
   parent with ``extends: <name or path>`` (merged depth-first, child wins);
2. command-line overrides ``section.key=value`` (values parsed as YAML, so ``5``, ``0.5``,
   ``true``, ``null`` and ``[224, 416]`` work).

:func:`validate` collects *every* problem (unknown keys with a did-you-mean, wrong types, bad
values, missing files) and raises one :class:`ConfigError` listing all of them. The resolved
config is written next to each run as ``config.yaml`` (:func:`save_config`) and can be reloaded
with :func:`load_config` unchanged.

Modules: :mod:`.schema` (the dataclasses; every paper constant a named default), :mod:`.files`
(YAML, ``extends:``, overrides, saving), :mod:`.coerce` (dict -> dataclasses, type checks,
did-you-mean), :mod:`.checks` (value checks per section, :func:`validate`) and :mod:`.drift`
(what a resume may change: :func:`check_resume_config`).
"""

from __future__ import annotations

from olivine_train.config.checks import DATASET_CAMERAS, term_weight_fields, validate
from olivine_train.config.coerce import config_to_dict, did_you_mean
from olivine_train.config.drift import (
    NEUTRAL_FIELDS,
    ConfigChange,
    ResumeConfigError,
    check_resume_config,
    config_changes,
)
from olivine_train.config.files import (
    list_configs,
    load_config,
    merge,
    parse_overrides,
    save_config,
)
from olivine_train.config.schema import (
    NUSCENES_CAMERAS,
    Config,
    ConfigError,
    DataConfig,
    DemoConfig,
    DownstreamConfig,
    HealthConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    Tree,
)

__all__ = [
    "DATASET_CAMERAS",
    "NEUTRAL_FIELDS",
    "NUSCENES_CAMERAS",
    "Config",
    "ConfigChange",
    "ConfigError",
    "DataConfig",
    "DemoConfig",
    "DownstreamConfig",
    "HealthConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ResumeConfigError",
    "RunConfig",
    "Tree",
    "check_resume_config",
    "config_changes",
    "config_to_dict",
    "did_you_mean",
    "list_configs",
    "load_config",
    "merge",
    "parse_overrides",
    "save_config",
    "term_weight_fields",
    "validate",
]
