"""Configuration of the synthetic driving world."""

from __future__ import annotations

from dataclasses import dataclass, field

from olivine_data.cameras import NUSCENES_CAMERAS

__all__ = ["SyntheticWorldConfig"]


@dataclass(frozen=True)
class SyntheticWorldConfig:
    """Everything that determines a synthetic world; equal configs give byte-identical exports.

    scenes              number of scenes (each a separate road patch, log and nuScenes scene)
    samples_per_scene   keyframes per scene (2 Hz, the ego drives along the road)
    seed                master seed; every scene/sensor draws from ``(seed, scene, ...)`` streams
    image_size          (width, height) of the rendered camera images; the real nuScenes
                        intrinsics (1600x900) are scaled to it
    vfm_noise           fraction of labelled pixels whose VFM label differs from the ground truth,
                        in [0, 1] (0 = perfect labels)
    val_fraction        fraction of scenes put in the ``val`` split (at least one scene stays in
                        train; at least one goes to val when ``scenes >= 2`` and the fraction > 0)
    lidar_beams         number of LiDAR beams (HDL-32E: 32, -30.67 to +10.67 degrees)
    lidar_azimuth_steps firings per revolution (1084 as in the real nuScenes sweeps);
                        with the default scene about 25-35k points per sweep
    lidar_max_range     maximum LiDAR range [m]
    lidar_range_noise   standard deviation of the range noise [m] at 0 m (grows by 0.1 % of range)
    lidar_dropout       base probability that a return is lost (grows with range and low
                        reflectivity)
    camera_max_range    rays longer than this show the sky (fog blends towards it before)
    cameras             camera channels to render (subset of the 6 nuScenes cameras)
    version             nuScenes version folder name written by the export
    jpeg_quality        JPEG quality of the camera images
    """

    scenes: int = 4
    samples_per_scene: int = 8
    seed: int = 0
    image_size: tuple[int, int] = (400, 225)
    vfm_noise: float = 0.2
    val_fraction: float = 0.25
    lidar_beams: int = 32
    lidar_azimuth_steps: int = 1084
    lidar_max_range: float = 70.0
    lidar_range_noise: float = 0.02
    lidar_dropout: float = 0.02
    camera_max_range: float = 150.0
    cameras: tuple[str, ...] = field(default=NUSCENES_CAMERAS)
    version: str = "v1.0-mini"
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        problems = []
        for name in ("scenes", "samples_per_scene", "lidar_beams", "lidar_azimuth_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name}: expected a positive int, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"seed: expected a non-negative int, got {self.seed!r}")
        if len(self.image_size) != 2 or not all(
            isinstance(v, int) and v >= 16 for v in self.image_size
        ):
            problems.append(
                f"image_size: expected (width, height) ints >= 16, got {self.image_size!r}"
            )
        if not 0.0 <= self.vfm_noise <= 1.0:
            problems.append(f"vfm_noise: expected a rate in [0, 1], got {self.vfm_noise!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append(f"val_fraction: expected a value in [0, 1), got {self.val_fraction!r}")
        for name in ("lidar_max_range", "camera_max_range"):
            if not getattr(self, name) > 1.0:
                problems.append(f"{name}: expected > 1 m, got {getattr(self, name)!r}")
        if self.lidar_range_noise < 0:
            problems.append(f"lidar_range_noise: expected >= 0, got {self.lidar_range_noise!r}")
        if not 0.0 <= self.lidar_dropout < 1.0:
            problems.append(f"lidar_dropout: expected a rate in [0, 1), got {self.lidar_dropout!r}")
        unknown = [c for c in self.cameras if c not in NUSCENES_CAMERAS]
        if unknown or not self.cameras or len(set(self.cameras)) != len(self.cameras):
            problems.append(
                f"cameras: expected distinct names among {NUSCENES_CAMERAS}, got {self.cameras!r}"
            )
        if not self.version or "/" in self.version:
            problems.append(
                f"version: expected a folder name like 'v1.0-mini', got {self.version!r}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality: expected 1..100, got {self.jpeg_quality!r}")
        if problems:
            raise ValueError("invalid SyntheticWorldConfig: " + "; ".join(problems))

    @property
    def num_val_scenes(self) -> int:
        """Number of scenes in the ``val`` split."""
        if self.scenes < 2 or self.val_fraction == 0:
            return 0
        return min(self.scenes - 1, max(1, round(self.scenes * self.val_fraction)))
