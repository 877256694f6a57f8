"""Surface materials of the synthetic world and their ids in every label space.

A *material* is what a ray hits. Each one carries its class id in the three label spaces the toolkit
reads (nuScenes-lidarseg 32-class index, SEEM17 VFM vocabulary, raw SemanticKITTI id) and its
appearance (albedo, procedural texture, LiDAR reflectivity). Several materials may share a class in
one space and differ in another (a tree trunk is ``static.vegetation`` in nuScenes but ``trunk`` in
SemanticKITTI; lane paint is ``flat.driveable_surface`` but ``lane-marking``).

Material 0 is ``SKY``: no surface (no LiDAR return, SEEM17 ``background``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from olivine_data.labels import SEEM17

__all__ = [
    "Material",
    "MATERIALS",
    "MATERIAL_ID",
    "NUSCENES_LIDARSEG_CATEGORIES",
    "SEEM17_NAMES",
    "SEEM17_UNLABELLED",
    "material_lookup",
]

#: The 32 nuScenes-lidarseg category names; the list position is the ``index`` in category.json.
NUSCENES_LIDARSEG_CATEGORIES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)

#: SEEM17 class names and unlabelled id (16), those of :data:`olivine_data.labels.SEEM17`.
SEEM17_NAMES: tuple[str, ...] = SEEM17.class_names
SEEM17_UNLABELLED = SEEM17.unlabelled_id


@dataclass(frozen=True)
class Material:
    """One surface type.

    name          short name
    lidarseg      nuScenes-lidarseg 32-class index (``NUSCENES_LIDARSEG_CATEGORIES``)
    seem          SEEM17 id (16 = background)
    kitti         raw SemanticKITTI label id
    albedo        base RGB in [0, 1]
    texture       amplitude of the procedural noise texture (0 = flat colour)
    frequency     spatial frequency of the texture [1/m]
    reflectivity  LiDAR reflectivity in [0, 1] (intensity before incidence/range effects)
    """

    name: str
    lidarseg: int
    seem: int
    kitti: int
    albedo: tuple[float, float, float]
    texture: float
    frequency: float
    reflectivity: float


MATERIALS: tuple[Material, ...] = (
    Material("sky", 0, 16, 0, (0.55, 0.70, 0.90), 0.0, 0.0, 0.0),
    Material("road", 24, 10, 40, (0.30, 0.30, 0.32), 0.25, 2.0, 0.06),
    Material("lane_marking", 24, 10, 60, (0.85, 0.85, 0.80), 0.10, 3.0, 0.55),
    Material("sidewalk", 26, 11, 48, (0.55, 0.53, 0.50), 0.20, 1.5, 0.10),
    Material("terrain", 27, 12, 72, (0.45, 0.50, 0.25), 0.45, 1.2, 0.12),
    Material("other_flat", 25, 15, 44, (0.38, 0.36, 0.36), 0.20, 1.0, 0.08),
    Material("building", 28, 14, 50, (0.60, 0.55, 0.50), 0.25, 0.7, 0.15),
    Material("pole", 28, 14, 80, (0.50, 0.50, 0.52), 0.10, 2.0, 0.30),
    Material("trunk", 30, 13, 71, (0.35, 0.25, 0.15), 0.35, 3.0, 0.10),
    Material("foliage", 30, 13, 70, (0.20, 0.42, 0.15), 0.55, 2.5, 0.20),
    Material("car", 17, 3, 10, (0.50, 0.50, 0.50), 0.08, 1.0, 0.25),
    Material("truck", 23, 4, 18, (0.55, 0.55, 0.55), 0.10, 1.0, 0.25),
    Material("bus", 16, 2, 13, (0.75, 0.30, 0.20), 0.08, 1.0, 0.25),
    Material("trailer", 22, 5, 20, (0.65, 0.65, 0.62), 0.12, 1.0, 0.22),
    Material("construction_vehicle", 18, 7, 20, (0.85, 0.65, 0.10), 0.15, 1.0, 0.25),
    Material("motorcycle", 21, 6, 15, (0.25, 0.25, 0.28), 0.10, 2.0, 0.20),
    Material("bicycle", 14, 1, 11, (0.20, 0.30, 0.55), 0.10, 2.0, 0.18),
    Material("pedestrian", 2, 8, 30, (0.40, 0.32, 0.30), 0.20, 2.0, 0.12),
    Material("barrier", 9, 0, 51, (0.80, 0.80, 0.78), 0.15, 2.0, 0.45),
    Material("traffic_cone", 12, 9, 99, (0.95, 0.45, 0.05), 0.05, 2.0, 0.70),
)

#: Material name -> index in ``MATERIALS``.
MATERIAL_ID: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}


def material_lookup(field: str) -> np.ndarray:
    """Return a lookup array ``material id -> field`` for a ``Material`` attribute.

    ``field`` is one of ``lidarseg``, ``seem``, ``kitti``, ``reflectivity``, ``texture``,
    ``frequency`` (1-D arrays) or ``albedo`` ((M, 3) float32).
    """
    if field == "albedo":
        return np.array([m.albedo for m in MATERIALS], dtype=np.float32)
    if field in ("lidarseg", "seem", "kitti"):
        return np.array([getattr(m, field) for m in MATERIALS], dtype=np.int64)
    if field in ("reflectivity", "texture", "frequency"):
        return np.array([getattr(m, field) for m in MATERIALS], dtype=np.float32)
    raise ValueError(
        f"field: expected one of albedo, lidarseg, seem, kitti, reflectivity, texture, frequency, "
        f"got {field!r}"
    )
