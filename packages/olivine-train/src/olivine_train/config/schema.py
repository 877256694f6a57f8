"""The configuration schema: one dataclass per section, every paper constant a named default.

The paper's constants (OLIVINE, NeurIPS 2024, and its reference code github.com/Eaphan/OLIVINE):
4096 pairs, tau 0.07, 64-d heads, EMA 0.9999, 10,001 warm-up updates, loss weights 0.5/0.5/1,
DCAS range bins of 0.1 m, voxel 0.1 m / 1 deg, SGD lr 0.5 momentum 0.9 dampening 0.1 wd 1e-4,
cosine schedule, 50 epochs, batch 16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from olivine_data import NUSCENES_CAMERAS


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{lines}")


Tree = dict[str, Any]
"""A mapping read from YAML or JSON, or a config as plain data: its values are any YAML type
until :func:`~olivine_train.config.coerce.build` checks them against the schema."""


@dataclass
class DataConfig:
    """Where the data is and how it becomes batches."""

    # nuscenes, kitti (camera pairing) and the SemanticKITTI family of LiDAR segmentation sets
    # (olivine_data.datasets.LIDARSEG_SPECS; the cross-dataset targets of the paper)
    dataset: Literal[
        "nuscenes",
        "semantickitti",
        "kitti",
        "scribblekitti",
        "rellis3d",
        "semanticposs",
        "semanticstf",
        "synlidar",
        "daps3d",
    ] = "nuscenes"
    root: str = "datasets/nuscenes"
    version: str = "v1.0-trainval"
    train_split: str = "train"
    val_split: str = "val"
    train_scenes: list[str] | None = None  # explicit list overrides train_split
    val_scenes: list[str] | None = None
    skip: int = 1  # keep every skip-th scene (nuScenes) / frame (KITTI): 100 -> 1 % labels
    val_skip: int = 1  # keep every val_skip-th validation frame (SemanticKITTI family)
    # label folder of the validation frames (SemanticKITTI family); None = the dataset's own
    # (ScribbleKITTI: the dense labels/, the reference code reads scribbles/)
    val_label_dir: str | None = None
    label_root: str | None = None  # camseg label store root; None -> data.root
    # read files a dataset table names (nuScenes filename, split-file lines) that resolve
    # outside data.root once symlinks are followed: for datasets laid out with symlinks to other
    # folders. false (default): such a path is an error naming the table, record and path
    allow_outside_root: bool = False
    vocabulary: Literal["seem17", "gsam14"] = "seem17"
    cameras: list[str] = field(default_factory=lambda: list(NUSCENES_CAMERAS))
    image_size: list[int] = field(default_factory=lambda: [224, 416])
    # cylindrical | cartesian: first point per voxel on the cloud's own extent (MinkUNet);
    # cartesian_mean: the VoxelNet's fixed grid over data.point_range, mean of the points'
    # (x, y, z, intensity) per voxel (feature xyzi), capped by max_points_per_voxel / max_voxels
    voxel_mode: Literal["cylindrical", "cartesian", "cartesian_mean"] = "cylindrical"
    voxel_size: list[float] = field(default_factory=lambda: [0.1, 1.0, 0.1])  # 0.1 m, 1 deg, 0.1 m
    feature: Literal["intensity", "intensity+1", "ones", "xyzi"] = "intensity"
    # cartesian_mean only (the reference VoxelNet's nuScenes values): [x_min, y_min, z_min, x_max,
    # y_max, z_max] in metres; points are kept if x^2 + y^2 <= filter_radius^2 (null: no radial
    # filter) and z_min <= z <= z_max
    point_range: list[float] = field(default_factory=lambda: [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0])
    filter_radius: float | None = 51.2
    max_points_per_voxel: int = 10
    max_voxels: int = 60000  # per scan
    batch_size: int = 16  # total over all ranks
    num_workers: int = 0
    augment: bool = True
    max_samples: int | None = None  # truncate the train set (smoke tests)
    max_val_samples: int | None = None


@dataclass
class ModelConfig:
    """Networks: the trainable 3D backbone and (pretraining) the frozen 2D teacher."""

    point_encoder: str = "minkunet34c"
    # sparse-convolution backend of the point encoder: auto = spconv when it imports, else the
    # PyTorch-only backend (olivine_models.point.sparse_torch); spconv | torch force one. Both
    # read and write the same state dict, so checkpoints move between them.
    sparse_backend: Literal["auto", "spconv", "torch"] = "auto"
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
    # "pairs": the 2D heads are evaluated at the paired pixels only (ImageHead.sample; exact);
    # "full_map": full-resolution upsampled maps, then gathered (the reference's way; slower,
    # memory grows with pixels -- kept for inspection and as the tested reference)
    image_head: Literal["pairs", "full_map"] = "pairs"
    sync_bn: bool = False


#: weight defaults of the loss terms registered from outside the toolkit
#: (:func:`olivine_train.register_term`), by term name; their field is ``loss.<name>_weight``
_EXTRA_TERM_WEIGHTS: dict[str, float] = {}


def add_term_weight(name: str, default: float) -> None:
    """Make ``loss.<name>_weight`` a config field (default ``default``); called by
    :func:`olivine_train.register_term`, which checks the name first.
    """
    _EXTRA_TERM_WEIGHTS[name] = float(default)


def remove_term_weight(name: str) -> None:
    """Undo :func:`add_term_weight` (:func:`olivine_train.unregister_term`)."""
    _EXTRA_TERM_WEIGHTS.pop(name, None)


def extra_term_weights() -> dict[str, float]:
    """``{name: default weight}`` of the registered (non-built-in) terms, in registration order."""
    return dict(_EXTRA_TERM_WEIGHTS)


@dataclass
class LossConfig:
    """Pretraining objective. A weight of 0 switches the term off (it is not computed).

    The built-in terms' weights are fields; a term registered with
    :func:`olivine_train.register_term` adds ``<name>_weight``, held in ``extra_weights``
    (``{name: weight}``) and read as ``cfg.loss.<name>_weight`` or :meth:`weight` like the others.
    In YAML and overrides it is written ``loss.<name>_weight`` (never ``extra_weights``).
    """

    num_pairs: int = 4096  # M, pairs per loss term per rank
    temperature: float = 0.07
    ppnce_weight: float = 0.5
    sup_weight: float = 0.5
    vmf_weight: float = 1.0
    superpixel_weight: float = 0.0  # SLidR superpixel-pooled InfoNCE
    sup_sampling: Literal["dcas", "uniform"] = "dcas"
    # DCAS range bins (m): a pair's range is floor(sqrt(x^2 + y^2) / dcas_range_bin), the density
    # term's variable; 0.1 = the reference's quantised cylindrical radius (its 0.1 m voxel)
    dcas_range_bin: float = 0.1
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
    # vfm_labels: (image, VFM class); vfm_components: connected components of the VFM label map;
    # sam: the SAM superpixels make-labels --mode refine writes into the label store
    superpixel_source: Literal["vfm_components", "vfm_labels", "sam"] = "vfm_labels"
    # weights of the registered terms (loss.<name>_weight); defaults from their registration
    extra_weights: dict[str, float] = field(default_factory=extra_term_weights)

    def weight(self, name: str) -> float:
        """The weight of term ``name`` (``loss.<name>_weight``), built-in or registered."""
        if name in self.extra_weights:
            return self.extra_weights[name]
        if name in _EXTRA_TERM_WEIGHTS:  # registered after this config was built: its default
            return _EXTRA_TERM_WEIGHTS[name]
        value: float = getattr(self, f"{name}_weight")
        return value

    if not TYPE_CHECKING:  # hidden from mypy, which keeps flagging misspelt fields

        def __getattr__(self, attr: str) -> float:
            # only reached when normal lookup fails: loss.<registered>_weight
            if attr.endswith("_weight"):
                extra = self.__dict__.get("extra_weights", {})
                if attr[: -len("_weight")] in extra:
                    return float(extra[attr[: -len("_weight")]])
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")


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
    # fields (optim.lr) or sections (optim) a resume may change; any other change of a field
    # that changes the result is refused (see olivine_train.config.drift)
    allow_changes: list[str] = field(default_factory=list)
    # a new run (no run.resume) into a folder holding last.pt is refused; true: the old folder
    # is moved aside to <name>.old-<UTC time> (never deleted) and the run starts in a new one
    overwrite: bool = False
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
    # [height, width] of the rendered camera images (the convention of data.image_size)
    image_size: list[int] = field(default_factory=lambda: [112, 200])
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
