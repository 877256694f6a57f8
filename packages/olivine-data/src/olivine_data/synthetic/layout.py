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

__all__ = ["SceneObject", "EgoTrajectory", "SceneLayout", "make_layout", "KEYFRAME_INTERVAL_S"]

#: nuScenes keyframes are at 2 Hz.
KEYFRAME_INTERVAL_S = 0.5
EGO_LANE_Y = -1.75
LANE_WIDTH = 3.5

M = MATERIAL_ID

_CAR_COLOURS = np.array(
    [
        [1.8, 1.8, 1.8],
        [0.15, 0.15, 0.16],
        [1.3, 1.32, 1.35],
        [1.5, 0.25, 0.2],
        [0.3, 0.5, 1.3],
        [0.9, 0.9, 0.92],
        [0.6, 0.8, 0.6],
        [1.4, 1.2, 0.6],
    ]
)


@dataclass(frozen=True)
class SceneObject:
    """An annotated object (one nuScenes ``instance``; static over the scene).

    center  box centre in the scene frame [m]; size (width, length, height) as nuScenes; yaw [rad]
    """

    instance: int
    category: str
    material: int
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    attribute: str


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


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.prims: list[Primitive] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def box(
        self,
        material: int,
        inst: int,
        center: tuple[float, float, float],
        half: tuple[float, float, float],
        yaw: float = 0.0,
        tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.prims.append(Primitive("box", center, half, yaw, material, inst, tint))

    def annotate(
        self,
        inst: int,
        category: str,
        material: int,
        x: float,
        y: float,
        z0: float,
        width: float,
        length: float,
        height: float,
        yaw: float,
        attribute: str,
    ) -> None:
        self.objects.append(
            SceneObject(
                inst,
                category,
                material,
                (x, y, z0 + height / 2),
                (width, length, height),
                yaw,
                attribute,
            )
        )

    def tint(self, spread: float = 0.15) -> tuple[float, float, float]:
        v = 1.0 + self.rng.uniform(-spread, spread, 3)
        return (float(v[0]), float(v[1]), float(v[2]))

    # -- objects ---------------------------------------------------------------------------------
    def vehicle_part(
        self,
        material: int,
        inst: int,
        x: float,
        y: float,
        yaw: float,
        offset: float,
        length: float,
        width: float,
        z0: float,
        z1: float,
        tint: tuple[float, float, float],
    ) -> None:
        cx, cy = x + offset * math.cos(yaw), y + offset * math.sin(yaw)
        self.box(
            material,
            inst,
            (cx, cy, (z0 + z1) / 2),
            (length / 2, width / 2, (z1 - z0) / 2),
            yaw,
            tint,
        )

    def car(self, x: float, y: float, yaw: float) -> None:
        rng = self.rng
        inst = self.new_instance()
        length, width, height = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.7)
        colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] * rng.uniform(0.9, 1.1)
        tint = (float(colour[0]), float(colour[1]), float(colour[2]))
        z_belt = 0.2 + 0.55 * height
        self.vehicle_part(M["car"], inst, x, y, yaw, 0.0, length, width, 0.2, z_belt, tint)
        self.vehicle_part(
            M["car"],
            inst,
            x,
            y,
            yaw,
            -0.08 * length,
            0.5 * length,
            0.86 * width,
            z_belt,
            height,
            (tint[0] * 0.6, tint[1] * 0.6, tint[2] * 0.7),
        )
        self.annotate(
            inst, "vehicle.car", M["car"], x, y, 0.0, width, length, height, yaw, "vehicle.parked"
        )

    def truck(self, x: float, y: float, yaw: float, with_trailer: bool) -> float:
        """Place a truck (and trailer behind it); returns the total length used."""
        rng = self.rng
        inst = self.new_instance()
        length, width, height = rng.uniform(5.5, 8.5), rng.uniform(2.3, 2.5), rng.uniform(2.8, 3.6)
        tint = self.tint(0.35)
        cab = 1.9
        self.vehicle_part(
            M["truck"], inst, x, y, yaw, length / 2 - cab / 2, cab, width, 0.4, 2.7, tint
        )
        self.vehicle_part(
            M["truck"],
            inst,
            x,
            y,
            yaw,
            -cab / 2 - 0.1,
            length - cab - 0.2,
            width,
            0.9,
            height,
            self.tint(0.2),
        )
        self.annotate(
            inst,
            "vehicle.truck",
            M["truck"],
            x,
            y,
            0.0,
            width,
            length,
            height,
            yaw,
            "vehicle.parked",
        )
        total = length
        if with_trailer:
            t_inst = self.new_instance()
            t_len = rng.uniform(6.0, 9.0)
            t_h = rng.uniform(3.0, 3.8)
            off = -(length / 2 + 0.6 + t_len / 2)
            tx, ty = x + off * math.cos(yaw), y + off * math.sin(yaw)
            self.vehicle_part(
                M["trailer"], t_inst, tx, ty, yaw, 0.0, t_len, 2.5, 1.0, t_h, self.tint(0.2)
            )
            self.annotate(
                t_inst,
                "vehicle.trailer",
                M["trailer"],
                tx,
                ty,
                0.0,
                2.5,
                t_len,
                t_h,
                yaw,
                "vehicle.parked",
            )
            total += 0.6 + t_len
        return total

    def bus(self, x: float, y: float, yaw: float) -> None:
        rng = self.rng
        inst = self.new_instance()
        length, height = rng.uniform(10.0, 12.5), rng.uniform(3.0, 3.4)
        tint = self.tint(0.4)
        self.vehicle_part(M["bus"], inst, x, y, yaw, 0.0, length, 2.55, 0.3, height, tint)
        self.annotate(
            inst,
            "vehicle.bus.rigid",
            M["bus"],
            x,
            y,
            0.0,
            2.55,
            length,
            height,
            yaw,
            "vehicle.stopped",
        )

    def two_wheeler(self, x: float, y: float, motor: bool) -> None:
        inst = self.new_instance()
        mat = M["motorcycle"] if motor else M["bicycle"]
        tint = self.tint(0.5)
        length = 2.0 if motor else 1.7
        if motor:
            self.box(mat, inst, (x, y, 0.6), (length / 2 - 0.3, 0.3, 0.3), 0.0, tint)
        else:
            self.box(mat, inst, (x, y, 0.7), (0.5, 0.04, 0.2), 0.0, tint)
        for dx in (-length / 2 + 0.35, length / 2 - 0.35):
            self.prims.append(
                Primitive(
                    "ellipsoid",
                    (x + dx, y, 0.35),
                    (0.34, 0.05, 0.34),
                    0.0,
                    mat,
                    inst,
                    (0.5, 0.5, 0.5),
                )
            )
        category = "vehicle.motorcycle" if motor else "vehicle.bicycle"
        self.annotate(
            inst,
            category,
            mat,
            x,
            y,
            0.0,
            0.7 if motor else 0.6,
            length,
            1.2 if motor else 1.1,
            0.0,
            "cycle.without_rider",
        )

    def pedestrian(self, x: float, y: float) -> None:
        rng = self.rng
        inst = self.new_instance()
        h = rng.uniform(1.3, 1.55)
        clothes = rng.uniform(0.3, 1.9, 3)
        self.prims.append(
            Primitive(
                "frustum",
                (x, y, 0.0),
                (0.14, 0.22, h),
                0.0,
                M["pedestrian"],
                inst,
                (float(clothes[0]), float(clothes[1]), float(clothes[2])),
            )
        )
        self.prims.append(
            Primitive(
                "ellipsoid",
                (x, y, h + 0.13),
                (0.1, 0.1, 0.13),
                0.0,
                M["pedestrian"],
                inst,
                (1.6, 1.25, 1.0),
            )
        )
        self.annotate(
            inst,
            "human.pedestrian.adult",
            M["pedestrian"],
            x,
            y,
            0.0,
            0.6,
            0.6,
            h + 0.26,
            0.0,
            "pedestrian.standing",
        )

    def cone(self, x: float, y: float) -> None:
        inst = self.new_instance()
        self.prims.append(
            Primitive(
                "frustum",
                (x, y, 0.0),
                (0.2, 0.03, 0.75),
                0.0,
                M["traffic_cone"],
                inst,
                self.tint(0.1),
            )
        )
        self.annotate(
            inst,
            "movable_object.trafficcone",
            M["traffic_cone"],
            x,
            y,
            0.0,
            0.4,
            0.4,
            0.75,
            0.0,
            "",
        )

    def barrier(self, x: float, y: float, yaw: float) -> None:
        inst = self.new_instance()
        self.box(M["barrier"], inst, (x, y, 0.5), (1.0, 0.25, 0.5), yaw, self.tint(0.1))
        self.annotate(
            inst, "movable_object.barrier", M["barrier"], x, y, 0.0, 0.5, 2.0, 1.0, yaw, ""
        )

    def construction_vehicle(self, x: float, y: float, yaw: float) -> None:
        inst = self.new_instance()
        mat = M["construction_vehicle"]
        tint = self.tint(0.1)
        self.vehicle_part(mat, inst, x, y, yaw, 0.0, 5.5, 2.6, 0.5, 2.0, tint)
        self.vehicle_part(mat, inst, x, y, yaw, -1.0, 2.0, 2.0, 2.0, 3.4, tint)
        self.vehicle_part(mat, inst, x, y, yaw, 2.6, 1.6, 0.5, 1.5, 2.6, (0.5, 0.5, 0.5))
        self.annotate(
            inst, "vehicle.construction", mat, x, y, 0.0, 2.6, 7.0, 3.4, yaw, "vehicle.parked"
        )

    def tree(self, x: float, y: float) -> None:
        rng = self.rng
        inst = self.new_instance()
        trunk_h = rng.uniform(1.8, 3.5)
        self.prims.append(
            Primitive(
                "frustum",
                (x, y, 0.0),
                (rng.uniform(0.15, 0.3), 0.12, trunk_h),
                0.0,
                M["trunk"],
                inst,
                self.tint(0.2),
            )
        )
        a = rng.uniform(1.4, 3.2)
        c = rng.uniform(1.5, 3.2)
        self.prims.append(
            Primitive(
                "ellipsoid",
                (x, y, trunk_h + 0.7 * c),
                (a, a * rng.uniform(0.8, 1.2), c),
                0.0,
                M["foliage"],
                inst,
                self.tint(0.25),
            )
        )

    def bush(self, x: float, y: float) -> None:
        rng = self.rng
        r = rng.uniform(0.6, 1.4)
        self.prims.append(
            Primitive(
                "ellipsoid",
                (x, y, r * 0.5),
                (r, r * rng.uniform(0.7, 1.3), r * 0.8),
                0.0,
                M["foliage"],
                self.new_instance(),
                self.tint(0.3),
            )
        )


def _in_corridor(x0: float, x1: float, corridors: list[tuple[float, float]]) -> bool:
    return any(x1 > lo and x0 < hi for lo, hi in corridors)


def make_layout(seed: int, index: int, samples: int) -> SceneLayout:
    """Generate scene ``index`` of the world with master ``seed`` and ``samples`` keyframes."""
    rng = np.random.default_rng([seed, index, 11])
    b = _Builder(rng)
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
    far = 400.0

    # -- cross streets ---------------------------------------------------------------------------
    crosses: list[tuple[float, float]] = []  # (centre x, half width)
    xc = x_lo + float(rng.uniform(30.0, 90.0))
    while xc < x_hi - 20:
        crosses.append((xc, float(rng.uniform(3.5, 5.5))))
        xc += float(rng.uniform(80.0, 150.0))
    corridors = [(c - w - sw - 3.0, c + w + sw + 3.0) for c, w in crosses]

    # -- ground zones, painted in order ----------------------------------------------------------
    zones: list[GroundZone] = []
    for side in (1, -1):  # parking lots / paved yards (other_flat)
        x = x_lo + float(rng.uniform(0, 40))
        while x < x_hi:
            lot_len = float(rng.uniform(15, 35))
            if rng.random() < 0.5 and not _in_corridor(x, x + lot_len, corridors):
                depth = float(rng.uniform(6, 12))
                y0 = rh + sw + 1.0
                ys = (y0, y0 + depth) if side > 0 else (-y0 - depth, -y0)
                zones.append(GroundZone(M["other_flat"], x, x + lot_len, ys[0], ys[1]))
            x += lot_len + float(rng.uniform(10, 40))
    for c, w in crosses:
        zones.append(GroundZone(M["sidewalk"], c - w - sw, c + w + sw, -far, far))
    zones.append(GroundZone(M["sidewalk"], -far * 2, far * 2, -rh - sw, rh + sw))
    for c, w in crosses:
        zones.append(GroundZone(M["road"], c - w, c + w, -far, far))
    zones.append(GroundZone(M["road"], -far * 2, far * 2, -rh, rh))
    for k in range(-lanes_per_side + 1, lanes_per_side):  # lane lines along x
        y = k * LANE_WIDTH
        zones.append(
            GroundZone(
                M["lane_marking"], -far * 2, far * 2, y - 0.08, y + 0.08, 1, 6.0, 3.0 if k else 6.0
            )
        )
    for side in (1, -1):  # edge lines
        y = side * (rh - 0.3)
        zones.append(GroundZone(M["lane_marking"], -far * 2, far * 2, y - 0.07, y + 0.07))
    for c, w in crosses:  # zebra crossings across the main road
        zones.append(GroundZone(M["lane_marking"], c + w + 0.5, c + w + 3.5, -rh, rh, 2, 1.0, 0.5))

    # -- buildings and vegetation blocks along the main road and the cross streets ---------------
    for side in (1, -1):
        setback = rh + sw + float(rng.uniform(3.0, 10.0))
        x = x_lo - 60.0
        while x < x_hi + 60.0:
            blen = float(rng.uniform(10.0, 35.0))
            if _in_corridor(x, x + blen, corridors):
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
    for c, w in crosses:
        for side_x in (1, -1):
            for side_y in (1, -1):
                y = rh + sw + float(rng.uniform(4.0, 10.0))
                while y < 110.0:
                    blen = float(rng.uniform(10.0, 30.0))
                    depth = float(rng.uniform(8.0, 16.0))
                    height = float(np.clip(rng.lognormal(math.log(9.0), 0.5), 4.0, 35.0))
                    bx = c + side_x * (w + sw + float(rng.uniform(3.0, 8.0)) + depth / 2)
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

    # -- street furniture and vegetation on the verge --------------------------------------------
    for side in (1, -1):
        x = x_lo + float(rng.uniform(0, 10))
        while x < x_hi:
            if not _in_corridor(x - 2, x + 2, corridors) and rng.random() < 0.85:
                b.tree(x, side * (rh + sw + float(rng.uniform(0.8, 2.5))))
            x += float(rng.uniform(6.0, 13.0))
        x = x_lo + float(rng.uniform(0, 20))
        while x < x_hi:
            if not _in_corridor(x - 1, x + 1, corridors):
                b.prims.append(
                    Primitive(
                        "frustum",
                        (x, side * (rh + 0.5), 0.0),
                        (0.12, 0.08, float(rng.uniform(6.0, 8.0))),
                        0.0,
                        M["pole"],
                        b.new_instance(),
                        (1.0, 1.0, 1.0),
                    )
                )
            x += float(rng.uniform(25.0, 40.0))
        for _ in range(int(rng.integers(8, 20))):  # bushes in the terrain strip
            x = float(rng.uniform(x_lo, x_hi))
            if not _in_corridor(x - 2, x + 2, corridors):
                b.bush(x, side * (rh + sw + float(rng.uniform(1.0, 3.0))))

    # -- parked and stopped vehicles -------------------------------------------------------------
    curb_lanes = [(1, rh - 1.2)]
    if lanes_per_side >= 2:
        curb_lanes.append((-1, rh - 1.2))
    for side, offset in curb_lanes:
        y = side * offset
        x = x_lo + float(rng.uniform(0, 8))
        while x < x_hi:
            gap = float(rng.uniform(0.8, 3.0))
            if _in_corridor(x - 6, x + 6, corridors) or rng.random() < 0.6:
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
    if lanes_per_side >= 2:  # stopped traffic in the inner oncoming lane
        x = x_lo + float(rng.uniform(0, 30))
        while x < x_hi:
            if not _in_corridor(x - 6, x + 6, corridors) and rng.random() < 0.3:
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

    # -- people, bicycles, cones, barriers, construction -----------------------------------------
    for side in (1, -1):
        x = x_lo
        while x < x_hi:
            x += float(rng.exponential(9.0))
            group = 1 + int(rng.poisson(0.6))
            for g in range(group):
                b.pedestrian(x + 0.7 * g, side * (rh + float(rng.uniform(0.6, sw - 0.4))))
        for _ in range(int(rng.poisson(1.5))):
            b.two_wheeler(float(rng.uniform(x_lo, x_hi)), side * (rh + sw - 0.35), motor=False)
    if rng.random() < 0.6:  # a construction site on the verge of the left side
        cx = float(rng.uniform(x_lo + 40, x_hi - 20))
        y0 = rh + sw + 1.2
        for k in range(int(rng.integers(3, 7))):
            b.barrier(cx + 2.2 * k, y0, 0.0)
        for k in range(int(rng.integers(2, 6))):
            b.cone(cx - 1.5 - 1.5 * k, rh - 0.6)
        b.construction_vehicle(cx + 6.0, y0 + 4.5, float(rng.uniform(-0.3, 0.3)))
    for _ in range(int(rng.poisson(2.0))):
        b.cone(float(rng.uniform(x_lo, x_hi)), float(rng.choice([-1, 1])) * (rh + 0.35))

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
