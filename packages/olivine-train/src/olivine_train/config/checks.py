"""Value checks of a well-typed :class:`Config`, one function per section, and :func:`validate`.

Every check appends to one list of problems, so that :func:`validate` reports *all* of them at
once in a single :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from olivine_data.datasets import LIDARSEG_SPECS
from olivine_models import list_image_encoders, list_point_encoders
from olivine_models.registry import VOXELNET_NAMES
from olivine_train.config.coerce import build, did_you_mean
from olivine_train.config.drift import config_field_names
from olivine_train.config.paths import path_problems
from olivine_train.config.schema import (
    NUSCENES_CAMERAS,
    Config,
    ConfigError,
    LossConfig,
    Tree,
    extra_term_weights,
)

__all__ = ["DATASET_CAMERAS", "term_weight_fields", "validate"]

#: camera channels each dataset has (KITTI pairs the LiDAR with image_2 only)
DATASET_CAMERAS: dict[str, tuple[str, ...]] = {"nuscenes": NUSCENES_CAMERAS, "kitti": ("image_2",)}


class _Problems(list[str]):
    """The problem list, with the recurring numeric checks."""

    def positive(self, where: str, value: object, strict: bool = True) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (strict and value <= 0) or (not strict and value < 0):
                self.append(f"{where}: must be {'> 0' if strict else '>= 0'}, got {value!r}")

    def positive_if_set(self, section: str, obj: object, keys: tuple[str, ...]) -> None:
        """:meth:`positive` for each of ``keys`` of ``obj`` that is not None."""
        for key in keys:
            if getattr(obj, key) is not None:
                self.positive(f"{section}.{key}", getattr(obj, key))

    def within(self, where: str, value: object, low: float, high: float, *, closed: str) -> None:
        """``value`` in the interval from ``low`` to ``high``; ``closed`` says which ends are
        included: ``"()"``, ``"(]"``, ``"[)"``.
        """
        if not isinstance(value, float):
            return
        lo_ok = value >= low if closed[0] == "[" else value > low
        hi_ok = value <= high if closed[1] == "]" else value < high
        if not (lo_ok and hi_ok):
            self.append(
                f"{where}: must lie in {closed[0]}{low:g}, {high:g}{closed[1]}, got {value!r}"
            )

    def pair(self, where: str, value: object) -> None:
        """A ``[height, width]`` of positive numbers."""
        if not isinstance(value, list):
            return
        if len(value) != 2:
            self.append(f"{where}: expected [height, width], got {value!r}")
        for i, v in enumerate(value):
            self.positive(f"{where}[{i}]", v)


def term_weight_fields() -> tuple[str, ...]:
    """The loss terms' weight fields of :class:`LossConfig` (every ``<term>_weight``): the
    built-in ones in schema order, then those of the terms registered from outside
    (:func:`olivine_train.register_term`) in registration order. One per entry of the term
    registry (``recipes.pretrain_terms.TERMS``): the registry sits above the config, so it checks
    the correspondence (``recipes.pretrain_termset.weight_fields``), not this module.
    """
    builtin = [f.name for f in dataclasses.fields(LossConfig) if f.name.endswith("_weight")]
    return (*builtin, *(f"{n}_weight" for n in extra_term_weights()))


def _check_data(cfg: Config, p: _Problems) -> None:
    d = cfg.data
    p.positive("data.skip", d.skip)
    p.positive("data.val_skip", d.val_skip)
    p.positive("data.batch_size", d.batch_size)
    p.positive("data.num_workers", d.num_workers, strict=False)
    p.pair("data.image_size", d.image_size)
    if isinstance(d.voxel_size, list):
        if len(d.voxel_size) != 3:
            p.append(f"data.voxel_size: expected 3 values, got {d.voxel_size!r}")
        for i, v in enumerate(d.voxel_size):
            p.positive(f"data.voxel_size[{i}]", v)
    if isinstance(d.cameras, list) and not d.cameras and cfg.recipe == "pretrain":
        p.append("data.cameras: pretraining needs at least one camera")
    known = DATASET_CAMERAS.get(d.dataset)
    if known is not None and isinstance(d.cameras, list):
        for i, cam in enumerate(d.cameras):
            if isinstance(cam, str) and cam not in known:
                p.append(
                    f"data.cameras[{i}]: unknown {d.dataset} camera {cam!r}"
                    f"{did_you_mean(cam, known)} (known: {', '.join(known)})"
                )
        dups = sorted({c for c in d.cameras if d.cameras.count(c) > 1})
        if dups:
            p.append(f"data.cameras: each camera may appear once, repeated: {dups}")
    p.positive_if_set("data", d, ("max_samples", "max_val_samples"))
    _check_voxel_grid(cfg, p)


def _check_voxel_grid(cfg: Config, p: _Problems) -> None:
    """The VoxelNet's voxelisation (``cartesian_mean``) and the encoders that need it."""
    d, m = cfg.data, cfg.model
    mean = d.voxel_mode == "cartesian_mean"
    if mean != (d.feature == "xyzi"):
        p.append(
            f"data.feature: {d.feature!r} with data.voxel_mode {d.voxel_mode!r}: the mean "
            "(x, y, z, intensity) 'xyzi' is the feature of 'cartesian_mean', and only of it"
        )
    voxelnet = m.point_encoder in VOXELNET_NAMES
    if voxelnet and cfg.recipe == "downstream":
        p.append(
            f"model.point_encoder: {m.point_encoder!r} is pretrained here and fine-tuned for "
            "detection in OpenPCDet or mmdetection3d; the segmentation downstream takes a MinkUNet"
        )
    if voxelnet and not mean:
        p.append(
            f"data.voxel_mode: model.point_encoder {m.point_encoder!r} needs 'cartesian_mean' "
            f"(its fixed BEV grid), got {d.voxel_mode!r}"
        )
    if mean and not voxelnet:
        p.append(
            f"data.voxel_mode: 'cartesian_mean' is the VoxelNet's voxelisation; "
            f"model.point_encoder {m.point_encoder!r} takes 'cylindrical' or 'cartesian'"
        )
    if mean and d.feature == "xyzi" and m.in_channels != 4:
        p.append(f"model.in_channels: data.feature 'xyzi' has 4 channels, got {m.in_channels}")
    p.positive("data.max_points_per_voxel", d.max_points_per_voxel)
    p.positive("data.max_voxels", d.max_voxels)
    p.positive_if_set("data", d, ("filter_radius",))
    r = d.point_range
    if not (isinstance(r, list) and len(r) == 6):
        p.append(
            f"data.point_range: expected [x_min, y_min, z_min, x_max, y_max, z_max], got {r!r}"
        )
        return
    if any(r[i + 3] <= r[i] for i in range(3)):
        p.append(f"data.point_range: every max must exceed its min, got {r!r}")
        return
    if mean and isinstance(d.voxel_size, list) and len(d.voxel_size) == 3 and min(d.voxel_size) > 0:
        cells = [round((r[i + 3] - r[i]) / d.voxel_size[i]) for i in range(3)]
        if cells[0] % 8 or cells[1] % 8 or cells[2] < 25:
            p.append(
                f"data.point_range / data.voxel_size: the grid has {cells} (x, y, z) cells; the "
                "VoxelNet needs x and y multiples of its stride 8 and at least 25 z cells "
                "(the reference: [1024, 1024, 40])"
            )


def _check_model(cfg: Config, p: _Problems) -> None:
    m = cfg.model
    p.positive("model.in_channels", m.in_channels)
    p.pair("model.image_input_size", m.image_input_size)
    p.positive("model.head_dim", m.head_dim)
    if m.sparse_backend == "spconv" and importlib.util.find_spec("spconv") is None:
        p.append(
            "model.sparse_backend: 'spconv' but spconv is not installed here; use 'auto' or "
            "'torch' (the PyTorch-only backend, same checkpoints)"
        )
    if cfg.recipe == "pretrain" and m.image_weights is not None and m.image_pretrained is True:
        p.append(
            f"model.image_weights: {m.image_weights!r} is set and so is model.image_pretrained="
            "true (the demo config sets it): the teacher takes one or the other; add "
            "model.image_pretrained=false to load this file, or model.image_weights=null for the "
            "installed pretrained weights"
        )


def _check_loss(cfg: Config, p: _Problems) -> None:
    lo = cfg.loss
    p.positive("loss.num_pairs", lo.num_pairs)
    p.positive("loss.temperature", lo.temperature)
    p.positive("loss.dcas_range_bin", lo.dcas_range_bin)
    weights = {key: lo.weight(key[: -len("_weight")]) for key in term_weight_fields()}
    for key, value in weights.items():
        p.positive(f"loss.{key}", value, strict=False)
    p.within("loss.vmf_decay", lo.vmf_decay, 0.0, 1.0, closed="()")
    p.positive("loss.vmf_warmup_steps", lo.vmf_warmup_steps, strict=False)
    if (lo.vmf_warmup_steps is None) == (lo.vmf_warmup_fraction is None):
        p.append(
            "loss.vmf_warmup_steps / loss.vmf_warmup_fraction: set exactly one of them (the other "
            f"null), got {lo.vmf_warmup_steps!r} and {lo.vmf_warmup_fraction!r}"
        )
    p.within("loss.vmf_warmup_fraction", lo.vmf_warmup_fraction, 0.0, 1.0, closed="()")
    p.within("loss.vmf_freeze_max_cosine", lo.vmf_freeze_max_cosine, -1.0, 1.0, closed="(]")
    numeric = all(isinstance(w, (int, float)) for w in weights.values())
    if cfg.recipe == "pretrain" and numeric and not any(w > 0 for w in weights.values()):
        p.append(f"loss: every term has weight 0; switch on at least one of {', '.join(weights)}")
    if (
        lo.superpixel_weight > 0
        and lo.superpixel_source in ("vfm_components", "sam")
        and (lo.sup_weight > 0 or lo.vmf_weight > 0)
    ):
        p.append(
            f"loss.superpixel_source: {lo.superpixel_source!r} replaces the VFM class labels by "
            "superpixel ids, so loss.sup_weight and loss.vmf_weight must be 0 (or use "
            "'vfm_labels')"
        )
    if cfg.method == "slidr" and lo.superpixel_weight <= 0:
        p.append("loss.superpixel_weight: method 'slidr' needs a superpixel weight > 0")


def _check_demo(cfg: Config, p: _Problems) -> None:
    d = cfg.demo
    p.pair("demo.image_size", d.image_size)
    p.positive("demo.scenes", d.scenes)
    p.positive("demo.samples_per_scene", d.samples_per_scene)
    p.positive("demo.lidar_azimuth_steps", d.lidar_azimuth_steps)


def _check_health(cfg: Config, p: _Problems) -> None:
    h = cfg.health
    p.positive_if_set("health", h, ("every",))
    p.within("health.chance_margin", h.chance_margin, 0.0, 1.0, closed="(]")
    p.within("health.window", h.window, 0.0, 1.0, closed="(]")
    p.positive("health.min_effective_rank", h.min_effective_rank, strict=False)
    p.within("health.max_mu_cosine", h.max_mu_cosine, -1.0, 1.0, closed="(]")


def _check_optim(cfg: Config, p: _Problems) -> None:
    o = cfg.optim
    p.positive("optim.lr", o.lr)
    p.within("optim.momentum", o.momentum, 0.0, 1.0, closed="[)")
    p.within("optim.dampening", o.dampening, 0.0, 1.0, closed="[)")
    p.positive("optim.weight_decay", o.weight_decay, strict=False)
    p.positive("optim.epochs", o.epochs)
    p.positive("optim.base_batch_size", o.base_batch_size)
    p.positive_if_set("optim", o, ("lr_head", "max_steps", "grad_clip"))


def _check_downstream(cfg: Config, p: _Problems) -> None:
    ds = cfg.downstream
    p.positive("downstream.num_classes", ds.num_classes)
    if isinstance(ds.num_classes, int) and ds.num_classes < 2:
        p.append(f"downstream.num_classes: needs >= 2 (class 0 = ignore), got {ds.num_classes}")
    p.positive("downstream.lovasz_weight", ds.lovasz_weight, strict=False)
    p.positive("downstream.eval_every", ds.eval_every)
    if cfg.recipe == "downstream" and cfg.method != "olivine":
        p.append("method: only meaningful for recipe 'pretrain'; leave it at 'olivine'")
    spec = LIDARSEG_SPECS.get(cfg.data.dataset)
    if cfg.recipe == "downstream" and spec is not None and ds.num_classes != spec.num_classes:
        p.append(
            f"downstream.num_classes: {spec.title} has {spec.num_classes} classes (0 = ignore: "
            f"{', '.join(spec.classes)}), got {ds.num_classes!r}"
        )


def _check_run(cfg: Config, p: _Problems) -> None:
    r = cfg.run
    p.positive("run.log_every", r.log_every)
    p.positive("run.image_log_every", r.image_log_every, strict=False)
    p.positive("run.checkpoint_every", r.checkpoint_every, strict=False)
    p.positive_if_set("run", r, ("num_threads",))
    if isinstance(r.device, str) and not (
        r.device in ("auto", "cpu", "cuda", "mps") or r.device.startswith("cuda:")
    ):
        p.append(f"run.device: expected auto, cpu, cuda or cuda:N, got {r.device!r}")
    if isinstance(r.name, str) and (not r.name or "/" in r.name):
        p.append(f"run.name: must be a non-empty folder name without '/', got {r.name!r}")
    if isinstance(r.allow_changes, list):
        known = config_field_names()
        for i, name in enumerate(r.allow_changes):
            if isinstance(name, str) and name not in known:
                p.append(
                    f"run.allow_changes[{i}]: unknown config field {name!r}"
                    f"{did_you_mean(name, known)} (a dotted field such as optim.lr, or a section)"
                )


def _check_paths(cfg: Config, p: _Problems) -> None:
    """Files and folders the config names (:func:`.paths.path_problems`)."""
    p.extend(path_problems(cfg))


def _check_registries(cfg: Config, p: _Problems) -> None:
    """Model names against the olivine_models registries."""
    names = {"model.point_encoder": (cfg.model.point_encoder, list(list_point_encoders()))}
    if cfg.recipe == "pretrain":
        names["model.image_encoder"] = (cfg.model.image_encoder, list(list_image_encoders()))
    for where, (name, known) in names.items():
        if name not in known:
            p.append(
                f"{where}: unknown {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})"
            )


_SECTIONS = (
    _check_data,
    _check_model,
    _check_loss,
    _check_health,
    _check_optim,
    _check_downstream,
    _check_run,
    _check_demo,
)


def _check_values(cfg: Config, p: _Problems, check_paths: bool) -> None:
    for check in _SECTIONS:
        check(cfg, p)
    if check_paths:
        _check_paths(cfg, p)


def validate(raw: Tree, *, check_paths: bool = True, source: str = "config") -> Config:
    """Build a :class:`Config` from a nested dict, raising one :class:`ConfigError` with all
    problems (unknown keys, wrong types, bad values, missing paths).
    """
    problems = _Problems()
    cfg = build(Config, raw, "", problems)
    if not problems:  # value checks assume well-typed fields
        _check_values(cfg, problems, check_paths)
        _check_registries(cfg, problems)
    else:
        # still report value/path/model-name problems of the fields that did parse
        more = _Problems()
        try:
            _check_values(cfg, more, check_paths)
        except TypeError:
            more = _Problems()
        try:
            _check_registries(cfg, more)
        except TypeError:
            pass
        problems.extend(p for p in more if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg
