"""Procedural road-network patches: ground zones, buildings, vegetation, objects, ego trajectory.

Each scene lives in its own *scene frame*: the main road runs along +x, z = 0 is the ground, the ego
drives in the lane at y = -1.75 m. A random yaw and translation place the scene frame in the global
frame of the nuScenes export. The layout is a pure function of ``(seed, scene index)``.

Imbalance comes from the layout itself: road, buildings and vegetation cover most surfaces; cars
are frequent, trucks less, buses, trailers, motorcycles, bicycles, construction vehicles and
traffic cones rare; many same-class pairs come from rows of parked cars, trees and buildings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from olivine_data.synthetic.geometry import GroundZone, Primitive
from olivine_data.synthetic.materials import MATERIAL_ID
from olivine_data.synthetic.objects import SceneBuilder, SceneObject

__all__ = ["SceneObject", "EgoTrajectory", "SceneLayout", "make_layout", "KEYFRAME_INTERVAL_S"]

#: nuScenes keyframes are at 2 Hz.
KEYFRAME_INTERVAL_S = 0.5
EGO_LANE_Y = -1.75
LANE_WIDTH = 3.5

M = MATERIAL_ID


@dataclass(frozen=True)
class EgoTrajectory:
    """Ego motion in the scene frame: constant speed along x with a gentle lateral weave."""

    speed: float
    amplitude: float
    period: float
    phase: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego at time ``t`` [s] since the scene start."""
        w = 2.0 * math.pi / self.period
        x = self.speed * t
        y = EGO_LANE_Y + self.amplitude * math.sin(w * t + self.phase)
        yaw = math.atan2(self.amplitude * w * math.cos(w * t + self.phase), self.speed)
        return x, y, yaw


@dataclass(frozen=True)
class SceneLayout:
    """One scene: geometry in the scene frame, ego trajectory and placement in the global frame."""

    index: int
    primitives: tuple[Primitive, ...]
    zones: tuple[GroundZone, ...]
    default_material: int
    objects: tuple[SceneObject, ...]
    trajectory: EgoTrajectory
    global_yaw: float
    global_translation: tuple[float, float]
    start_us: int
    road_half_width: float

    def scene_to_global(self) -> np.ndarray:
        """4x4 transform scene frame -> global frame."""
        c, s = math.cos(self.global_yaw), math.sin(self.global_yaw)
        t = np.eye(4)
        t[:2, :2] = [[c, -s], [s, c]]
        t[:2, 3] = self.global_translation
        return t


@dataclass(frozen=True)
class _Road:
    """The road network of one scene, shared by the layout steps (scene frame, metres)."""

    rng: np.random.Generator
    lanes_per_side: int
    rh: float  # half width of the main road
    sw: float  # sidewalk width
    x_lo: float  # extent along the main road that the ego sees
    x_hi: float
    crosses: list[tuple[float, float]]  # cross streets: (centre x, half width)
    corridors: list[tuple[float, float]]  # x ranges kept free around the cross streets


def _in_corridor(x0: float, x1: float, corridors: list[tuple[float, float]]) -> bool:
    return any(x1 > lo and x0 < hi for lo, hi in corridors)


def _ground_zones(road: _Road) -> list[GroundZone]:
    """Ground zones, painted in order: lots, sidewalks, roads, lane lines, zebra crossings."""
    rng = road.rng
    far = 400.0
    zones: list[GroundZone] = []
    for side in (1, -1):  # parking lots / paved yards (other_flat)
        x = road.x_lo + float(rng.uniform(0, 40))
        while x < road.x_hi:
            lot_len = float(rng.uniform(15, 35))
            if rng.random() < 0.5 and not _in_corridor(x, x + lot_len, road.corridors):
                depth = float(rng.uniform(6, 12))
                y0 = road.rh + road.sw + 1.0
                ys = (y0, y0 + depth) if side > 0 else (-y0 - depth, -y0)
                zones.append(GroundZone(M["other_flat"], x, x + lot_len, ys[0], ys[1]))
            x += lot_len + float(rng.uniform(10, 40))
    for c, w in road.crosses:
        zones.append(GroundZone(M["sidewalk"], c - w - road.sw, c + w + road.sw, -far, far))
    zones.append(
        GroundZone(M["sidewalk"], -far * 2, far * 2, -road.rh - road.sw, road.rh + road.sw)
    )
    for c, w in road.crosses:
        zones.append(GroundZone(M["road"], c - w, c + w, -far, far))
    zones.append(GroundZone(M["road"], -far * 2, far * 2, -road.rh, road.rh))
    for k in range(-road.lanes_per_side + 1, road.lanes_per_side):  # lane lines along x
        y = k * LANE_WIDTH
        zones.append(
            GroundZone(
                M["lane_marking"], -far * 2, far * 2, y - 0.08, y + 0.08, 1, 6.0, 3.0 if k else 6.0
            )
        )
    for side in (1, -1):  # edge lines
        y = side * (road.rh - 0.3)
        zones.append(GroundZone(M["lane_marking"], -far * 2, far * 2, y - 0.07, y + 0.07))
    for c, w in road.crosses:  # zebra crossings across the main road
        zones.append(
            GroundZone(M["lane_marking"], c + w + 0.5, c + w + 3.5, -road.rh, road.rh, 2, 1.0, 0.5)
        )
    return zones


def _buildings(b: SceneBuilder, road: _Road, zones: list[GroundZone]) -> None:
    """Buildings and vegetation blocks along the main road and the cross streets."""
    rng = road.rng
    for side in (1, -1):
        setback = road.rh + road.sw + float(rng.uniform(3.0, 10.0))
        x = road.x_lo - 60.0
        while x < road.x_hi + 60.0:
            blen = float(rng.uniform(10.0, 35.0))
            if _in_corridor(x, x + blen, road.corridors):
                x += 4.0
                continue
            lot_depth = max(
                [
                    z.ymax - z.ymin
                    for z in zones
                    if z.material == M["other_flat"]
                    and (z.ymin > 0) == (side > 0)
                    and z.xmax > x
                    and z.xmin < x + blen
                ]
                + [0.0]
            )
            if rng.random() < 0.7:
                depth = float(rng.uniform(8.0, 20.0))
                height = float(np.clip(rng.lognormal(math.log(10.0), 0.5), 4.0, 40.0))
                y = side * (setback + lot_depth + depth / 2 + float(rng.uniform(0, 3)))
                shade = float(rng.uniform(0.6, 1.4))
                b.box(
                    M["building"],
                    b.new_instance(),
                    (x + blen / 2, y, height / 2),
                    (blen / 2, depth / 2, height / 2),
                    float(rng.normal(0, 0.02)),
                    (
                        shade * float(rng.uniform(0.9, 1.1)),
                        shade,
                        shade * float(rng.uniform(0.85, 1.1)),
                    ),
                )
            else:
                for _ in range(int(rng.integers(2, 6))):
                    b.bush(
                        x + float(rng.uniform(0, blen)),
                        side * (setback + lot_depth + float(rng.uniform(0.5, 6.0))),
                    )
                for _ in range(int(rng.integers(1, 4))):
                    b.tree(
                        x + float(rng.uniform(0, blen)),
                        side * (setback + lot_depth + float(rng.uniform(2.0, 10.0))),
                    )
            x += blen + float(rng.uniform(1.0, 8.0))
    for c, w in road.crosses:
        for side_x in (1, -1):
            for side_y in (1, -1):
                y = road.rh + road.sw + float(rng.uniform(4.0, 10.0))
                while y < 110.0:
                    blen = float(rng.uniform(10.0, 30.0))
                    depth = float(rng.uniform(8.0, 16.0))
                    height = float(np.clip(rng.lognormal(math.log(9.0), 0.5), 4.0, 35.0))
                    bx = c + side_x * (w + road.sw + float(rng.uniform(3.0, 8.0)) + depth / 2)
                    by = side_y * (y + blen / 2)
                    shade = float(rng.uniform(0.6, 1.4))
                    b.box(
                        M["building"],
                        b.new_instance(),
                        (bx, by, height / 2),
                        (depth / 2, blen / 2, height / 2),
                        0.0,
                        (shade, shade, shade),
                    )
                    y += blen + float(rng.uniform(2.0, 10.0))


def _verge(b: SceneBuilder, road: _Road) -> None:
    """Trees, poles and bushes on the verge."""
    rng = road.rng
    for side in (1, -1):
        x = road.x_lo + float(rng.uniform(0, 10))
        while x < road.x_hi:
            if not _in_corridor(x - 2, x + 2, road.corridors) and rng.random() < 0.85:
                b.tree(x, side * (road.rh + road.sw + float(rng.uniform(0.8, 2.5))))
            x += float(rng.uniform(6.0, 13.0))
        x = road.x_lo + float(rng.uniform(0, 20))
        while x < road.x_hi:
            if not _in_corridor(x - 1, x + 1, road.corridors):
                b.prims.append(
                    Primitive(
                        "frustum",
                        (x, side * (road.rh + 0.5), 0.0),
                        (0.12, 0.08, float(rng.uniform(6.0, 8.0))),
                        0.0,
                        M["pole"],
                        b.new_instance(),
                        (1.0, 1.0, 1.0),
                    )
                )
            x += float(rng.uniform(25.0, 40.0))
        for _ in range(int(rng.integers(8, 20))):  # bushes in the terrain strip
            x = float(rng.uniform(road.x_lo, road.x_hi))
            if not _in_corridor(x - 2, x + 2, road.corridors):
                b.bush(x, side * (road.rh + road.sw + float(rng.uniform(1.0, 3.0))))


def _vehicles(b: SceneBuilder, road: _Road, zones: list[GroundZone]) -> None:
    """Parked cars, trucks, buses and motorcycles, stopped traffic, cars in the lots."""
    rng = road.rng
    curb_lanes = [(1, road.rh - 1.2)]
    if road.lanes_per_side >= 2:
        curb_lanes.append((-1, road.rh - 1.2))
    for side, offset in curb_lanes:
        y = side * offset
        x = road.x_lo + float(rng.uniform(0, 8))
        while x < road.x_hi:
            gap = float(rng.uniform(0.8, 3.0))
            if _in_corridor(x - 6, x + 6, road.corridors) or rng.random() < 0.6:
                x += 6.0 + gap
                continue
            yaw = 0.0 if side < 0 else math.pi
            yaw += float(rng.normal(0, 0.03))
            draw = rng.random()
            if draw < 0.80:
                b.car(x + 2.4, y, yaw)
                x += 4.9 + gap
            elif draw < 0.91:
                used = b.truck(x + 4.5, y, yaw, with_trailer=bool(rng.random() < 0.3))
                x += used + gap + 1.0
            elif draw < 0.94:
                b.bus(x + 6.5, y, yaw)
                x += 13.0 + gap
            elif draw < 0.97:
                b.two_wheeler(x + 1.0, y + side * 0.6, motor=True)
                x += 2.5 + gap
            else:
                x += 8.0
    if road.lanes_per_side >= 2:  # stopped traffic in the inner oncoming lane
        x = road.x_lo + float(rng.uniform(0, 30))
        while x < road.x_hi:
            if not _in_corridor(x - 6, x + 6, road.corridors) and rng.random() < 0.3:
                b.car(
                    x,
                    LANE_WIDTH / 2 + float(rng.normal(0, 0.15)),
                    math.pi + float(rng.normal(0, 0.03)),
                )
            x += float(rng.uniform(6.0, 25.0))
    for lot in [z for z in zones if z.material == M["other_flat"]]:  # cars parked in lots
        for xs in np.arange(lot.xmin + 1.5, lot.xmax - 1.5, 2.8):
            if rng.random() < 0.6:
                b.car(
                    float(xs), (lot.ymin + lot.ymax) / 2, math.pi / 2 + float(rng.normal(0, 0.05))
                )


def _people_and_works(b: SceneBuilder, road: _Road) -> None:
    """Pedestrians, bicycles, a construction site, cones and barriers."""
    rng = road.rng
    for side in (1, -1):
        x = road.x_lo
        while x < road.x_hi:
            x += float(rng.exponential(9.0))
            group = 1 + int(rng.poisson(0.6))
            for g in range(group):
                b.pedestrian(x + 0.7 * g, side * (road.rh + float(rng.uniform(0.6, road.sw - 0.4))))
        for _ in range(int(rng.poisson(1.5))):
            b.two_wheeler(
                float(rng.uniform(road.x_lo, road.x_hi)),
                side * (road.rh + road.sw - 0.35),
                motor=False,
            )
    if rng.random() < 0.6:  # a construction site on the verge of the left side
        cx = float(rng.uniform(road.x_lo + 40, road.x_hi - 20))
        y0 = road.rh + road.sw + 1.2
        for k in range(int(rng.integers(3, 7))):
            b.barrier(cx + 2.2 * k, y0, 0.0)
        for k in range(int(rng.integers(2, 6))):
            b.cone(cx - 1.5 - 1.5 * k, road.rh - 0.6)
        b.construction_vehicle(cx + 6.0, y0 + 4.5, float(rng.uniform(-0.3, 0.3)))
    for _ in range(int(rng.poisson(2.0))):
        b.cone(
            float(rng.uniform(road.x_lo, road.x_hi)), float(rng.choice([-1, 1])) * (road.rh + 0.35)
        )


def make_layout(seed: int, index: int, samples: int) -> SceneLayout:
    """Generate scene ``index`` of the world with master ``seed`` and ``samples`` keyframes."""
    rng = np.random.default_rng([seed, index, 11])
    b = SceneBuilder(rng)
    lanes_per_side = int(rng.choice([1, 2, 2]))
    rh = LANE_WIDTH * lanes_per_side  # road half width
    sw = float(rng.uniform(2.0, 4.0))  # sidewalk width
    speed = float(rng.uniform(4.0, 9.0))
    traj = EgoTrajectory(
        speed,
        float(rng.uniform(0.0, 0.4)),
        float(rng.uniform(8.0, 20.0)),
        float(rng.uniform(0, 2 * math.pi)),
    )
    length = speed * KEYFRAME_INTERVAL_S * max(samples - 1, 0)
    x_lo, x_hi = -100.0, length + 100.0

    # -- cross streets ---------------------------------------------------------------------------
    crosses: list[tuple[float, float]] = []  # (centre x, half width)
    xc = x_lo + float(rng.uniform(30.0, 90.0))
    while xc < x_hi - 20:
        crosses.append((xc, float(rng.uniform(3.5, 5.5))))
        xc += float(rng.uniform(80.0, 150.0))
    corridors = [(c - w - sw - 3.0, c + w + sw + 3.0) for c, w in crosses]
    road = _Road(rng, lanes_per_side, rh, sw, x_lo, x_hi, crosses, corridors)
    zones = _ground_zones(road)
    _buildings(b, road, zones)
    _verge(b, road)
    _vehicles(b, road, zones)
    _people_and_works(b, road)

    start_us = 1_533_000_000_000_000 + (seed % 1000) * 86_400_000_000 + index * 3_600_000_000
    return SceneLayout(
        index=index,
        primitives=tuple(b.prims),
        zones=tuple(zones),
        default_material=M["terrain"],
        objects=tuple(b.objects),
        trajectory=traj,
        global_yaw=float(rng.uniform(-math.pi, math.pi)),
        global_translation=(float(rng.uniform(300, 2000)), float(rng.uniform(300, 2000))),
        start_us=int(start_us),
        road_half_width=rh,
    )
