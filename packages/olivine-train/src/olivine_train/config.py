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

Every constant the paper fixes is a named default here (see the field comments): 4096 pairs,
tau 0.07, 64-d heads, EMA 0.9999, 10k warm-up steps, loss weights 0.5/0.5/1, voxel 0.1 m / 1 deg,
SGD lr 0.5 momentum 0.9 dampening 0.1 wd 1e-4, cosine schedule, 50 epochs, batch 16.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DemoConfig",
    "DownstreamConfig",
    "HealthConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "config_to_dict",
    "list_configs",
    "load_config",
    "parse_overrides",
    "save_config",
    "validate",
]

NUSCENES_CAMERAS = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


@dataclass
class DataConfig:
    """Where the data is and how it becomes batches."""

    dataset: Literal["nuscenes", "semantickitti", "kitti"] = "nuscenes"
    root: str = "datasets/nuscenes"
    version: str = "v1.0-trainval"
    train_split: str = "train"
    val_split: str = "val"
    train_scenes: list[str] | None = None  # explicit list overrides train_split
    val_scenes: list[str] | None = None
    skip: int = 1  # keep every skip-th scene (nuScenes) / frame (KITTI): 100 -> 1 % labels
    label_root: str | None = None  # camseg label store root; None -> data.root
    vocabulary: Literal["seem17", "gsam14"] = "seem17"
    cameras: list[str] = field(default_factory=lambda: list(NUSCENES_CAMERAS))
    image_size: list[int] = field(default_factory=lambda: [224, 416])
    voxel_mode: Literal["cylindrical", "cartesian"] = "cylindrical"
    voxel_size: list[float] = field(default_factory=lambda: [0.1, 1.0, 0.1])  # 0.1 m, 1 deg, 0.1 m
    feature: Literal["intensity", "intensity+1", "ones"] = "intensity"
    batch_size: int = 16  # total over all ranks
    num_workers: int = 0
    augment: bool = True
    max_samples: int | None = None  # truncate the train set (smoke tests)
    max_val_samples: int | None = None


@dataclass
class ModelConfig:
    """Networks: the trainable 3D backbone and (pretraining) the frozen 2D teacher."""

    point_encoder: str = "minkunet34c"
    in_channels: int = 1
    image_encoder: str = "resnet50_dilated"
    image_weights: str | None = None  # e.g. weights/moco_v2_800ep_pretrain.pth.tar
    # load the teacher's packaged/installed pretrained weights (efficientnet_lite0: the
    # olivine-models[pretrained] extra); false with no image_weights = a RANDOM teacher
    image_pretrained: bool = False
    # [height, width] the teacher sees (images resized); null = data.image_size. Pairs and 2D head
    # outputs stay at data.image_size
    image_input_size: list[int] | None = None
    head_dim: int = 64
    sync_bn: bool = False


@dataclass
class LossConfig:
    """Pretraining objective. A weight of 0 switches the term off (it is not computed)."""

    num_pairs: int = 4096  # M, pairs per loss term per rank
    temperature: float = 0.07
    ppnce_weight: float = 0.5
    sup_weight: float = 0.5
    vmf_weight: float = 1.0
    superpixel_weight: float = 0.0  # SLidR superpixel-pooled InfoNCE
    sup_sampling: Literal["dcas", "uniform"] = "dcas"
    # EMA factor of the class means; null = 1 - 1/warm-up, the reference's tie (0.9999 = 1 - 1/10k)
    vmf_decay: float | None = 0.9999
    vmf_warmup_steps: int | None = 10001  # the reference: updates while global_step <= 10000
    # or: warm-up as a fraction of the run's optimiser steps (short runs); set exactly one of both
    vmf_warmup_fraction: float | None = None
    # freeze guard: at the end of the warm-up, freeze mu/kappa only once the mean pairwise cosine
    # of the class directions is at most this (else keep updating, loss off); null = reference
    vmf_freeze_max_cosine: float | None = None
    vmf_bias_correction: bool = False
    # True: pairs whose VFM label is the vocabulary's unlabelled id (SEEM17: 16 "background",
    # GSAM14: 0) are neither L_sup anchors/positives nor vMF classes. False = the reference, which
    # treats that id as one more class.
    ignore_unlabelled: bool = False
    superpixel_source: Literal["vfm_components", "vfm_labels"] = "vfm_labels"


@dataclass
class OptimConfig:
    """SGD + schedule. ``lr_head`` applies to classifier parameters (downstream); None -> lr."""

    lr: float = 0.5
    lr_head: float | None = None
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    scheduler: Literal["cosine", "constant"] = "cosine"
    epochs: int = 50
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests, demo)
    grad_clip: float | None = None
    # linear lr scaling (Goyal et al. 2017; mmdetection's auto_scale_lr): lr and lr_head are
    # defined for a total batch of base_batch_size and multiplied by data.batch_size / that
    auto_scale_lr: bool = False
    base_batch_size: int = 16  # the paper's lr 0.5 is for 16 scans (4 GPUs x 4)


@dataclass
class DownstreamConfig:
    """Segmentation downstream: linear probing or fine-tuning."""

    mode: Literal["linear_probe", "finetune"] = "finetune"
    pretrained: str | None = None  # backbone.pt / last.pt of a pretraining run; None = random
    num_classes: int = 17  # including class 0 = ignore
    lovasz_weight: float = 1.0
    bn_momentum: float = 0.02
    eval_every: int = 1  # epochs
    # linear probing without augmentation: run the frozen trunk once per sample and train the
    # classifier on cached voxel features (exact: eval-mode BN makes features batch-independent)
    cache_features: bool = True


@dataclass
class RunConfig:
    """Bookkeeping: seed, output folder, device, precision, logging and checkpoints."""

    seed: int = 0
    out_dir: str = "runs"
    name: str = "run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    image_log_every: int = 500
    checkpoint_every: int = 0  # steps; 0 = only at epoch ends
    resume: str | None = None  # path to last.pt or "auto" (= <run dir>/last.pt if present)
    progress: bool = True
    deterministic: bool = False
    num_threads: int | None = None  # torch intra-op threads (None = torch default)


@dataclass
class HealthConfig:
    """Training-health checks of pretraining (see ``olivine_train.health``)."""

    every: int | None = None  # steps between effective-rank measurements; None = run.log_every
    # a term has left chance when its mean loss over the final window is below
    # chance * (1 - chance_margin)
    chance_margin: float = 0.05
    window: float = 0.25  # final fraction of the run's steps over which the margins are averaged
    min_effective_rank: float = 2.0  # features below this effective rank count as collapsed
    max_mu_cosine: float = 0.5  # vMF class directions frozen above this mean cosine: warning


@dataclass
class DemoConfig:
    """Synthetic world and probe settings used only by ``olivine-train demo`` (the world renders
    the cameras of ``data.cameras``).
    """

    scenes: int = 4
    samples_per_scene: int = 4
    world_seed: int = 0
    image_size: list[int] = field(default_factory=lambda: [200, 112])  # (width, height) rendered
    vfm_noise: float = 0.2
    lidar_azimuth_steps: int = 360
    probe_epochs: int = 30
    probe_lr: float = 0.1


@dataclass
class Config:
    """Root of a run configuration."""

    recipe: Literal["pretrain", "downstream"] = "pretrain"
    method: Literal["olivine", "ppkt", "slidr"] = "olivine"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    run: RunConfig = field(default_factory=RunConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def run_dir(self) -> Path:
        """``<run.out_dir>/<run.name>``."""
        return Path(self.run.out_dir) / self.run.name


# ---------------------------------------------------------------------------------------------
# YAML files


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
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError([f"unknown config {name!r}{hint} (shipped: {', '.join(known)})"])


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
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
    return _merge(base, raw)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["optim.lr=0.1", "run.name=x"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
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


# ---------------------------------------------------------------------------------------------
# dict -> dataclasses with type checks


def _type_name(tp: Any) -> str:
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


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
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
            out = _coerce(value, arg, where, trial)
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
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"{where}: expected one of {', '.join(repr(c) for c in choices)}, "
                f"got {value!r}{hint}"
            )
        return value
    if origin is list:
        (inner,) = get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            problems.append(f"{where}: expected {_type_name(tp)}, got {value!r}")
            return value
        return [_coerce(v, inner, f"{where}[{i}]", problems) for i, v in enumerate(value)]
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
        return _build(tp, value, where, problems)
    problems.append(f"{where}: unsupported field type {_type_name(tp)}")
    return value


def _build(cls: Any, raw: Any, where: str, problems: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a mapping, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            problems.append(f"unknown key {dotted!r}{hint}")
            continue
        kwargs[key] = _coerce(value, hints[key], dotted, problems)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # only reachable through a wrong nested type already reported
        problems.append(f"{where or 'config'}: {exc}")
        return cls()


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (YAML-serialisable)."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------
# validation of values


def _check_values(cfg: Config, problems: list[str], check_paths: bool) -> None:
    d, m, lo, o, ds, r = cfg.data, cfg.model, cfg.loss, cfg.optim, cfg.downstream, cfg.run

    def positive(where: str, value: Any, strict: bool = True) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (strict and value <= 0) or (not strict and value < 0):
                sign = "> 0" if strict else ">= 0"
                problems.append(f"{where}: must be {sign}, got {value!r}")

    positive("data.skip", d.skip)
    positive("data.batch_size", d.batch_size)
    positive("data.num_workers", d.num_workers, strict=False)
    if isinstance(d.image_size, list) and len(d.image_size) != 2:
        problems.append(f"data.image_size: expected [height, width], got {d.image_size!r}")
    if isinstance(d.voxel_size, list):
        if len(d.voxel_size) != 3:
            problems.append(f"data.voxel_size: expected 3 values, got {d.voxel_size!r}")
        for i, v in enumerate(d.voxel_size):
            positive(f"data.voxel_size[{i}]", v)
    if isinstance(d.cameras, list) and not d.cameras and cfg.recipe == "pretrain":
        problems.append("data.cameras: pretraining needs at least one camera")
    _check_cameras(d, problems)
    for key in ("max_samples", "max_val_samples"):
        value = getattr(d, key)
        if value is not None:
            positive(f"data.{key}", value)
    positive("model.in_channels", m.in_channels)
    if isinstance(m.image_input_size, list):
        if len(m.image_input_size) != 2:
            problems.append(
                f"model.image_input_size: expected [height, width], got {m.image_input_size!r}"
            )
        for i, v in enumerate(m.image_input_size):
            positive(f"model.image_input_size[{i}]", v)
    positive("model.head_dim", m.head_dim)
    positive("loss.num_pairs", lo.num_pairs)
    positive("loss.temperature", lo.temperature)
    for key in ("ppnce_weight", "sup_weight", "vmf_weight", "superpixel_weight"):
        positive(f"loss.{key}", getattr(lo, key), strict=False)
    if isinstance(lo.vmf_decay, float) and not 0.0 < lo.vmf_decay < 1.0:
        problems.append(f"loss.vmf_decay: must lie in (0, 1), got {lo.vmf_decay!r}")
    positive("loss.vmf_warmup_steps", lo.vmf_warmup_steps, strict=False)
    frac = lo.vmf_warmup_fraction
    if (lo.vmf_warmup_steps is None) == (frac is None):
        problems.append(
            "loss.vmf_warmup_steps / loss.vmf_warmup_fraction: set exactly one of them (the other "
            f"null), got {lo.vmf_warmup_steps!r} and {frac!r}"
        )
    if isinstance(frac, float) and not 0.0 < frac < 1.0:
        problems.append(f"loss.vmf_warmup_fraction: must lie in (0, 1), got {frac!r}")
    cos = lo.vmf_freeze_max_cosine
    if isinstance(cos, float) and not -1.0 < cos <= 1.0:
        problems.append(f"loss.vmf_freeze_max_cosine: must lie in (-1, 1], got {cos!r}")
    h = cfg.health
    if h.every is not None:
        positive("health.every", h.every)
    for key, low, high in (("chance_margin", 0.0, 1.0), ("window", 0.0, 1.0)):
        value = getattr(h, key)
        if isinstance(value, float) and not low < value <= high:
            problems.append(f"health.{key}: must lie in ({low}, {high}], got {value!r}")
    positive("health.min_effective_rank", h.min_effective_rank, strict=False)
    if isinstance(h.max_mu_cosine, float) and not -1.0 < h.max_mu_cosine <= 1.0:
        problems.append(f"health.max_mu_cosine: must lie in (-1, 1], got {h.max_mu_cosine!r}")
    if cfg.recipe == "pretrain":
        weights = [lo.ppnce_weight, lo.sup_weight, lo.vmf_weight, lo.superpixel_weight]
        if all(isinstance(w, (int, float)) for w in weights) and not any(w > 0 for w in weights):
            problems.append(
                "loss: every term has weight 0; switch on at least one of "
                "ppnce_weight, sup_weight, vmf_weight, superpixel_weight"
            )
    positive("optim.lr", o.lr)
    if o.lr_head is not None:
        positive("optim.lr_head", o.lr_head)
    if isinstance(o.momentum, float) and not 0.0 <= o.momentum < 1.0:
        problems.append(f"optim.momentum: must lie in [0, 1), got {o.momentum!r}")
    if isinstance(o.dampening, float) and not 0.0 <= o.dampening < 1.0:
        problems.append(f"optim.dampening: must lie in [0, 1), got {o.dampening!r}")
    positive("optim.weight_decay", o.weight_decay, strict=False)
    positive("optim.epochs", o.epochs)
    positive("optim.base_batch_size", o.base_batch_size)
    if o.max_steps is not None:
        positive("optim.max_steps", o.max_steps)
    if o.grad_clip is not None:
        positive("optim.grad_clip", o.grad_clip)
    positive("downstream.num_classes", ds.num_classes)
    if isinstance(ds.num_classes, int) and ds.num_classes < 2:
        problems.append(
            f"downstream.num_classes: needs >= 2 (class 0 = ignore), got {ds.num_classes}"
        )
    positive("downstream.lovasz_weight", ds.lovasz_weight, strict=False)
    positive("downstream.eval_every", ds.eval_every)
    positive("run.log_every", r.log_every)
    positive("run.image_log_every", r.image_log_every, strict=False)
    positive("run.checkpoint_every", r.checkpoint_every, strict=False)
    if r.num_threads is not None:
        positive("run.num_threads", r.num_threads)
    if isinstance(r.device, str) and not (
        r.device in ("auto", "cpu", "cuda", "mps") or r.device.startswith("cuda:")
    ):
        problems.append(f"run.device: expected auto, cpu, cuda or cuda:N, got {r.device!r}")
    if isinstance(r.name, str) and (not r.name or "/" in r.name):
        problems.append(f"run.name: must be a non-empty folder name without '/', got {r.name!r}")

    if cfg.recipe == "downstream" and cfg.method != "olivine":
        problems.append("method: only meaningful for recipe 'pretrain'; leave it at 'olivine'")
    if (
        lo.superpixel_weight > 0
        and lo.superpixel_source == "vfm_components"
        and (lo.sup_weight > 0 or lo.vmf_weight > 0)
    ):
        problems.append(
            "loss.superpixel_source: 'vfm_components' replaces the VFM class labels by component "
            "ids, so loss.sup_weight and loss.vmf_weight must be 0 (or use 'vfm_labels')"
        )
    if cfg.method == "slidr" and lo.superpixel_weight <= 0:
        problems.append("loss.superpixel_weight: method 'slidr' needs a superpixel weight > 0")

    if check_paths:
        root = Path(d.root)
        if not root.is_dir():
            problems.append(f"data.root: folder {str(root)!r} does not exist")
        if d.label_root is not None and not Path(d.label_root).is_dir():
            problems.append(f"data.label_root: folder {d.label_root!r} does not exist")
        if cfg.recipe == "pretrain" and m.image_weights is not None:
            if not Path(m.image_weights).is_file():
                problems.append(
                    f"model.image_weights: file {m.image_weights!r} does not exist "
                    "(download the MoCo-v2 checkpoint or set model.image_weights=null)"
                )
            else:
                bad = _torch_file_problem(Path(m.image_weights))
                if bad is not None:
                    problems.append(f"model.image_weights: file {m.image_weights!r} {bad}")
        if cfg.recipe == "downstream" and ds.pretrained is not None:
            if not Path(ds.pretrained).is_file():
                problems.append(f"downstream.pretrained: file {ds.pretrained!r} does not exist")
        if r.resume not in (None, "auto") and not Path(str(r.resume)).is_file():
            problems.append(f"run.resume: file {r.resume!r} does not exist")


def _torch_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file, from its first bytes and (for the zip format
    of torch >= 1.6) its zip directory, without loading it; None if it looks like one.
    """
    import zipfile

    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes): expected a PyTorch checkpoint"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"is a truncated or corrupt PyTorch (zip) checkpoint ({exc})"
        if not any(n.endswith("data.pkl") for n in names):
            return "is a zip archive but not a PyTorch checkpoint (no data.pkl inside)"
        return None
    if head[0] == 0x80:  # a pickle (the legacy torch.save format)
        return None
    return f"is not a PyTorch checkpoint (starts with bytes {head!r})"


#: camera channels each dataset has (KITTI pairs the LiDAR with image_2 only)
DATASET_CAMERAS: dict[str, tuple[str, ...]] = {"nuscenes": NUSCENES_CAMERAS, "kitti": ("image_2",)}


def _check_cameras(d: DataConfig, problems: list[str]) -> None:
    """``data.cameras`` against the channels of ``data.dataset`` (unknown names, duplicates)."""
    known = DATASET_CAMERAS.get(d.dataset)
    if known is None or not isinstance(d.cameras, list):
        return
    for i, cam in enumerate(d.cameras):
        if isinstance(cam, str) and cam not in known:
            close = difflib.get_close_matches(cam, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"data.cameras[{i}]: unknown {d.dataset} camera {cam!r}{hint} "
                f"(known: {', '.join(known)})"
            )
    dups = sorted({c for c in d.cameras if d.cameras.count(c) > 1})
    if dups:
        problems.append(f"data.cameras: each camera may appear once, repeated: {dups}")


def _check_registries(cfg: Config, problems: list[str]) -> None:
    """Model names against the olivine_models registries (skipped if that package is absent)."""
    try:
        from olivine_models import list_image_encoders, list_point_encoders
    except ImportError:
        return
    points = list(list_point_encoders())
    if cfg.model.point_encoder not in points:
        close = difflib.get_close_matches(cfg.model.point_encoder, points, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(
            f"model.point_encoder: unknown {cfg.model.point_encoder!r}{hint} "
            f"(known: {', '.join(points)})"
        )
    if cfg.recipe == "pretrain":
        images = list(list_image_encoders())
        if cfg.model.image_encoder not in images:
            close = difflib.get_close_matches(cfg.model.image_encoder, images, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"model.image_encoder: unknown {cfg.model.image_encoder!r}{hint} "
                f"(known: {', '.join(images)})"
            )


def validate(raw: dict[str, Any], *, check_paths: bool = True, source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict, raising one :class:`ConfigError` with all
    problems (unknown keys, wrong types, bad values, missing paths).
    """
    problems: list[str] = []
    cfg = _build(Config, raw, "", problems)
    if not problems:  # value checks assume well-typed fields
        _check_values(cfg, problems, check_paths)
        _check_registries(cfg, problems)
    else:
        # still report value/path/model-name problems of the fields that did parse
        value_problems: list[str] = []
        try:
            _check_values(cfg, value_problems, check_paths)
        except TypeError:
            value_problems = []
        try:
            _check_registries(cfg, value_problems)
        except TypeError:
            pass
        problems.extend(p for p in value_problems if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_config(
    name: str, overrides: list[str] | tuple[str, ...] = (), *, check_paths: bool = True
) -> Config:
    """Load a shipped config name or YAML path, apply overrides, validate everything."""
    raw = _read_yaml(name)
    if overrides:
        raw = _merge(raw, parse_overrides(overrides))
    return validate(raw, check_paths=check_paths, source=name)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
    return path
