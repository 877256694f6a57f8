"""Box prompts of ``make-labels --mode box``: a fixed JSON list of 2D boxes (``--boxes-json``) or
the sample's 3D boxes projected into each camera image (``--boxes-3d``: the nuScenes
``sample_annotation`` table or an mmdetection3d info JSON), as
:class:`~olivine_models.vfm.Detection` lists for SAM's box labeler.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from olivine_data.boxes import Box3D, project_box, read_mmdet3d_boxes, read_nuscenes_boxes
from olivine_data.datasets.nuscenes_tables import camera_intrinsic, lidar_to_camera_matrix
from olivine_data.projection import compose_projection
from olivine_models.vfm import Detection
from olivine_train.recipes.label_worklist import ImageItem

if TYPE_CHECKING:  # for the annotation only: the devkit is imported where tables are read
    from nuscenes import NuScenes

__all__ = ["ProjectedBoxes", "read_boxes"]


def read_boxes(path: str | Path, vocabulary_size: int) -> list[Detection]:
    """Detections from a JSON list of ``{"box": [x0, y0, x1, y1], "class_id": k, "score": s}``
    (score optional, default 1.0).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--boxes-json {path}: cannot read ({exc})") from exc
    if not isinstance(raw, list):
        raise ValueError(f"--boxes-json {path}: expected a JSON list, got {type(raw).__name__}")
    out = []
    for i, det in enumerate(raw):
        if not isinstance(det, dict) or "box" not in det or "class_id" not in det:
            raise ValueError(f"--boxes-json {path}: entry {i} needs 'box' and 'class_id': {det}")
        cls = int(det["class_id"])
        if not 0 <= cls < vocabulary_size:
            raise ValueError(
                f"--boxes-json {path}: entry {i} class_id {cls} outside 0..{vocabulary_size - 1}"
            )
        x0, y0, x1, y1 = (float(v) for v in det["box"])
        out.append(Detection((x0, y0, x1, y1), cls, float(det.get("score", 1.0))))
    return out


class ProjectedBoxes:
    """Box prompts of one camera image: the sample's 3D boxes projected into it.

    Args:
        nusc: an opened ``NuScenes``.
        source: ``"annotations"`` (the ``sample_annotation`` table) or the path of an
            mmdetection3d info JSON (:func:`olivine_data.boxes.read_mmdet3d_boxes`).
        class_names: the vocabulary's class names; a box's class id is the index of its name
            (``_`` and spaces equivalent); boxes of classes outside the vocabulary are dropped.
        min_depth: box corners nearer than this are dropped (metres).
    """

    def __init__(
        self, nusc: NuScenes, source: str, class_names: Sequence[str], min_depth: float = 1.0
    ) -> None:
        self.nusc = nusc
        self.source = source
        self.min_depth = float(min_depth)
        self.ids = {n.replace(" ", "_"): i for i, n in enumerate(class_names)}
        self._boxes: dict[str, list[Box3D]] = {}
        if source != "annotations" and not Path(source).is_file():
            raise ValueError(
                f"--boxes-3d {source}: expected 'annotations' or an mmdetection3d info JSON file"
            )

    def boxes(self, sample_token: str) -> list[Box3D]:
        """The sample's 3D boxes in its LIDAR_TOP frame (cached per sample)."""
        if sample_token not in self._boxes:
            if self.source == "annotations":
                found = read_nuscenes_boxes(self.nusc, sample_token)
            else:
                found = read_mmdet3d_boxes(self.source, sample_token)
            self._boxes[sample_token] = found
        return self._boxes[sample_token]

    def __call__(self, item: ImageItem, image_hw: tuple[int, int]) -> list[Detection]:
        """:class:`~olivine_models.vfm.Detection` list of one image (score = 1 / (1 + depth))."""
        if not item.sample_token:
            raise ValueError(f"{item.filename}: no sample token (needed for --boxes-3d)")
        sample = self.nusc.get("sample", item.sample_token)
        lidar_sd = self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        cam_sd = self.nusc.get("sample_data", sample["data"][item.camera])
        proj = compose_projection(
            camera_intrinsic(self.nusc, cam_sd), lidar_to_camera_matrix(self.nusc, lidar_sd, cam_sd)
        )
        dets = []
        for box in self.boxes(item.sample_token):
            cls = self.ids.get(box.name.replace(" ", "_"))
            hit = project_box(box, proj, image_hw, self.min_depth)
            if cls is None or hit is None:
                continue
            xyxy, depth = hit
            dets.append(Detection(xyxy, cls, 1.0 / (1.0 + depth)))
        return dets
