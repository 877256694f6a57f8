"""Seedable augmentations on typed samples (numpy in, same type out).

Cloud transforms (PretrainSample and SegSample):
    :func:`rotation_z` (uniform angle in [0, 2 pi)), :func:`flip_axes` (x and y each negated with
    probability 0.5).
Mixed transforms (PretrainSample, reference order):
    :func:`drop_cuboids`: remove the points inside one cuboid centred on a random point, half
    extent ``U(0, 0.2) * cloud extent / 2``; the drop is kept only if every image keeps at least
    ``min(min_pairs, its pairs before)`` pairs, else the sample is returned unchanged (one draw,
    as the reference).
    :func:`random_resized_crop`: per image, torchvision ``RandomResizedCrop`` parameters
    (scale 0.3-1, ratio 14/9-17/9), resized to 224x416 (bilinear, ``align_corners=False``,
    no antialias). A crop is accepted when it keeps more than ``min_pairs`` (1024) pairs or more
    than 75% of the image's pairs. **Deviation:** the reference retries forever (SLidR issue #3);
    here after ``max_tries`` (default 20) the full image is used (a plain resize).
    :func:`flip_horizontal`: per image with probability 0.5, columns mirrored.
    :func:`resize_images` / :class:`ResizeImages`: validation resize (no randomness).

Pixel mapping for crop/resize: ``row' = floor((row - top) * out_h / h)``,
``col' = floor((col - left) * out_w / w)`` (pairs outside the crop are dropped, with their labels).

Randomness: every function takes a ``numpy.random.Generator``. The composite
:class:`PretrainAugmentation` / :class:`SegAugmentation` own one, created lazily per process so that
DataLoader workers do not share a stream: with ``seed=None`` from OS entropy, with an int seed from
``(seed, worker id)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import TypeVar

import numpy as np
import torch

from olivine_data.types import PretrainSample, SegSample

__all__ = [
    "rotation_z",
    "flip_axes",
    "drop_cuboids",
    "random_resized_crop",
    "flip_horizontal",
    "resize_images",
    "ResizeImages",
    "PretrainAugmentation",
    "SegAugmentation",
    "DEFAULT_IMAGE_SIZE",
]

DEFAULT_IMAGE_SIZE = (224, 416)

S = TypeVar("S", PretrainSample, SegSample)


def _with_xyz(sample: S, xyz: np.ndarray) -> S:
    pts = sample.points.copy()
    pts[:, :3] = xyz.astype(np.float32)
    return replace(sample, points=pts)


def rotation_z(sample: S, rng: np.random.Generator, angle: float | None = None) -> S:
    """Rotate the cloud about z by ``angle`` (radians; default uniform in [0, 2 pi))."""
    a = rng.uniform(0.0, 2.0 * math.pi) if angle is None else float(angle)
    c, s = math.cos(a), math.sin(a)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return _with_xyz(sample, sample.points[:, :3].astype(np.float64) @ rot.T)


def flip_axes(sample: S, rng: np.random.Generator, p: float = 0.5) -> S:
    """Negate x with probability ``p`` and, independently, y with probability ``p``."""
    flips = rng.random(2) < p
    if not flips.any():
        return sample
    sign = np.array([-1.0 if flips[0] else 1.0, -1.0 if flips[1] else 1.0, 1.0])
    return _with_xyz(sample, sample.points[:, :3] * sign)


def _pairs_per_image(sample: PretrainSample, keep: np.ndarray | None = None) -> np.ndarray:
    cams = sample.pair_pixels[:, 0] if keep is None else sample.pair_pixels[keep, 0]
    return np.bincount(cams, minlength=sample.images.shape[0])


def _select_pairs(sample: PretrainSample, keep: np.ndarray, pixels: np.ndarray) -> dict:
    return {
        "pair_points": sample.pair_points[keep],
        "pair_pixels": pixels[keep],
        "pair_labels": None if sample.pair_labels is None else sample.pair_labels[keep],
    }


def drop_cuboids(
    sample: PretrainSample,
    rng: np.random.Generator,
    max_fraction: float = 0.2,
    min_pairs: int = 1024,
) -> PretrainSample:
    """Drop the points in one random cuboid (see the module docstring)."""
    pts = sample.points
    n = pts.shape[0]
    if n == 0:
        return sample
    xyz = pts[:, :3]
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    half = extent * rng.uniform(0.0, max_fraction) / 2.0
    centre = xyz[rng.integers(n)]
    inside = ((xyz > centre - half) & (xyz < centre + half)).all(axis=1)
    keep_pts = ~inside
    keep_pairs = keep_pts[sample.pair_points]
    before = _pairs_per_image(sample)
    after = _pairs_per_image(sample, keep_pairs)
    if (after < np.minimum(before, min_pairs)).any():
        return sample
    new_index = np.cumsum(keep_pts) - 1  # old point index -> new point index
    sel = _select_pairs(sample, keep_pairs, sample.pair_pixels)
    sel["pair_points"] = new_index[sel["pair_points"]].astype(np.int64)
    return replace(
        sample,
        points=pts[keep_pts],
        point_labels=None if sample.point_labels is None else sample.point_labels[keep_pts],
        **sel,
    )


def _crop_params(
    h: int,
    w: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params`` with a numpy generator."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(
        t, size=size, mode="bilinear", align_corners=False, antialias=False
    )
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _apply_crops(
    sample: PretrainSample, boxes: list[tuple[int, int, int, int]], size: tuple[int, int]
) -> PretrainSample:
    """Crop image c to ``boxes[c] = (top, left, h, w)``, resize to ``size``, remap pairs."""
    out_h, out_w = size
    box = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    cam, row, col = sample.pair_pixels.T
    top, left, bh, bw = (box[cam, k] for k in range(4))
    keep = (row >= top) & (row < top + bh) & (col >= left) & (col < left + bw)
    new_row = np.floor((row - top) * (out_h / bh)).astype(np.int64)
    new_col = np.floor((col - left) * (out_w / bw)).astype(np.int64)
    pixels = np.stack([cam, np.minimum(new_row, out_h - 1), np.minimum(new_col, out_w - 1)], 1)
    images = np.stack(
        [
            _resize(sample.images[c, t : t + hh, lf : lf + ww], size)
            for c, (t, lf, hh, ww) in enumerate(boxes)
        ]
    )
    return replace(sample, images=images, **_select_pairs(sample, keep, pixels))


def random_resized_crop(
    sample: PretrainSample,
    rng: np.random.Generator,
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (14.0 / 9.0, 17.0 / 9.0),
    min_pairs: int = 1024,
    min_kept_fraction: float = 0.75,
    max_tries: int = 20,
) -> PretrainSample:
    """Random resized crop of every image (see the module docstring)."""
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    n_cam, h, w = sample.images.shape[:3]
    cam, row, col = sample.pair_pixels.T
    boxes = []
    for c in range(n_cam):  # loop over cameras (6), vectorised over pairs
        mine = cam == c
        r, cc = row[mine], col[mine]
        total = int(mine.sum())
        chosen = (0, 0, h, w)  # fallback after max_tries: the full image
        for _ in range(max_tries):
            t, lf, bh, bw = _crop_params(h, w, rng, scale, ratio)
            kept = int(((r >= t) & (r < t + bh) & (cc >= lf) & (cc < lf + bw)).sum())
            if kept > min_pairs or (total > 0 and kept / total > min_kept_fraction):
                chosen = (t, lf, bh, bw)
                break
        boxes.append(chosen)
    return _apply_crops(sample, boxes, size)


def flip_horizontal(
    sample: PretrainSample, rng: np.random.Generator, p: float = 0.5
) -> PretrainSample:
    """Mirror each image with probability ``p`` (and the column of its pairs)."""
    flip = rng.random(sample.images.shape[0]) < p
    if not flip.any():
        return sample
    images = sample.images.copy()
    images[flip] = images[flip][:, :, ::-1]
    w = images.shape[2]
    pixels = sample.pair_pixels.copy()
    sel = flip[pixels[:, 0]]
    pixels[sel, 2] = w - 1 - pixels[sel, 2]
    return replace(sample, images=images, pair_pixels=pixels)


def resize_images(
    sample: PretrainSample, size: tuple[int, int] = DEFAULT_IMAGE_SIZE
) -> PretrainSample:
    """Resize every image to ``size`` (validation); pairs follow."""
    n_cam, h, w = sample.images.shape[:3]
    return _apply_crops(sample, [(0, 0, h, w)] * n_cam, size)


class ResizeImages:
    """Callable validation transform: ``ResizeImages(224, 416)(sample)``."""

    def __init__(self, height: int = DEFAULT_IMAGE_SIZE[0], width: int = DEFAULT_IMAGE_SIZE[1]):
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {height}x{width}")
        self.size = (int(height), int(width))

    def __call__(self, sample: PretrainSample) -> PretrainSample:
        return resize_images(sample, self.size)


class _Seeded:
    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._owner: tuple[int, int] | None = None

    @property
    def rng(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        owner = (os.getpid(), -1 if info is None else info.id)
        if self._rng is None or self._owner != owner:
            entropy = None if self.seed is None else [self.seed, owner[1] + 1]
            self._rng = np.random.default_rng(entropy)
            self._owner = owner
        return self._rng


class SegAugmentation(_Seeded):
    """Downstream cloud augmentation: rotation about z and x/y flips."""

    def __init__(self, rotation: bool = True, flips: bool = True, seed: int | None = None):
        super().__init__(seed)
        self.rotation = rotation
        self.flips = flips

    def __call__(self, sample: S, rng: np.random.Generator | None = None) -> S:
        g = rng if rng is not None else self.rng
        if self.rotation:
            sample = rotation_z(sample, g)
        if self.flips:
            sample = flip_axes(sample, g)
        return sample


class PretrainAugmentation(_Seeded):
    """Pretraining augmentation in reference order: rotation, flips, drop cuboids, resized crop,
    horizontal flip. Every image comes out at ``size`` (224x416 by default).
    """

    def __init__(
        self,
        rotation: bool = True,
        flips: bool = True,
        drop: bool = True,
        crop: bool = True,
        hflip: bool = True,
        size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        min_pairs: int = 1024,
        max_crop_tries: int = 20,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        self.rotation, self.flips, self.drop, self.crop, self.hflip = (
            rotation,
            flips,
            drop,
            crop,
            hflip,
        )
        self.size = (int(size[0]), int(size[1]))
        self.min_pairs = int(min_pairs)
        self.max_crop_tries = int(max_crop_tries)

    def __call__(
        self, sample: PretrainSample, rng: np.random.Generator | None = None
    ) -> PretrainSample:
        g = rng if rng is not None else self.rng
        if self.rotation:
            sample = rotation_z(sample, g)
        if self.flips:
            sample = flip_axes(sample, g)
        if self.drop:
            sample = drop_cuboids(sample, g, min_pairs=self.min_pairs)
        if self.crop:
            sample = random_resized_crop(
                sample, g, self.size, min_pairs=self.min_pairs, max_tries=self.max_crop_tries
            )
        else:
            sample = resize_images(sample, self.size)
        if self.hflip:
            sample = flip_horizontal(sample, g)
        return sample
