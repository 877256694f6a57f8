"""Sensor rig of the synthetic world: real nuScenes and KITTI calibrations, written as constants.

The nuScenes numbers are the ``calibrated_sensor`` records of scene-0061 (nuScenes v1.0-mini,
vehicle n015, ``v1.0-mini/calibrated_sensor.json``, as shipped in mmdetection3d's demo data):
translation [m] and rotation quaternion (w, x, y, z) of sensor -> ego, and the camera intrinsics
at 1600x900. The camera time offsets relative to the LiDAR timestamp are those of the same sample
(``sample_data.json``): the cameras fire while the LiDAR sweeps past them.

The KITTI numbers are the odometry calibration of sequence 07 (KITTI odometry
``sequences/07/calib.txt``): P2 and Tr (velodyne -> rectified camera 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olivine_data.cameras import NUSCENES_CAMERAS

__all__ = [
    "NUSCENES_CAMERAS",
    "SensorCalibration",
    "NUSCENES_CALIBRATION",
    "NUSCENES_IMAGE_SIZE",
    "CAMERA_TIME_OFFSETS_US",
    "HDL32E_ELEVATION_DEG",
    "KITTI_P2",
    "KITTI_TR",
    "KITTI_IMAGE_SIZE",
    "KITTI_VELODYNE_HEIGHT",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "scaled_intrinsics",
]

#: Resolution the nuScenes intrinsics refer to (width, height).
NUSCENES_IMAGE_SIZE: tuple[int, int] = (1600, 900)

#: HDL-32E vertical field of view (first / last beam elevation) [deg].
HDL32E_ELEVATION_DEG: tuple[float, float] = (-30.67, 10.67)


@dataclass(frozen=True)
class SensorCalibration:
    """A nuScenes ``calibrated_sensor`` record (sensor -> ego)."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # w, x, y, z
    intrinsic: tuple[tuple[float, float, float], ...] | None = None


NUSCENES_CALIBRATION: dict[str, SensorCalibration] = {
    "LIDAR_TOP": SensorCalibration(
        "LIDAR_TOP",
        (0.943713, 0.0, 1.84023),
        (0.7077955119163518, -0.006492242056004365, 0.010646214713995808, -0.7063073142877817),
    ),
    "CAM_FRONT": SensorCalibration(
        "CAM_FRONT",
        (1.70079118954, 0.0159456324149, 1.51095763913),
        (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49737083824542755),
        (
            (1266.417203046554, 0.0, 816.2670197447984),
            (0.0, 1266.417203046554, 491.50706579294757),
            (0.0, 0.0, 1.0),
        ),
    ),
    "CAM_FRONT_RIGHT": SensorCalibration(
        "CAM_FRONT_RIGHT",
        (1.5508477543, -0.493404796419, 1.49574800619),
        (0.2060347966337182, -0.2026940577919598, 0.6824507824531167, -0.6713610884174485),
        (
            (1260.8474446004698, 0.0, 807.968244525554),
            (0.0, 1260.8474446004698, 495.3344268742088),
            (0.0, 0.0, 1.0),
        ),
    ),
    "CAM_FRONT_LEFT": SensorCalibration(
        "CAM_FRONT_LEFT",
        (1.52387798135, 0.494631336551, 1.50932822144),
        (0.6757265034669446, -0.6736266522251881, 0.21214015046209478, -0.21122827103904068),
        (
            (1272.5979470598488, 0.0, 826.6154927353808),
            (0.0, 1272.5979470598488, 479.75165386361925),
            (0.0, 0.0, 1.0),
        ),
    ),
    "CAM_BACK": SensorCalibration(
        "CAM_BACK",
        (0.0283260309358, 0.00345136761476, 1.57910346144),
        (0.5037872666382278, -0.49740249788611096, -0.4941850223835201, 0.5045496097725578),
        (
            (809.2209905677063, 0.0, 829.2196003259838),
            (0.0, 809.2209905677063, 481.77842384512485),
            (0.0, 0.0, 1.0),
        ),
    ),
    "CAM_BACK_LEFT": SensorCalibration(
        "CAM_BACK_LEFT",
        (1.03569100218, 0.484795032713, 1.59097014818),
        (0.6924185592174665, -0.7031619420114925, -0.11648342771943819, 0.11203317912370753),
        (
            (1256.7414812095406, 0.0, 792.1125740759628),
            (0.0, 1256.7414812095406, 492.7757465151356),
            (0.0, 0.0, 1.0),
        ),
    ),
    "CAM_BACK_RIGHT": SensorCalibration(
        "CAM_BACK_RIGHT",
        (1.0148780988, -0.480568219723, 1.56239545128),
        (0.12280980120078765, -0.132400842670559, -0.7004305821388234, 0.690496031265798),
        (
            (1259.5137405846733, 0.0, 807.2529053838625),
            (0.0, 1259.5137405846733, 501.19579884916527),
            (0.0, 0.0, 1.0),
        ),
    ),
}

#: Camera timestamp minus LiDAR timestamp [microseconds] in scene-0061's first sample.
CAMERA_TIME_OFFSETS_US: dict[str, int] = {
    "CAM_FRONT": -35491,
    "CAM_FRONT_RIGHT": -27612,
    "CAM_BACK_RIGHT": -20058,
    "CAM_BACK": -10426,
    "CAM_BACK_LEFT": -528,
    "CAM_FRONT_LEFT": -43107,
}

#: KITTI odometry sequence 07, P2 (3x4, rectified camera 0 -> image_2 pixels) at 1241x376.
KITTI_P2 = np.array(
    [
        [7.070912e02, 0.0, 6.018873e02, 4.688783e01],
        [0.0, 7.070912e02, 1.831104e02, 1.178601e-01],
        [0.0, 0.0, 1.0, 6.203223e-03],
    ],
    dtype=np.float64,
)
#: KITTI odometry sequence 07, Tr (3x4, velodyne -> rectified camera 0).
KITTI_TR = np.array(
    [
        [-1.857739385241e-03, -9.999659513510e-01, -8.039975204516e-03, -4.784029760483e-03],
        [-6.481465826011e-03, 8.051860151134e-03, -9.999466081774e-01, -7.337429464231e-02],
        [9.999773098287e-01, -1.805528627661e-03, -6.496203536139e-03, -3.339968064433e-01],
    ],
    dtype=np.float64,
)
#: KITTI image_2 size of sequence 07 (width, height).
KITTI_IMAGE_SIZE: tuple[int, int] = (1241, 376)
#: Mounting height of the KITTI Velodyne above the ground [m] (KITTI setup description).
KITTI_VELODYNE_HEIGHT = 1.73


def quaternion_to_matrix(q: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) float64 of a unit quaternion (w, x, y, z); normalises first."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(r: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (w, x, y, z), w >= 0, of a rotation matrix (3, 3)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qa = np.array(q) / np.linalg.norm(q)
    if qa[0] < 0:
        qa = -qa
    return (float(qa[0]), float(qa[1]), float(qa[2]), float(qa[3]))


def scaled_intrinsics(channel: str, image_size: tuple[int, int]) -> np.ndarray:
    """The real 3x3 intrinsics of ``channel`` scaled from 1600x900 to ``image_size`` (w, h)."""
    calib = NUSCENES_CALIBRATION.get(channel)
    if calib is None or calib.intrinsic is None:
        raise ValueError(f"channel: expected one of {NUSCENES_CAMERAS}, got {channel!r}")
    k = np.array(calib.intrinsic, dtype=np.float64)
    sx = image_size[0] / NUSCENES_IMAGE_SIZE[0]
    sy = image_size[1] / NUSCENES_IMAGE_SIZE[1]
    return np.diag([sx, sy, 1.0]) @ k
