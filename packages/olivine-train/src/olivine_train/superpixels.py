"""Superpixels for the SLidR-style loss, made from VFM label maps.

``vfm_components``: a superpixel is a connected component (4-connectivity) of one class in a
camera's VFM label map (:func:`label_components`). :class:`ComponentSuperpixels` wraps a nuScenes
pretraining dataset and replaces each sample's ``pair_labels`` by the component id of the paired
pixel (unique within the sample: components of camera ``c`` are numbered after those of cameras
``< c``), *before* augmentation, so crops and flips carry the ids along with the pairs. The class
labels are then gone, which is why ``vfm_components`` cannot be combined with ``L_sup`` or the vMF
prior (the config validation says so).

``vfm_labels`` (no wrapper): a superpixel is the set of pairs of one image sharing a VFM class.

``sam``: the SAM superpixels that ``olivine-train make-labels --mode refine`` writes into the label
store (every automatic mask a segment, smaller masks over larger ones, as Seal builds them;
``LabelStore.read_superpixels``). :class:`SamSuperpixels` replaces ``pair_labels`` by the segment
id of the paired pixel (unique within the sample, ``-1`` for pixels no mask covers, which the
loss ignores); like ``vfm_components`` it cannot be combined with ``L_sup`` or the vMF prior.

SLIC superpixels (SLidR's original) can be computed offline, e.g. with scikit-image
``slic(image, n_segments=150, compactness=6)``, and stored as label maps in a separate folder.
"""

from __future__ import annotations

import abc
from dataclasses import replace

import numpy as np
from scipy import ndimage

from olivine_data.datasets import NuScenesPretrainDataset
from olivine_data.labels import LabelStore, pair_superpixel_ids
from olivine_data.types import PretrainSample

__all__ = ["ComponentSuperpixels", "SamSuperpixels", "label_components"]


def label_components(label_map: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of every class of an (H, W) label map.

    Returns (ids, count): ``ids`` (H, W) int64 in ``0..count-1``, one id per 4-connected region
    of equal label (classes numbered in increasing label order).
    """
    if label_map.ndim != 2:
        raise ValueError(f"label_map: expected (H, W), got shape {label_map.shape}")
    ids = np.zeros(label_map.shape, dtype=np.int64)
    offset = 0
    for value in np.unique(label_map):
        mask = label_map == value
        comp, n = ndimage.label(mask)
        ids[mask] = comp[mask] - 1 + offset
        offset += int(n)
    return ids, offset


def _check_base(base: object, source: str) -> tuple[NuScenesPretrainDataset, LabelStore]:
    if not isinstance(base, NuScenesPretrainDataset):
        raise ValueError(
            f"loss.superpixel_source={source!r} needs a nuScenes pretraining dataset "
            f"(got {type(base).__name__}); use 'vfm_labels'"
        )
    if base.label_store is None:
        raise ValueError(f"loss.superpixel_source={source!r} needs a label store (data.label_root)")
    return base, base.label_store


def _image_names(base: NuScenesPretrainDataset, sample: PretrainSample) -> list[tuple[str, str]]:
    """``(camera, image file name)`` of each camera of a nuScenes pretraining sample."""
    nusc = base.nusc
    record = nusc.get("sample", sample.token)
    out = []
    for cam in sample.camera_names:
        filename = nusc.get("sample_data", record["data"][cam])["filename"]
        out.append((cam, filename.rsplit("/", 1)[-1]))
    return out


class _SuperpixelWrapper(abc.ABC):
    """A nuScenes pretraining dataset whose ``pair_labels`` are replaced by superpixel ids."""

    source = ""

    def __init__(self, base: object) -> None:
        self.base, self.store = _check_base(base, self.source)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> PretrainSample:
        sample = self.base[index]
        h, w = sample.images.shape[1:3]
        names = _image_names(self.base, sample)
        ids = self.pair_ids(names, (h, w), sample.pair_pixels)
        return replace(sample, pair_labels=ids.astype(np.int64))

    @abc.abstractmethod
    def pair_ids(
        self, names: list[tuple[str, str]], shape: tuple[int, int], pixels: np.ndarray
    ) -> np.ndarray:
        """``(P,)`` superpixel id of each pair, unique within the sample."""


class SamSuperpixels(_SuperpixelWrapper):
    """Dataset wrapper: ``pair_labels`` := SAM superpixel id of the paired pixel (``-1``: none)."""

    source = "sam"

    def pair_ids(
        self, names: list[tuple[str, str]], shape: tuple[int, int], pixels: np.ndarray
    ) -> np.ndarray:
        maps = [self.store.read_superpixels(cam, name, expected_shape=shape) for cam, name in names]
        return pair_superpixel_ids(np.stack(maps), pixels)


class ComponentSuperpixels(_SuperpixelWrapper):
    """Dataset wrapper: ``pair_labels`` := connected-component id of the paired pixel."""

    source = "vfm_components"

    def pair_ids(
        self, names: list[tuple[str, str]], shape: tuple[int, int], pixels: np.ndarray
    ) -> np.ndarray:
        per_camera = []
        offset = 0
        for cam, name in names:
            ids, count = label_components(self.store.read(cam, name, expected_shape=shape))
            per_camera.append(ids + offset)
            offset += count
        cam, row, col = pixels.T
        return np.stack(per_camera)[cam, row, col]  # type: ignore[no-any-return]
