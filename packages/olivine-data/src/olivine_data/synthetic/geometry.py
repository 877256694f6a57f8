"""Analytic primitives and ray intersection, vectorised over rays.

Three primitive kinds cover the synthetic world: yawed boxes (buildings, vehicle bodies,
barriers), vertical frusta (cylinders and cones: trunks, poles, pedestrians, traffic cones) and
axis-aligned ellipsoids (tree crowns, bushes, heads). All rays of one sensor share one origin, so
``intersect`` takes the origin (3,) and directions (N, 3) (unit length) and returns the distance
along each ray (``inf`` on a miss). Normals are evaluated afterwards, only for the rays a
primitive finally owns.

The ground is the plane z = 0; its material is a function of (x, y) given by ``GroundZone``
rectangles painted in order (later zones on top).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Primitive", "GroundZone", "classify_ground", "EPS"]

#: Minimum hit distance [m] (self-intersection guard).
EPS = 1e-3


@dataclass(frozen=True)
class Primitive:
    """One analytic solid.

    kind      "box" | "frustum" | "ellipsoid"
    center    box: centre; frustum: centre of the bottom disc; ellipsoid: centre  (x, y, z) [m]
    size      box: half extents (along its own x, y, z); frustum: (r_bottom, r_top, height);
              ellipsoid: semi-axes (a, b, c)
    yaw       box rotation about +z [rad] (ignored for the other kinds)
    material  index into ``MATERIALS``
    instance  instance id (> 0); parts of one object share it
    tint      RGB multiplier of the material albedo (per-object colour)
    """

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    material: int
    instance: int
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.kind not in ("box", "frustum", "ellipsoid"):
            raise ValueError(f"kind: expected box, frustum or ellipsoid, got {self.kind!r}")
        if min(self.size) < 0 or (self.kind != "frustum" and min(self.size) <= 0):
            raise ValueError(f"size: expected positive extents, got {self.size!r}")

    # -- bounds ----------------------------------------------------------------------------------
    def corners(self) -> np.ndarray:
        """Corners (8, 3) of an axis-aligned box containing the primitive."""
        cx, cy, cz = self.center
        if self.kind == "box":
            hx, hy, hz = self.size
            c, s = abs(np.cos(self.yaw)), abs(np.sin(self.yaw))
            ex, ey = c * hx + s * hy, s * hx + c * hy
            lo = np.array([cx - ex, cy - ey, cz - hz])
            hi = np.array([cx + ex, cy + ey, cz + hz])
        elif self.kind == "frustum":
            r = max(self.size[0], self.size[1])
            lo = np.array([cx - r, cy - r, cz])
            hi = np.array([cx + r, cy + r, cz + self.size[2]])
        else:
            a, b, c3 = self.size
            lo = np.array([cx - a, cy - b, cz - c3])
            hi = np.array([cx + a, cy + b, cz + c3])
        sel = np.array(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij")).reshape(3, -1).T
        return np.where(sel == 0, lo, hi)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        """Centre (3,) and radius of a sphere containing the primitive."""
        corners = self.corners()
        centre = corners.mean(axis=0)
        return centre, float(np.linalg.norm(corners[0] - centre))

    # -- intersection ----------------------------------------------------------------------------
    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Distance (N,) along each unit ray ``origin + t * dirs`` to the first hit (inf: none)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.kind == "box":
                return self._intersect_box(origin, dirs)
            if self.kind == "frustum":
                return self._intersect_frustum(origin, dirs)
            return self._intersect_ellipsoid(origin, dirs)

    def _rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)

    def _intersect_box(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        c, s = np.float32(np.cos(self.yaw)), np.float32(np.sin(self.yaw))
        q = np.asarray(origin, np.float32) - np.asarray(self.center, np.float32)
        px, py, pz = c * q[0] + s * q[1], -s * q[0] + c * q[1], q[2]
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        if self.yaw != 0.0:
            dx, dy = c * dx + s * dy, -s * dx + c * dy
        hx, hy, hz = (np.float32(v) for v in self.size)
        tmin = np.full(dirs.shape[0], -np.inf, dtype=np.float32)
        tmax = np.full(dirs.shape[0], np.inf, dtype=np.float32)
        for p, d, h in ((px, dx, hx), (py, dy, hy), (pz, dz, hz)):
            inv = 1.0 / d
            t1 = (-h - p) * inv
            t2 = (h - p) * inv
            np.maximum(tmin, np.minimum(t1, t2), out=tmin)
            np.minimum(tmax, np.maximum(t1, t2), out=tmax)
        hit = (tmax >= tmin) & (tmin > EPS)
        return np.where(hit, tmin, np.float32(np.inf))

    def _intersect_ellipsoid(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        ra, rb, rc = (np.float32(v) for v in self.size)
        q = np.asarray(origin, np.float32) - np.asarray(self.center, np.float32)
        px, py, pz = q[0] / ra, q[1] / rb, q[2] / rc
        dx, dy, dz = dirs[:, 0] / ra, dirs[:, 1] / rb, dirs[:, 2] / rc
        a = dx * dx + dy * dy + dz * dz
        b = 2.0 * (px * dx + py * dy + pz * dz)
        c = px * px + py * py + pz * pz - 1.0
        disc = b * b - (4.0 * c) * a
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2.0 * a)
        hit = (disc >= 0) & (t > EPS)
        return np.where(hit, t, np.float32(np.inf))

    def _intersect_frustum(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        r0, r1, h = self.size
        k = (r1 - r0) / h
        ox, oy, oz = np.asarray(origin, np.float32) - np.asarray(self.center, np.float32)
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        rad0 = r0 + k * oz  # radius of the (infinite) cone at the origin's height
        a = dx * dx + dy * dy - (k * k) * dz * dz
        b = 2.0 * (ox * dx + oy * dy - k * rad0 * dz)
        c = ox * ox + oy * oy - rad0 * rad0
        disc = b * b - 4.0 * a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        best = np.full(dirs.shape[0], np.inf, dtype=np.float32)
        for sign in (-1.0, 1.0):
            t = (-b + sign * sq) / (2.0 * a)
            z = oz + t * dz
            ok = (disc >= 0) & (t > EPS) & (z >= 0) & (z <= h) & (r0 + k * z >= 0)
            best = np.where(ok & (t < best), t, best)
        if r1 > 0:  # top cap
            t = (h - oz) / dz
            x, y = ox + t * dx, oy + t * dy
            ok = (t > EPS) & (x * x + y * y <= r1 * r1)
            best = np.where(ok & (t < best), t, best)
        return best.astype(np.float32)

    # -- normals ---------------------------------------------------------------------------------
    def normals(self, points: np.ndarray) -> np.ndarray:
        """Outward unit normals (K, 3) at surface ``points`` (K, 3)."""
        q: np.ndarray = points - np.asarray(self.center, np.float32)
        if self.kind == "box":
            rot = self._rotation()
            local = (q @ rot) / np.asarray(self.size, np.float32)
            axis = np.abs(local).argmax(axis=1)
            n_local = np.zeros_like(local)
            rows = np.arange(local.shape[0])
            n_local[rows, axis] = np.sign(local[rows, axis])
            n = n_local @ rot.T
        elif self.kind == "ellipsoid":
            n = q / np.asarray(self.size, np.float32) ** 2
        else:
            r0, r1, h = self.size
            k = (r1 - r0) / h
            radius = r0 + k * q[:, 2]
            n = np.stack([q[:, 0], q[:, 1], -k * radius], axis=1)
            cap = q[:, 2] >= h - 1e-3
            n[cap] = (0.0, 0.0, 1.0)
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return (n / np.maximum(norm, 1e-9)).astype(np.float32)


@dataclass(frozen=True)
class GroundZone:
    """A rectangle of ground material (axis-aligned in the scene frame).

    dash_axis  0: solid; 1: dashed along x; 2: dashed along y (lane markings)
    dash_period, dash_on  dash pattern [m]: painted where (coord mod period) < dash_on
    """

    material: int
    xmin: float
    xmax: float
    ymin: float
    ymax: float
    dash_axis: int = 0
    dash_period: float = 0.0
    dash_on: float = 0.0


def classify_ground(
    xy: np.ndarray, zones: list[GroundZone], default_material: int
) -> tuple[np.ndarray, np.ndarray]:
    """Material (K,) int64 and zone index (K,) int64 (-1 = default) of ground points ``xy``."""
    material = np.full(xy.shape[0], default_material, dtype=np.int64)
    zone_id = np.full(xy.shape[0], -1, dtype=np.int64)
    x, y = xy[:, 0], xy[:, 1]
    for i, z in enumerate(zones):
        inside = (x >= z.xmin) & (x < z.xmax) & (y >= z.ymin) & (y < z.ymax)
        if z.dash_axis:
            coord = x if z.dash_axis == 1 else y
            inside &= np.mod(coord, z.dash_period) < z.dash_on
        material[inside] = z.material
        zone_id[inside] = i
    return material, zone_id
