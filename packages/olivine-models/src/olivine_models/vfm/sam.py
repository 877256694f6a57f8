"""Segment-anything based VFM labelers producing per-pixel class maps.

Two modes, those of the OLIVINE reference code (github.com/Eaphan/OLIVINE, ``demo_code``):

* **Grounded-SAM style** (:class:`SamBoxLabeler`): an open-vocabulary detector (any
  :class:`BoxProvider`; GroundingDINO in the reference) gives class-labelled boxes, SAM turns every
  box into a mask (``multimask_output=False``), and masks are painted in increasing confidence so
  the most confident detection wins where masks overlap. Pixels without a mask get
  ``unlabelled_id``. (The reference paints in detection order, "later masks overwrite earlier
  ones"; ordering by confidence is a deliberate, order-independent choice.)
* **SAM refinement** (:class:`SamRefineLabeler`): SAM's automatic masks snap a coarse label map
  (e.g. SEEM output or a projected prediction) to object boundaries: each mask (``vote="masks"``)
  or each SAM superpixel (``vote="superpixels"``, :func:`mask_superpixels`, Seal's construction)
  takes the majority class of the coarse labels it covers. The same masks give the superpixels
  (:meth:`SamRefineLabeler.label_with_superpixels`).

Models: any segment-anything ``Sam`` (Kirillov et al., "Segment Anything", ICCV 2023), including
MobileSAM (``build_sam("vit_t")``, Zhang et al., arXiv 2306.14289) whose official weights load
offline.

Outputs are ``(H, W)`` uint8 arrays containing only vocabulary ids ``0..vocabulary_size-1``. The
labelers know nothing about dataset vocabularies beyond these two integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from olivine_models.vfm.build import SAM_CHECKPOINT_URLS, SAM_VARIANTS, build_sam, build_tiny_sam
from olivine_models.vfm.masks import mask_superpixels, paint_masks, vote_masks, vote_superpixels

__all__ = [
    "SAM_CHECKPOINT_URLS",
    "SAM_VARIANTS",
    "Detection",
    "BoxProvider",
    "FixedBoxProvider",
    "SamBoxLabeler",
    "SamRefineLabeler",
    "build_sam",
    "build_tiny_sam",
    "mask_superpixels",
    "paint_masks",
    "vote_masks",
    "vote_superpixels",
]


@dataclass(frozen=True)
class Detection:
    """One class-labelled box in pixel coordinates of the original image.

    Attributes:
        box_xyxy: ``(x0, y0, x1, y1)`` with ``x0 < x1`` and ``y0 < y1``.
        class_id: vocabulary id painted under the box's mask.
        score: detection confidence; the higher score wins where masks overlap.
    """

    box_xyxy: tuple[float, float, float, float]
    class_id: int
    score: float


@runtime_checkable
class BoxProvider(Protocol):
    """Anything that maps an RGB image (``(H, W, 3)`` uint8) to a list of :class:`Detection`."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


class FixedBoxProvider:
    """Returns the same precomputed detections for every image (tests, offline detector output).

    For per-image precomputed boxes, pass ``detections=`` to :meth:`SamBoxLabeler.label_batch`.
    """

    def __init__(self, detections: Sequence[Detection]) -> None:
        self.detections = list(detections)
        for det in self.detections:
            if not isinstance(det, Detection):
                raise TypeError(
                    f"FixedBoxProvider: expected Detection objects, got {type(det).__name__}"
                )

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return list(self.detections)


def _autocast(device: torch.device) -> AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


def _check_image(image: Any, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: expected an (H, W, 3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise TypeError(f"{where}: expected a uint8 image, got dtype {image.dtype}")
    return image


def _check_vocabulary(owner: str, vocabulary_size: int, unlabelled_id: int) -> None:
    if not 1 <= int(vocabulary_size) <= 256:
        raise ValueError(f"{owner}: vocabulary_size must be in 1..256, got {vocabulary_size}")
    if not 0 <= int(unlabelled_id) < int(vocabulary_size):
        raise ValueError(
            f"{owner}: unlabelled_id must be a vocabulary id in 0..{vocabulary_size - 1}, got "
            f"{unlabelled_id}"
        )


class SamBoxLabeler:
    """Grounded-SAM style labeler: boxes from a :class:`BoxProvider` -> SAM masks -> class map.

    Args:
        sam: a segment-anything ``Sam`` (see :func:`build_sam`); its device is used.
        box_provider: detector called per image when no detections are passed explicitly.
        vocabulary_size: number of vocabulary ids (e.g. 14 for the Grounded-SAM vocabulary).
        unlabelled_id: id painted where no mask lands (0 = background in GSAM14).
        batch_size: images encoded together by SAM's image encoder.
    """

    def __init__(
        self,
        sam: nn.Module,
        box_provider: BoxProvider | None,
        vocabulary_size: int,
        unlabelled_id: int,
        batch_size: int = 4,
    ) -> None:
        _check_vocabulary("SamBoxLabeler", vocabulary_size, unlabelled_id)
        if batch_size < 1:
            raise ValueError(f"SamBoxLabeler: batch_size must be >= 1, got {batch_size}")
        from segment_anything.utils.transforms import ResizeLongestSide

        self.sam: Any = sam
        self.box_provider = box_provider
        self.vocabulary_size = int(vocabulary_size)
        self.unlabelled_id = int(unlabelled_id)
        self.batch_size = int(batch_size)
        encoder: Any = getattr(sam, "image_encoder", None)
        if encoder is None or not hasattr(encoder, "img_size"):
            raise TypeError(
                f"SamBoxLabeler: expected a segment-anything Sam model, got {type(sam).__name__}"
            )
        self.transform = ResizeLongestSide(int(encoder.img_size))

    @property
    def device(self) -> torch.device:
        return next(self.sam.parameters()).device  # type: ignore[no-any-return]

    def _check_detections(self, dets: Sequence[Detection], shape: tuple[int, ...], i: int) -> None:
        for det in dets:
            if not isinstance(det, Detection):
                raise TypeError(
                    f"SamBoxLabeler: image {i}: expected Detection objects, got "
                    f"{type(det).__name__}"
                )
            if not 0 <= int(det.class_id) < self.vocabulary_size:
                raise ValueError(
                    f"SamBoxLabeler: image {i}: detection class_id {det.class_id} is not a "
                    f"vocabulary id (0..{self.vocabulary_size - 1})"
                )
            x0, y0, x1, y1 = det.box_xyxy
            if not (x0 < x1 and y0 < y1) or not np.isfinite([x0, y0, x1, y1]).all():
                raise ValueError(
                    f"SamBoxLabeler: image {i}: box {det.box_xyxy} must be finite with x0 < x1 "
                    f"and y0 < y1 (image is {shape[1]}x{shape[0]} W x H)"
                )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Label one image."""
        return self.label_batch([image])[0]

    def label_batch(
        self,
        images: Sequence[np.ndarray],
        detections: Sequence[Sequence[Detection]] | None = None,
    ) -> list[np.ndarray]:
        """Label several images; ``detections[i]`` (optional) replaces the provider for image i."""
        images = [_check_image(img, f"SamBoxLabeler: image {i}") for i, img in enumerate(images)]
        if detections is None:
            if self.box_provider is None:
                raise ValueError("SamBoxLabeler: no box_provider and no detections given")
            dets = [list(self.box_provider(img)) for img in images]
        else:
            if len(detections) != len(images):
                raise ValueError(
                    f"SamBoxLabeler: {len(images)} images but {len(detections)} detection lists"
                )
            dets = [list(d) for d in detections]
        for i, (img, d) in enumerate(zip(images, dets)):
            self._check_detections(d, img.shape, i)
        outputs = [np.full(img.shape[:2], self.unlabelled_id, dtype=np.uint8) for img in images]
        todo = [i for i, d in enumerate(dets) if d]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            masks = self._predict_masks([images[i] for i in chunk], [dets[i] for i in chunk])
            for i, m in zip(chunk, masks):
                outputs[i] = paint_masks(
                    m,
                    [int(d.class_id) for d in dets[i]],
                    [float(d.score) for d in dets[i]],
                    self.unlabelled_id,
                )
        return outputs

    @torch.no_grad()
    def _predict_masks(
        self, images: list[np.ndarray], dets: list[list[Detection]]
    ) -> list[np.ndarray]:
        sam = self.sam
        device = self.device
        inputs = []
        for img in images:
            resized = self.transform.apply_image(img)
            tensor = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()
            inputs.append(tensor)
        results: list[np.ndarray] = []
        with _autocast(device):
            batch = torch.stack([sam.preprocess(x.float()) for x in inputs], dim=0)
            embeddings = sam.image_encoder(batch)
            for img, x, emb, d in zip(images, inputs, embeddings, dets):
                boxes = torch.tensor(
                    [det.box_xyxy for det in d], dtype=torch.float32, device=device
                )
                boxes = self.transform.apply_boxes_torch(boxes, img.shape[:2])
                sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
                low_res, _ = sam.mask_decoder(
                    image_embeddings=emb.unsqueeze(0),
                    image_pe=sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=False,
                )
                full = sam.postprocess_masks(
                    low_res.float(), input_size=tuple(x.shape[-2:]), original_size=img.shape[:2]
                )
                results.append((full[:, 0] > sam.mask_threshold).cpu().numpy())
        return results


def _resize_to_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """``image`` scaled (bilinear) so that its longest side is at most ``max_side``."""
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _upsample_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D (or leading-batch) array to ``shape`` (H, W)."""
    h, w = array.shape[-2:]
    if (h, w) == tuple(shape):
        return array
    rows = np.minimum((np.arange(shape[0]) + 0.5) * h / shape[0], h - 1).astype(np.int64)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * w / shape[1], w - 1).astype(np.int64)
    return array[..., rows[:, None], cols[None, :]]


class SamRefineLabeler:
    """SAM automatic masks vote the majority class of a coarse label map.

    Args:
        sam: a segment-anything ``Sam``.
        num_classes: vocabulary size; coarse maps must hold ids ``0..num_classes-1``.
        unlabelled_id: the vocabulary's unlabelled id (does not vote by default).
        points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh,
        min_mask_region_area: passed to ``SamAutomaticMaskGenerator`` (defaults are SAM's).
        ignore_unlabelled: unlabelled pixels do not vote.
        vote: ``"masks"`` (:func:`vote_masks`: every mask votes, largest first) or
            ``"superpixels"`` (:func:`vote_superpixels` over :func:`mask_superpixels`).
        max_side: masks are generated on the image scaled so that its longest side is at most
            this (then resized back, nearest); ``None`` keeps the full resolution. The mask
            generator's cost grows with the pixels of every candidate mask, so halving the side
            of a 1600x900 image cuts its time about in half on CPU.
    """

    def __init__(
        self,
        sam: nn.Module,
        num_classes: int,
        unlabelled_id: int,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        min_mask_region_area: int = 0,
        ignore_unlabelled: bool = True,
        vote: str = "masks",
        max_side: int | None = None,
    ) -> None:
        _check_vocabulary("SamRefineLabeler", num_classes, unlabelled_id)
        if vote not in ("masks", "superpixels"):
            raise ValueError(
                f"SamRefineLabeler: vote must be 'masks' or 'superpixels', got {vote!r}"
            )
        if max_side is not None and max_side < 16:
            raise ValueError(f"SamRefineLabeler: max_side must be None or >= 16, got {max_side}")
        if points_per_side < 1:
            raise ValueError(
                f"SamRefineLabeler: points_per_side must be >= 1, got {points_per_side}"
            )
        from segment_anything import SamAutomaticMaskGenerator

        self.sam: Any = sam
        self.num_classes = int(num_classes)
        self.unlabelled_id = int(unlabelled_id)
        self.ignore_unlabelled = bool(ignore_unlabelled)
        self.vote = vote
        self.max_side = max_side
        self.generator = SamAutomaticMaskGenerator(
            sam,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            min_mask_region_area=min_mask_region_area,
        )

    def masks(self, image: np.ndarray) -> list[np.ndarray]:
        """SAM's automatic masks for one image, as boolean ``(H, W)`` arrays (image size)."""
        image = _check_image(image, "SamRefineLabeler: image")
        small = _resize_to_side(image, self.max_side)
        device = next(self.sam.parameters()).device
        with torch.no_grad(), _autocast(device):
            records = self.generator.generate(small)
        masks = [np.asarray(r["segmentation"], dtype=bool) for r in records]
        if small.shape != image.shape and masks:
            masks = list(_upsample_nearest(np.stack(masks), (image.shape[0], image.shape[1])))
        return masks

    def superpixels(self, image: np.ndarray) -> np.ndarray:
        """Seal-style superpixels of one image (:func:`mask_superpixels`), uint16 ``(H, W)``."""
        return mask_superpixels(self.masks(image), (image.shape[0], image.shape[1]))

    def _check_coarse(self, image: np.ndarray, coarse: Any) -> np.ndarray:
        if not isinstance(coarse, np.ndarray) or coarse.shape != image.shape[:2]:
            shape = coarse.shape if isinstance(coarse, np.ndarray) else type(coarse).__name__
            raise ValueError(
                f"SamRefineLabeler: coarse labels must be an array of shape {image.shape[:2]} "
                f"(the image's H, W), got {shape}"
            )
        if not np.issubdtype(coarse.dtype, np.integer):
            raise TypeError(f"SamRefineLabeler: coarse labels must be integers, got {coarse.dtype}")
        if coarse.size and (int(coarse.min()) < 0 or int(coarse.max()) >= self.num_classes):
            raise ValueError(
                f"SamRefineLabeler: coarse labels must be in 0..{self.num_classes - 1}, got "
                f"range {int(coarse.min())}..{int(coarse.max())}"
            )
        return coarse

    def label_with_superpixels(
        self, image: np.ndarray, coarse: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Refined labels (uint8) and superpixels (uint16) of one image, from one mask run."""
        image = _check_image(image, "SamRefineLabeler: image")
        coarse = self._check_coarse(image, coarse)
        masks = self.masks(image)
        superpixels = mask_superpixels(masks, (image.shape[0], image.shape[1]))
        if self.vote == "superpixels":
            refined = vote_superpixels(
                coarse, superpixels, self.num_classes, self.unlabelled_id, self.ignore_unlabelled
            )
        else:
            refined = vote_masks(
                coarse, masks, self.num_classes, self.unlabelled_id, self.ignore_unlabelled
            )
        return refined, superpixels

    def __call__(self, image: np.ndarray, coarse: np.ndarray) -> np.ndarray:
        """Refine one coarse ``(H, W)`` label map with the image's SAM masks."""
        return self.label_with_superpixels(image, coarse)[0]

    def label_batch(
        self, images: Sequence[np.ndarray], coarse: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Refine several images (SAM's automatic generator works image by image)."""
        if len(images) != len(coarse):
            raise ValueError(
                f"SamRefineLabeler: {len(images)} images but {len(coarse)} coarse maps"
            )
        return [self(img, c) for img, c in zip(images, coarse)]
