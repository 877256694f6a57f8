"""The synthetic world: scene layouts, ego poses and keyframe rendering (LiDAR + cameras)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.layout import KEYFRAME_INTERVAL_S, SceneLayout, make_layout
from olivine_data.synthetic.materials import SEEM17_UNLABELLED, material_lookup
from olivine_data.synthetic.render import (
    Bounds,
    camera_rays,
    camera_windows,
    cast,
    lidar_rays,
    lidar_returns,
    lidar_windows,
    render_image,
)
from olivine_data.synthetic.sensors import (
    CAMERA_TIME_OFFSETS_US,
    HDL32E_ELEVATION_DEG,
    KITTI_P2,
    KITTI_TR,
    KITTI_VELODYNE_HEIGHT,
    NUSCENES_CALIBRATION,
    quaternion_to_matrix,
    scaled_intrinsics,
)
from olivine_data.synthetic.vfm import corrupt_labels

__all__ = [
    "World",
    "Keyframe",
    "LidarFrame",
    "CameraFrame",
    "generate_world",
    "sensor_to_ego",
    "KITTI_ELEVATION_DEG",
]

_SEEM = material_lookup("seem")
#: HDL-64E vertical field of view used for the SemanticKITTI export [deg].
KITTI_ELEVATION_DEG: tuple[float, float] = (-24.8, 2.0)


def sensor_to_ego(channel: str) -> np.ndarray:
    """4x4 sensor -> ego transform of a nuScenes channel (real calibration)."""
    calib = NUSCENES_CALIBRATION[channel]
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(calib.rotation)
    t[:3, 3] = calib.translation
    return t


@dataclass(frozen=True)
class LidarFrame:
    """One LiDAR sweep.

    points    (N, 5) float32 x, y, z [m] in the sensor frame, intensity [0, 255], ring
    material  (N,) int64 material id per point (see ``materials``)
    instance  (N,) int64 instance id per point
    ego_pose  4x4 ego -> global at ``timestamp_us``
    """

    timestamp_us: int
    ego_pose: np.ndarray
    sensor_to_ego: np.ndarray
    points: np.ndarray
    material: np.ndarray
    instance: np.ndarray

    @property
    def lidarseg(self) -> np.ndarray:
        """(N,) uint8 nuScenes-lidarseg 32-class indices."""
        return material_lookup("lidarseg")[self.material].astype(np.uint8)


@dataclass(frozen=True)
class CameraFrame:
    """One camera image with its ground-truth and VFM label maps (SEEM17 ids, uint8)."""

    channel: str
    timestamp_us: int
    ego_pose: np.ndarray
    sensor_to_ego: np.ndarray
    intrinsic: np.ndarray
    image: np.ndarray
    gt_labels: np.ndarray
    vfm_labels: np.ndarray
    instance: np.ndarray


@dataclass(frozen=True)
class Keyframe:
    """A LiDAR sweep and its camera images (one nuScenes sample)."""

    scene: int
    index: int
    lidar: LidarFrame
    cameras: tuple[CameraFrame, ...]


class World:
    """A deterministic synthetic world; layouts are built eagerly, sensors rendered on demand."""

    def __init__(self, config: SyntheticWorldConfig) -> None:
        self.config = config
        self.layouts: tuple[SceneLayout, ...] = tuple(
            make_layout(config.seed, i, config.samples_per_scene) for i in range(config.scenes)
        )
        self.noise_table = (np.random.default_rng([config.seed, 99]).random(4096) * 2 - 1).astype(
            np.float32
        )
        self.bounds: tuple[Bounds, ...] = tuple(Bounds.of(layout) for layout in self.layouts)

    # -- names and splits ------------------------------------------------------------------------
    def scene_name(self, scene: int) -> str:
        """nuScenes scene name, e.g. ``synth-s0-0003``."""
        return f"synth-s{self.config.seed}-{scene:04d}"

    @cached_property
    def splits(self) -> dict[str, list[str]]:
        """Scene-level split: the last ``num_val_scenes`` scenes (in a seeded order) are ``val``."""
        order = np.random.default_rng([self.config.seed, 5]).permutation(self.config.scenes)
        n_val = self.config.num_val_scenes
        val = sorted(int(i) for i in order[:n_val])
        train = sorted(int(i) for i in order[n_val:])
        return {
            "train": [self.scene_name(i) for i in train],
            "val": [self.scene_name(i) for i in val],
        }

    # -- poses -----------------------------------------------------------------------------------
    def lidar_timestamp(self, scene: int, sample: int) -> int:
        """LiDAR timestamp [us] of keyframe ``sample`` (2 Hz with a few ms of jitter)."""
        layout = self.layouts[scene]
        jitter = int(
            np.random.default_rng([self.config.seed, scene, sample, 3]).integers(-2000, 2000)
        )
        return layout.start_us + 50_000 + int(sample * KEYFRAME_INTERVAL_S * 1e6) + jitter

    def ego_to_scene(self, scene: int, timestamp_us: int) -> np.ndarray:
        """4x4 ego -> scene frame at ``timestamp_us``."""
        layout = self.layouts[scene]
        x, y, yaw = layout.trajectory.pose((timestamp_us - layout.start_us - 50_000) / 1e6)
        c, s = math.cos(yaw), math.sin(yaw)
        t = np.eye(4)
        t[:2, :2] = [[c, -s], [s, c]]
        t[:2, 3] = (x, y)
        return t

    def ego_pose(self, scene: int, timestamp_us: int) -> np.ndarray:
        """4x4 ego -> global at ``timestamp_us``."""
        return self.layouts[scene].scene_to_global() @ self.ego_to_scene(scene, timestamp_us)

    # -- rendering -------------------------------------------------------------------------------
    def render_lidar(
        self,
        scene: int,
        timestamp_us: int,
        to_ego: np.ndarray,
        elevation_deg: tuple[float, float] = HDL32E_ELEVATION_DEG,
        beams: int | None = None,
        stream: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sweep of the LiDAR mounted at ``to_ego``.

        Returns (points (N, 5) in the sensor frame, material (N,), instance (N,)).
        """
        cfg = self.config
        layout = self.layouts[scene]
        n_beams = beams or cfg.lidar_beams
        s2scene = self.ego_to_scene(scene, timestamp_us) @ to_ego
        scene2s = np.linalg.inv(s2scene)
        elev = np.radians(np.linspace(elevation_deg[0], elevation_deg[1], n_beams))
        n_az = cfg.lidar_azimuth_steps
        az0 = -math.pi
        az = az0 + np.arange(n_az) * (2 * math.pi / n_az)
        dirs = lidar_rays(elev, az, s2scene)
        origin = s2scene[:3, 3]
        windows = lidar_windows(self.bounds[scene], scene2s, elev, az0, n_az, cfg.lidar_max_range)
        hits = cast(layout, origin, dirs, cfg.lidar_max_range, windows)
        rng = np.random.default_rng([cfg.seed, scene, timestamp_us, 1, stream])
        pts, intensity, ring, mat, inst = lidar_returns(
            hits,
            origin,
            dirs,
            rng,
            cfg.lidar_range_noise,
            cfg.lidar_dropout,
            cfg.lidar_max_range,
            self.noise_table,
        )
        local = (pts.astype(np.float64) - origin) @ s2scene[:3, :3]
        cloud = np.concatenate(
            [local.astype(np.float32), intensity[:, None], ring[:, None].astype(np.float32)], axis=1
        )
        return cloud, mat, inst

    def render_camera(
        self,
        scene: int,
        timestamp_us: int,
        to_ego: np.ndarray,
        k: np.ndarray,
        size: tuple[int, int],
        stream: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8, ground-truth SEEM17 map, VFM map and instance map of a camera."""
        cfg = self.config
        layout = self.layouts[scene]
        c2scene = self.ego_to_scene(scene, timestamp_us) @ to_ego
        scene2c = np.linalg.inv(c2scene)
        dirs = camera_rays(k, c2scene, size)
        origin = c2scene[:3, 3]
        windows = camera_windows(self.bounds[scene], scene2c, k, size, cfg.camera_max_range)
        hits = cast(layout, origin, dirs, cfg.camera_max_range, windows)
        rng = np.random.default_rng([cfg.seed, scene, timestamp_us, 2, stream])
        image = render_image(hits, dirs, rng, self.noise_table, cfg.camera_max_range)
        gt = _SEEM[hits.material]
        vfm = corrupt_labels(gt, hits.instance, cfg.vfm_noise, rng)
        return image, gt.astype(np.uint8), vfm, hits.instance

    def render_keyframe(self, scene: int, sample: int) -> Keyframe:
        """Render keyframe ``sample`` of ``scene``: the LiDAR sweep and all configured cameras."""
        cfg = self.config
        if not 0 <= scene < cfg.scenes or not 0 <= sample < cfg.samples_per_scene:
            raise ValueError(
                f"scene/sample: expected < ({cfg.scenes}, {cfg.samples_per_scene}), "
                f"got ({scene}, {sample})"
            )
        t_lidar = self.lidar_timestamp(scene, sample)
        l2e = sensor_to_ego("LIDAR_TOP")
        cloud, mat, inst = self.render_lidar(scene, t_lidar, l2e)
        lidar = LidarFrame(t_lidar, self.ego_pose(scene, t_lidar), l2e, cloud, mat, inst)
        cams = []
        for ci, channel in enumerate(cfg.cameras):
            t_cam = t_lidar + CAMERA_TIME_OFFSETS_US[channel]
            c2e = sensor_to_ego(channel)
            k = scaled_intrinsics(channel, cfg.image_size)
            image, gt, vfm, inst_map = self.render_camera(
                scene, t_cam, c2e, k, cfg.image_size, stream=ci
            )
            cams.append(
                CameraFrame(
                    channel, t_cam, self.ego_pose(scene, t_cam), c2e, k, image, gt, vfm, inst_map
                )
            )
        return Keyframe(scene, sample, lidar, tuple(cams))

    def keyframes(self) -> Iterator[Keyframe]:
        """All keyframes, scene by scene."""
        for s in range(self.config.scenes):
            for k in range(self.config.samples_per_scene):
                yield self.render_keyframe(s, k)

    # -- KITTI rig -------------------------------------------------------------------------------
    def kitti_rig(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """(velodyne -> ego, camera-2 -> ego, image_2 intrinsics K2, image size) for the
        SemanticKITTI export; P2/Tr are the real sequence-07 values, K2 scaled to the width of
        ``image_size``.
        """
        velo2ego = np.eye(4)
        velo2ego[2, 3] = KITTI_VELODYNE_HEIGHT
        tr = np.eye(4)
        tr[:3] = KITTI_TR
        k_full = KITTI_P2[:, :3]
        t2 = np.linalg.solve(k_full, KITTI_P2[:, 3])  # camera 2 = camera 0 shifted by t2
        cam2_from_cam0 = np.eye(4)
        cam2_from_cam0[:3, 3] = t2
        cam2_to_ego = velo2ego @ np.linalg.inv(tr) @ np.linalg.inv(cam2_from_cam0)
        width = self.config.image_size[0]
        height = max(16, int(round(width * 376 / 1241)))
        scale = width / 1241.0
        k2 = np.diag([scale, height / 376.0, 1.0]) @ k_full
        return velo2ego, cam2_to_ego, k2, (width, height)


def generate_world(config: SyntheticWorldConfig) -> World:
    """Build the world for ``config`` (layouts only; sensors are rendered on demand)."""
    return World(config)


def seem_labels_of_points(material: np.ndarray) -> np.ndarray:
    """SEEM17 ground-truth ids (N,) of LiDAR point materials (background for none)."""
    out = _SEEM[material]
    return np.where(material > 0, out, SEEM17_UNLABELLED)
