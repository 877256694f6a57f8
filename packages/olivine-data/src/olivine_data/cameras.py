"""The nuScenes camera channels, written once for the readers, the synthetic world and configs."""

from __future__ import annotations

__all__ = ["NUSCENES_CAMERAS"]

#: The 6 nuScenes cameras, in the order OLIVINE's dataloader lists them (github.com/Eaphan/OLIVINE).
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)
