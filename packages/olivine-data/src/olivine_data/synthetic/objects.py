"""Object models of the synthetic world: vehicles, people, street furniture and vegetation.

Each model is a few primitives (boxes, frustums, ellipsoids) with the material of its class and,
for annotated classes, a nuScenes-style box (:class:`SceneObject`). Sizes follow the nuScenes
category statistics loosely; everything is drawn from the scene's random generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from olivine_data.synthetic.geometry import Primitive
from olivine_data.synthetic.materials import MATERIAL_ID

__all__ = ["SceneObject", "SceneBuilder"]

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


class SceneBuilder:
    """Collects the primitives and annotated objects of one scene; one method per object model
    (sizes, parts and colours drawn from ``rng``).
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.prims: list[Primitive] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 1

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def shape(
        self,
        kind: str,
        material: int,
        inst: int,
        center: tuple[float, float, float],
        half: tuple[float, float, float],
        tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
        yaw: float = 0.0,
    ) -> None:
        self.prims.append(Primitive(kind, center, half, yaw, material, inst, tint))

    def box(
        self,
        material: int,
        inst: int,
        center: tuple[float, float, float],
        half: tuple[float, float, float],
        yaw: float = 0.0,
        tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        self.shape("box", material, inst, center, half, tint, yaw)

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
        self.shape(
            "frustum",
            M["pedestrian"],
            inst,
            (x, y, 0.0),
            (0.14, 0.22, h),
            (float(clothes[0]), float(clothes[1]), float(clothes[2])),
        )
        self.shape(
            "ellipsoid", M["pedestrian"], inst, (x, y, h + 0.13), (0.1, 0.1, 0.13), (1.6, 1.25, 1.0)
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
        self.shape(
            "frustum", M["traffic_cone"], inst, (x, y, 0.0), (0.2, 0.03, 0.75), self.tint(0.1)
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
        self.shape(
            "frustum",
            M["trunk"],
            inst,
            (x, y, 0.0),
            (rng.uniform(0.15, 0.3), 0.12, trunk_h),
            self.tint(0.2),
        )
        a = rng.uniform(1.4, 3.2)
        c = rng.uniform(1.5, 3.2)
        self.shape(
            "ellipsoid",
            M["foliage"],
            inst,
            (x, y, trunk_h + 0.7 * c),
            (a, a * rng.uniform(0.8, 1.2), c),
            self.tint(0.25),
        )

    def bush(self, x: float, y: float) -> None:
        rng = self.rng
        r = rng.uniform(0.6, 1.4)
        self.shape(
            "ellipsoid",
            M["foliage"],
            self.new_instance(),
            (x, y, r * 0.5),
            (r, r * rng.uniform(0.7, 1.3), r * 0.8),
            self.tint(0.3),
        )
