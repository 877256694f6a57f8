"""Collate typed samples into torch batches (voxelise each sweep, stack, offset indices).

``Collator(mode, voxel_size, feature, range_bin_size)``:
    * each sample is voxelised on its own (:func:`olivine_data.voxelize.voxelize`); coordinates get
      the batch index as first column; ``spatial_shape`` is the per-axis max + 1 over the batch;
    * voxel features come from the voxel's representative (first) point: ``"intensity"``
      (reference, nuScenes), ``"intensity+1"`` (reference, SemanticKITTI) or ``"ones"``;
    * ``voxel_labels`` = label of the representative point (reference downstream rule);
    * pretraining: ``pair_voxels`` = voxel row of the paired point, ``pair_points`` offset into the
      concatenated points, ``pair_pixels[:, 0]`` offset by ``b * C`` (C cameras per sample),
      ``pair_range_bins = floor(sqrt(x^2 + y^2) / range_bin_size)`` from the point's own xy
      (valid in Cartesian mode too; the DCAS density variable, ``range_bin_size`` = 0.1 m by
      default: the reference's quantised cylindrical radius, OLIVINE ``loss_supervise``), images
      ``(B*C, 3, H, W)`` float32 in [0, 1].
``Collator(mode="cartesian_mean", grid=VoxelGrid(...), feature="xyzi")`` (the VoxelNet):
    * each sample is first cut to the grid's range filter (:func:`~olivine_data.voxel_grid.
      crop_to_range`: points, their labels and pairs removed; pairs re-indexed), then voxelised by
      :func:`~olivine_data.voxel_grid.voxelize_mean` (``(z, y, x)`` cells, mean features, caps);
    * ``spatial_shape`` is the grid's fixed ``(z, y, x)`` shape (``(40, 1024, 1024)``);
    * ``point_to_voxel`` / ``pair_voxels`` are ``-1`` for a point in no voxel; ``voxel_drops``
      counts, over the batch, the points removed by the filter (``filtered``) and what the
      voxelisation left out (:class:`~olivine_data.voxel_grid.VoxelDrops`). Nothing is silent.
Every batch carries the concatenated ``points`` ``(N, 4)`` it was built from. Every sample of a
pretraining batch must have the same number of cameras and image size (crop or resize first); a
batch without any pair is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from olivine_data.types import PretrainBatch, PretrainSample, SegBatch, SegSample
from olivine_data.voxel_grid import VOXELNET_NUSCENES_GRID, VoxelDrops, VoxelGrid, crop_to_range
from olivine_data.voxel_grid import voxelize_mean as _voxelize_mean
from olivine_data.voxelize import voxelize

__all__ = ["Collator", "FEATURES", "MODES"]

FEATURES = ("intensity", "intensity+1", "ones", "xyzi")
MODES = ("cylindrical", "cartesian", "cartesian_mean")


class Collator:
    """Build :class:`SegBatch` / :class:`PretrainBatch` from lists of samples."""

    def __init__(
        self,
        mode: str = "cylindrical",
        voxel_size: tuple[float, float, float] = (0.1, 1.0, 0.1),
        feature: str = "intensity",
        range_bin_size: float = 0.1,
        grid: VoxelGrid | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if feature not in FEATURES:
            raise ValueError(f"feature: expected one of {FEATURES}, got {feature!r}")
        if (mode == "cartesian_mean") != (feature == "xyzi"):
            raise ValueError(
                f"feature {feature!r} with mode {mode!r}: the mean of (x, y, z, intensity) "
                "('xyzi') is the feature of mode 'cartesian_mean', and only of it"
            )
        if len(voxel_size) != 3 or min(voxel_size) <= 0:
            raise ValueError(f"voxel_size: expected 3 positive sizes, got {voxel_size!r}")
        if range_bin_size <= 0:
            raise ValueError(f"range_bin_size must be > 0, got {range_bin_size}")
        self.mode = mode
        self.voxel_size = (float(voxel_size[0]), float(voxel_size[1]), float(voxel_size[2]))
        self.feature = feature
        self.range_bin_size = float(range_bin_size)
        self.grid = grid if grid is not None else VOXELNET_NUSCENES_GRID
        if mode == "cartesian_mean":
            self.voxel_size = tuple(float(v) for v in self.grid.voxel_size)  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Collator(mode={self.mode!r}, voxel_size={self.voxel_size}, feature={self.feature!r}, "
            f"range_bin_size={self.range_bin_size:g})"
        )

    def _features(self, points: np.ndarray, rep: np.ndarray) -> np.ndarray:
        if self.feature == "ones":
            return np.ones((rep.shape[0], 1), np.float32)
        f = points[rep, 3:4].astype(np.float32)
        return f + 1.0 if self.feature == "intensity+1" else f

    def _voxels(
        self, samples: Sequence[Any]
    ) -> tuple[dict[str, object], list[np.ndarray], list[Any]]:
        """Voxelise each sample; the batch fields, each sample's point -> voxel rows (``-1``: in
        no voxel) and the samples as voxelised (range-filtered in ``cartesian_mean`` mode).
        """
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        drops: dict[str, int] = {}
        if self.mode == "cartesian_mean":
            cut = [crop_to_range(s, self.grid) for s in samples]
            samples = [c[0] for c in cut]
            means = [_voxelize_mean(s.points, self.grid, what=f"sample {s.token}") for s in samples]
            total = sum((m.drops for m in means), VoxelDrops())
            drops = {"filtered": sum(s.filtered_points for s in samples), **total.as_dict()}
            cells = [m.coords for m in means]
            reps = [m.representative for m in means]
            inverse = [m.point_to_voxel for m in means]
            feat_list = [m.features for m in means]
        else:
            vox = [
                voxelize(s.points[:, :3], self.mode, self.voxel_size, what=f"sample {s.token}")
                for s in samples
            ]
            cells = [v.coords for v in vox]
            reps = [v.representative for v in vox]
            inverse = [v.inverse for v in vox]
            feat_list = [self._features(s.points, v.representative) for s, v in zip(samples, vox)]
        n_pts = [s.points.shape[0] for s in samples]
        point_offsets = np.concatenate([[0], np.cumsum(n_pts)]).astype(np.int64)
        voxel_offsets = np.concatenate([[0], np.cumsum([len(c) for c in cells])]).astype(np.int64)
        coords = np.concatenate(
            [
                np.concatenate([np.full((len(c), 1), b, np.int32), c], axis=1)
                for b, c in enumerate(cells)
            ]
        )
        p2v = np.concatenate([_offset(inv, voxel_offsets[b]) for b, inv in enumerate(inverse)])
        if self.mode == "cartesian_mean":
            shape = np.asarray(self.grid.spatial_shape)
        else:
            shape = coords[:, 1:].max(axis=0) + 1 if coords.shape[0] else np.zeros(3, np.int64)
        has_labels = [s.point_labels is not None for s in samples]
        if any(has_labels) and not all(has_labels):
            raise ValueError(
                "some samples have point_labels and some do not: "
                f"{[s.token for s, h in zip(samples, has_labels) if not h]}"
            )
        point_labels = voxel_labels = None
        if all(has_labels):
            pl = [np.asarray(s.point_labels) for s in samples]
            point_labels = torch.from_numpy(np.concatenate(pl))
            voxel_labels = torch.from_numpy(np.concatenate([lab[r] for lab, r in zip(pl, reps)]))
        fields: dict[str, object] = {
            "voxel_coords": torch.from_numpy(coords),
            "voxel_features": torch.from_numpy(np.concatenate(feat_list).astype(np.float32)),
            "spatial_shape": (int(shape[0]), int(shape[1]), int(shape[2])),
            "batch_size": len(samples),
            "point_to_voxel": torch.from_numpy(p2v.astype(np.int64)),
            "point_offsets": torch.from_numpy(point_offsets),
            "voxel_offsets": torch.from_numpy(voxel_offsets),
            "voxel_labels": voxel_labels,
            "point_labels": point_labels,
            "tokens": tuple(s.token for s in samples),
            "points": torch.from_numpy(
                np.concatenate([s.points[:, :4] for s in samples]).astype(np.float32)
            ),
            "voxel_drops": drops,
        }
        return fields, inverse, list(samples)

    def seg(self, samples: Sequence[SegSample | PretrainSample]) -> SegBatch:
        """Collate sweeps (cameras, if any, are ignored)."""
        fields, _, _ = self._voxels(samples)
        return SegBatch(**fields)  # type: ignore[arg-type]

    def pretrain(self, samples: Sequence[PretrainSample]) -> PretrainBatch:
        """Collate pretraining samples (images, pairs, labels)."""
        for s in samples:
            if not isinstance(s, PretrainSample):
                raise TypeError(f"pretrain collate expects PretrainSample, got {type(s).__name__}")
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        shapes = {s.images.shape for s in samples}
        if len(shapes) != 1:
            raise ValueError(
                "all samples of a pretraining batch need the same (cameras, H, W, 3) images "
                f"(crop or resize first), got {[(s.token, s.images.shape) for s in samples]}"
            )
        has = [s.pair_labels is not None for s in samples]
        if any(has) and not all(has):
            raise ValueError(
                "some samples have pair_labels and some do not: "
                f"{[s.token for s, h in zip(samples, has) if not h]}"
            )
        fields, inverse, samples = self._voxels(samples)
        if sum(s.num_pairs for s in samples) == 0:
            raise ValueError(f"no point-pixel pair in the batch {[s.token for s in samples]}")
        n_cam = samples[0].images.shape[0]
        point_offsets = fields["point_offsets"].numpy()  # type: ignore[attr-defined]
        voxel_offsets = fields["voxel_offsets"].numpy()  # type: ignore[attr-defined]
        pair_voxels, pair_points, pair_pixels, ranges = [], [], [], []
        for b, (s, inv) in enumerate(zip(samples, inverse)):
            pair_voxels.append(_offset(inv[s.pair_points], voxel_offsets[b]))
            pair_points.append(s.pair_points + point_offsets[b])
            pix = s.pair_pixels.copy()
            pix[:, 0] += b * n_cam
            pair_pixels.append(pix)
            xy = s.points[s.pair_points, :2].astype(np.float64)
            ranges.append(np.floor(np.hypot(xy[:, 0], xy[:, 1]) / self.range_bin_size))
        images = np.concatenate([s.images for s in samples])
        img_t = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        labels = (
            torch.from_numpy(np.concatenate([s.pair_labels for s in samples]))  # type: ignore[misc]
            if all(has)
            else None
        )
        return PretrainBatch(
            **fields,  # type: ignore[arg-type]
            images=img_t,
            pair_voxels=torch.from_numpy(np.concatenate(pair_voxels).astype(np.int64)),
            pair_points=torch.from_numpy(np.concatenate(pair_points).astype(np.int64)),
            pair_pixels=torch.from_numpy(np.concatenate(pair_pixels).astype(np.int64)),
            pair_labels=labels,
            pair_range_bins=torch.from_numpy(np.concatenate(ranges).astype(np.int64)),
        )


def _offset(rows: np.ndarray, offset: int) -> np.ndarray:
    """Voxel rows shifted by the sample's voxel offset; ``-1`` (in no voxel) stays ``-1``."""
    return np.where(rows >= 0, rows + offset, -1)
