"""What pretraining builds besides the loop: the frozen teacher, the trainable network with its
heads, the dataset and its augmentation, and the vMF schedule of a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from olivine_data import datasets, transforms
from olivine_data.types import PretrainSample
from olivine_data.voxel_grid import RangeFilter
from olivine_models import (
    BEVGrid,
    ImageHead,
    PointHead,
    SparseBEVHead,
    VoxelNet,
    create_image_encoder,
    create_point_encoder,
    height_compression,
    sample_bev,
)
from olivine_train.config import Config
from olivine_train.recipes.common import (
    Transform,
    kitti_sequences,
    nuscenes_scenes,
    voxel_grid_of,
)
from olivine_train.recipes.pretrain_outputs import Head, PretrainOutputs
from olivine_train.recipes.pretrain_termset import ActiveTerms

__all__ = [
    "PretrainNet",
    "build_pretrain_net",
    "build_pretrain_dataset",
    "build_pretrain_transform",
    "build_teacher",
    "describe_run",
    "describe_teacher",
    "teacher_features",
]


class PretrainNet(nn.Module):
    """Trainable part of pretraining: 3D backbone + 3D/2D pp and sem heads (the teacher is not
    part of it: it is frozen and not checkpointed).

    A :class:`~olivine_models.VoxelNet` backbone (``point_level``) gets the reference's sparse
    1x1 heads (:class:`~olivine_models.SparseBEVHead`) and its 3D outputs are **per point**: the
    BEV maps (HeightCompression) sampled bilinearly at every point's (x, y) on ``bev_grid``
    (github.com/Eaphan/OLIVINE ``pretrain/lightning_trainer_spconv.py``); the loss terms then index
    them with the pairs' point rows. A MinkUNet's outputs are per voxel.
    """

    def __init__(
        self,
        backbone: nn.Module,
        image_channels: int,
        image_stride: int,
        head_dim: int,
        *,
        pp: bool,
        sem_3d: bool,
        sem_2d: bool,
        bev_grid: BEVGrid | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.point_level = isinstance(backbone, VoxelNet)
        if self.point_level and bev_grid is None:
            raise ValueError("PretrainNet: a VoxelNet backbone needs its bev_grid")
        self.bev_grid = bev_grid
        c3 = int(backbone.out_channels)  # type: ignore[arg-type]
        head = SparseBEVHead if self.point_level else PointHead
        self.point_pp = head(c3, head_dim) if pp else None
        self.image_pp = ImageHead(image_channels, head_dim, upsample=image_stride) if pp else None
        self.point_sem = head(c3, head_dim) if sem_3d else None
        self.image_sem = (
            ImageHead(image_channels, head_dim, upsample=image_stride) if sem_2d else None
        )

    def forward(
        self,
        coords: torch.Tensor,
        feats: torch.Tensor,
        spatial_shape: tuple[int, int, int],
        batch_size: int,
        teacher_feats: torch.Tensor,
        image_size: tuple[int, int],
        pixels: Mapping[Head, torch.Tensor] | None = None,
        points: torch.Tensor | None = None,
        point_offsets: torch.Tensor | None = None,
    ) -> PretrainOutputs:
        """Backbone and 3D head features (per voxel, or per point for a VoxelNet, which needs
        ``points`` ``(N, >=2)`` and ``point_offsets`` ``(B + 1,)``), and the 2D heads' features.

        ``pixels`` (``{Head.PP: (P, 3), Head.SEM_2D: (P', 3)}``, ``[image, row, col]``): each 2D
        head is evaluated at those pixels only (:meth:`olivine_models.ImageHead.sample`), giving
        ``(P, D)`` rows -- what pretraining uses. ``None``: full-resolution ``(B, D, H, W)`` maps
        (inspection, and the reference the sampled path is tested against).
        """
        v = self.backbone(coords, feats, spatial_shape, batch_size)
        if self.point_level:
            if points is None or point_offsets is None:
                raise ValueError("PretrainNet: a VoxelNet needs points and point_offsets")
            counts = point_offsets[1:] - point_offsets[:-1]
            rows = torch.arange(int(batch_size), device=points.device).repeat_interleave(counts)
            grid = cast(BEVGrid, self.bev_grid)  # set whenever point_level (__init__)

            def at_points(x: object) -> torch.Tensor:
                return sample_bev(height_compression(x), points[:, :2], rows, grid)

            k_pp = None if self.point_pp is None else at_points(self.point_pp(v))
            k_sem = None if self.point_sem is None else at_points(self.point_sem(v))
            v = at_points(v)
        else:
            k_pp = None if self.point_pp is None else self.point_pp(v)
            k_sem = None if self.point_sem is None else self.point_sem(v)
        return PretrainOutputs(
            backbone=v,
            k_pp=k_pp,
            q_pp=self._image(Head.PP, teacher_feats, image_size, pixels),
            k_sem=k_sem,
            q_sem=self._image(Head.SEM_2D, teacher_feats, image_size, pixels),
        )

    def _image(
        self,
        head: Head,
        teacher_feats: torch.Tensor,
        image_size: tuple[int, int],
        pixels: Mapping[Head, torch.Tensor] | None,
    ) -> torch.Tensor | None:
        module = self.image_pp if head is Head.PP else self.image_sem
        if module is None:
            return None
        if pixels is None:
            return module(teacher_feats, output_size=image_size)  # type: ignore[no-any-return]
        if head not in pixels:
            return None
        return module.sample(teacher_feats, pixels[head], image_size)  # type: ignore[no-any-return]


def build_pretrain_net(cfg: Config, teacher: nn.Module, heads: frozenset[Head]) -> PretrainNet:
    """The student of ``cfg.model`` with the heads the active terms need (``heads``); a VoxelNet
    samples its BEV maps on the grid of ``data.point_range`` / ``data.voxel_size``.
    """
    backbone = create_point_encoder(
        cfg.model.point_encoder,
        in_channels=cfg.model.in_channels,
        backend=cfg.model.sparse_backend,
    )
    bev = None
    if isinstance(backbone, VoxelNet):
        g = voxel_grid_of(cfg)
        bev = BEVGrid(
            g.point_range[0], g.point_range[1], g.voxel_size[0], g.voxel_size[1], backbone.stride
        )
    return PretrainNet(
        backbone,
        int(teacher.out_channels),  # type: ignore[arg-type]
        int(teacher.stride),  # type: ignore[arg-type]
        cfg.model.head_dim,
        pp=Head.PP in heads,
        sem_3d=Head.SEM_3D in heads,
        sem_2d=Head.SEM_2D in heads,
        bev_grid=bev,
    )


def build_teacher(cfg: Config, device: torch.device) -> nn.Module:
    """The frozen image teacher (eval mode, no gradients) on ``device``."""
    teacher = create_image_encoder(
        cfg.model.image_encoder,
        weights=cfg.model.image_weights,
        pretrained=cfg.model.image_pretrained,
    )
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def describe_teacher(cfg: Config) -> str:
    """One line naming the teacher and where its weights come from (random ones say so)."""
    m = cfg.model
    if m.image_weights is not None:
        source = f"weights {m.image_weights}"
    elif m.image_pretrained:
        source = "pretrained weights"
    else:
        source = "RANDOM init, no pretrained weights"
    return f"{m.image_encoder} ({source}), frozen"


def describe_run(cfg: Config, lr: float, notes: list[str]) -> str:
    """The start-of-run line: teacher, effective lr and the active terms' ``notes`` (the vMF
    schedule: :meth:`.pretrain_termset.TermSet.describe`).
    """
    text = f"teacher: {describe_teacher(cfg)}; lr {lr:g}"
    if cfg.optim.auto_scale_lr:
        text += " (auto-scaled)"
    return "; ".join([text, *notes])


def teacher_features(
    teacher: nn.Module, images: torch.Tensor, input_size: list[int] | None
) -> torch.Tensor:
    """The teacher's features of ``images``, on the grid of the pairing resolution.

    With ``input_size`` (``model.image_input_size``) the teacher sees the images resized to it
    (bilinear) -- a finer stride-s grid for a small pairing resolution -- and its features are
    resampled to the ``(ceil(H/s), ceil(W/s))`` grid of the images' own size ``(H, W)``, which the
    2D heads upsample by ``s`` to the paired pixels. Null: the teacher sees the images as they are.
    """
    h, w = int(images.shape[-2]), int(images.shape[-1])
    if input_size is None or (int(input_size[0]), int(input_size[1])) == (h, w):
        return teacher(images)  # type: ignore[no-any-return]
    size = (int(input_size[0]), int(input_size[1]))
    feats = teacher(F.interpolate(images, size=size, mode="bilinear", align_corners=False))
    stride = int(teacher.stride)  # type: ignore[arg-type]
    grid = (-(-h // stride), -(-w // stride))
    return F.interpolate(feats, size=grid, mode="bilinear", align_corners=False)


def build_pretrain_dataset(
    cfg: Config, split: str = "train", *, labels: bool | None = None
) -> datasets.NuScenesPretrainDataset | datasets.KittiPretrainDataset:
    """The raw (un-augmented) pretraining dataset named by ``cfg.data``, with VFM labels when
    ``labels`` (``None``: when an active loss term reads them, :class:`ActiveTerms`).
    """
    d = cfg.data
    if labels is None:
        labels = ActiveTerms.of(cfg).needs_labels
    label_root = (d.label_root if d.label_root is not None else d.root) if labels else None
    if d.dataset == "nuscenes":
        scenes, named = nuscenes_scenes(cfg, split)
        return datasets.NuScenesPretrainDataset(
            d.root,
            d.version,
            scenes=scenes,
            split=named,
            label_store=label_root,
            vocabulary=d.vocabulary,
            cameras=tuple(d.cameras),
            allow_outside_root=d.allow_outside_root,
        )
    if d.dataset == "kitti":
        return datasets.KittiPretrainDataset(
            d.root,
            sequences=kitti_sequences(cfg, split),
            label_store=label_root,
            vocabulary=d.vocabulary,
            skip=d.skip,
        )
    raise ValueError(
        f"data.dataset: {d.dataset!r} has no cameras; pretraining needs nuscenes/kitti"
    )


def build_pretrain_transform(cfg: Config) -> Transform[PretrainSample]:
    """Seeded augmentation (``transform(sample, generator)``) or the plain resize."""
    h, w = cfg.data.image_size
    if cfg.data.voxel_mode == "cartesian_mean":  # the VoxelNet: range filter first (reference)
        cut = RangeFilter(voxel_grid_of(cfg))
        if cfg.data.augment:
            aug = transforms.PretrainAugmentation(size=(h, w))
            return lambda sample, rng: aug(cut(sample), rng)
        return lambda sample, rng: transforms.resize_images(cut(sample), (h, w))
    if cfg.data.augment:
        return transforms.PretrainAugmentation(size=(h, w))
    resize = transforms.ResizeImages(h, w)
    return lambda sample, rng: resize(sample)
