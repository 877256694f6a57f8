"""Config files: the shipped YAMLs, ``extends:`` chains, ``key=value`` overrides, saving."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from olivine_train.checkpoint import atomic_write_text
from olivine_train.config.checks import validate
from olivine_train.config.coerce import config_to_dict, did_you_mean
from olivine_train.config.schema import Config, ConfigError, Tree

__all__ = ["list_configs", "load_config", "merge", "parse_overrides", "save_config"]


def _config_dir() -> Path:
    return Path(str(resources.files("olivine_train") / "configs"))


def list_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    return sorted(p.stem for p in _config_dir().glob("*.yaml"))


def _resolve_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError([f"config file {str(path)!r} does not exist"])
        return path
    shipped = _config_dir() / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = list_configs()
    hint = did_you_mean(name, known)
    raise ConfigError([f"unknown config {name!r}{hint} (shipped: {', '.join(known)})"])


def merge(base: Tree, child: Tree) -> Tree:
    """``child`` over ``base``, nested mappings merged key by key (child wins)."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(name: str, seen: tuple[str, ...] = ()) -> Tree:
    path = _resolve_path(name)
    key = str(path.resolve())
    if key in seen:
        raise ConfigError([f"circular 'extends' chain: {' -> '.join(seen + (key,))}"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: expected a mapping at top level, got {type(raw).__name__}"])
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent = str(parent)
    target: str = parent
    if Path(parent).suffix:
        target = parent if Path(parent).is_absolute() else str(path.parent / parent)
    elif (path.parent / f"{parent}.yaml").is_file():
        target = str(path.parent / f"{parent}.yaml")
    base = _read_yaml(target, seen + (key,))
    return merge(base, raw)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> Tree:
    """Turn ``["optim.lr=0.1", "run.name=x"]`` into a nested dict (values parsed as YAML)."""
    nested: Tree = {}
    problems: list[str] = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: expected key=value (e.g. optim.lr=0.1)")
            continue
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            problems.append(f"override {item!r}: empty key segment")
            continue
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: value is not valid YAML ({exc})")
            continue
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"override {item!r}: {part!r} was already set to a value")
                break
            node = child
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, "command-line overrides")
    return nested


def load_config(
    name: str, overrides: list[str] | tuple[str, ...] = (), *, check_paths: bool = True
) -> Config:
    """Load a shipped config name or YAML path, apply overrides, validate everything."""
    raw = _read_yaml(name)
    if overrides:
        raw = merge(raw, parse_overrides(overrides))
    return validate(raw, check_paths=check_paths, source=name)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    return atomic_write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), path)
