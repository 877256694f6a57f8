"""One nuScenes camera tuple for the readers, the synthetic world and the package root."""

from __future__ import annotations

import olivine_data
from olivine_data.datasets import nuscenes
from olivine_data.synthetic import SyntheticWorldConfig, sensors


def test_one_camera_tuple_everywhere() -> None:
    cams = olivine_data.NUSCENES_CAMERAS
    assert cams == (
        "CAM_FRONT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK_RIGHT",
        "CAM_BACK",
        "CAM_BACK_LEFT",
        "CAM_FRONT_LEFT",
    )
    assert nuscenes.NUSCENES_CAMERAS is cams and sensors.NUSCENES_CAMERAS is cams
    assert SyntheticWorldConfig().cameras is cams
    assert set(sensors.NUSCENES_CALIBRATION) == {"LIDAR_TOP", *cams}
