"""Ray casting for the synthetic sensors: a spinning LiDAR and pinhole cameras.

Both sensors are a 2-D grid of rays from one origin (LiDAR: beams x azimuth steps; camera:
rows x columns). ``cast`` intersects the ground plane for the whole grid, then loops over the
primitives; each primitive is tested only against the rays of its screen-space window (projected
bounding box for cameras, angular bounding-sphere window for the LiDAR), so the cost follows the
covered area, not rays x primitives. The nearest hit wins (z-buffer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from olivine_data.synthetic.geometry import EPS, classify_ground
from olivine_data.synthetic.layout import SceneLayout
from olivine_data.synthetic.materials import MATERIAL_ID, material_lookup

__all__ = [
    "RayHits",
    "Bounds",
    "camera_windows",
    "lidar_windows",
    "cast",
    "camera_rays",
    "lidar_rays",
    "render_image",
    "lidar_returns",
    "value_noise",
    "SUN_DIRECTION",
]

#: Direction towards the sun in the scene frame (unit vector).
SUN_DIRECTION = np.array([0.45, 0.3, 0.84], dtype=np.float32) / np.float32(
    np.linalg.norm([0.45, 0.3, 0.84])
)

_ALBEDO = material_lookup("albedo")
_TEXTURE = material_lookup("texture")
_FREQ = material_lookup("frequency")
_REFLECT = material_lookup("reflectivity")
_SEEM = material_lookup("seem")
_GROUND_INSTANCE_BASE = 1 << 40


@dataclass
class RayHits:
    """Result of casting a ray grid (H, W).

    t         distance along the unit ray [m] (inf: nothing within range)
    material  material id (0 = sky)
    instance  instance id (0 = sky; ground: a patch id >= 2**40, one per SEEM17 class and 8 m
              cell, so lane paint and asphalt of one cell form one segment)
    normal    (H, W, 3) unit surface normal (zeros for sky)
    points    (H, W, 3) hit points in the scene frame
    tint      (H, W, 3) per-object colour multiplier
    """

    t: np.ndarray
    material: np.ndarray
    instance: np.ndarray
    normal: np.ndarray
    points: np.ndarray
    tint: np.ndarray


@lru_cache(maxsize=32)
def _camera_frame_rays(k_key: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    w, h = size
    k = np.array(k_key, dtype=np.float64).reshape(3, 3)
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(k).T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    d.setflags(write=False)
    return d


def camera_rays(k: np.ndarray, cam_to_scene: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Unit ray directions (H, W, 3) float32 in the scene frame through integer pixel centres."""
    d = _camera_frame_rays(tuple(float(v) for v in np.asarray(k).reshape(-1)), tuple(size))
    return (d @ cam_to_scene[:3, :3].T).astype(np.float32)


def lidar_rays(
    elevations: np.ndarray, azimuths: np.ndarray, sensor_to_scene: np.ndarray
) -> np.ndarray:
    """Unit ray directions (B, A, 3) float32 in the scene frame for beam elevations (B,) and
    azimuths (A,) [rad] in the sensor frame.
    """
    el = elevations[:, None]
    az = azimuths[None, :]
    d = np.stack(
        np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), axis=-1
    )
    return (d @ sensor_to_scene[:3, :3].T).astype(np.float32)


@dataclass(frozen=True)
class Bounds:
    """Bounds of all primitives of a layout, for vectorised culling.

    corners (P, 8, 3) axis-aligned box corners; centres (P, 3) and radii (P,) bounding spheres.
    """

    corners: np.ndarray
    centres: np.ndarray
    radii: np.ndarray

    @staticmethod
    def of(layout: SceneLayout) -> Bounds:
        """Compute the bounds of ``layout.primitives``."""
        if not layout.primitives:
            return Bounds(np.zeros((0, 8, 3)), np.zeros((0, 3)), np.zeros(0))
        corners = np.stack([p.corners() for p in layout.primitives])
        centres = corners.mean(axis=1)
        radii = np.linalg.norm(corners[:, 0] - centres, axis=1)
        return Bounds(corners, centres, radii)


Window = tuple[int, slice, "slice | np.ndarray", float]


def camera_windows(
    bounds: Bounds,
    scene_to_cam: np.ndarray,
    k: np.ndarray,
    size: tuple[int, int],
    max_range: float,
) -> list[Window]:
    """(primitive, rows, cols, nearest distance) for every primitive a camera may see, sorted
    front to back; the window is the pixel bounding box of the projected corners.
    """
    w, h = size
    c = bounds.corners @ scene_to_cam[:3, :3].T + scene_to_cam[:3, 3]
    z = c[..., 2]
    behind = z <= 0.05
    all_behind = behind.all(axis=1)
    any_behind = behind.any(axis=1)
    zs = np.where(behind, 1.0, z)
    u = k[0, 0] * c[..., 0] / zs + k[0, 2]
    v = k[1, 1] * c[..., 1] / zs + k[1, 2]
    c0 = np.where(any_behind, 0, np.clip(np.floor(u.min(axis=1)) - 1, 0, w)).astype(int)
    c1 = np.where(any_behind, w, np.clip(np.ceil(u.max(axis=1)) + 2, 0, w)).astype(int)
    r0 = np.where(any_behind, 0, np.clip(np.floor(v.min(axis=1)) - 1, 0, h)).astype(int)
    r1 = np.where(any_behind, h, np.clip(np.ceil(v.max(axis=1)) + 2, 0, h)).astype(int)
    origin = -scene_to_cam[:3, :3].T @ scene_to_cam[:3, 3]
    near = np.linalg.norm(bounds.centres - origin, axis=1) - bounds.radii
    ok = ~all_behind & (c0 < c1) & (r0 < r1) & (near < max_range)
    order = np.flatnonzero(ok)[np.argsort(near[ok], kind="stable")]
    return [
        (int(i), slice(int(r0[i]), int(r1[i])), slice(int(c0[i]), int(c1[i])), float(near[i]))
        for i in order
    ]


def lidar_windows(
    bounds: Bounds,
    scene_to_sensor: np.ndarray,
    elevations: np.ndarray,
    az0: float,
    n_az: int,
    max_range: float,
) -> list[Window]:
    """(primitive, beams, azimuth columns, nearest distance) for every primitive within range,
    sorted front to back; windows from the angular extent of the bounding sphere.
    """
    s = bounds.centres @ scene_to_sensor[:3, :3].T + scene_to_sensor[:3, 3]
    dist = np.linalg.norm(s, axis=1)
    dxy = np.hypot(s[:, 0], s[:, 1])
    rad = bounds.radii
    near = dist - rad
    inside = dist <= rad
    with np.errstate(invalid="ignore", divide="ignore"):
        half_el = np.arcsin(np.clip(rad / np.maximum(dist, 1e-9), 0, 1)) + 1e-3
        el_c = np.arctan2(s[:, 2], dxy)
        half_az = np.arcsin(np.clip(rad / np.maximum(dxy, 1e-9), 0, 1)) + 2e-3
    b0 = np.where(inside, 0, np.searchsorted(elevations, el_c - half_el, side="left"))
    b1 = np.where(
        inside, len(elevations), np.searchsorted(elevations, el_c + half_el, side="right")
    )
    step = 2 * math.pi / n_az
    az_c = np.arctan2(s[:, 1], s[:, 0])
    lo = np.floor((az_c - half_az - az0) / step).astype(int)
    hi = np.ceil((az_c + half_az - az0) / step).astype(int)
    full = inside | (dxy <= rad) | (hi - lo + 1 >= n_az)
    ok = (b0 < b1) & (near < max_range)
    order = np.flatnonzero(ok)[np.argsort(near[ok], kind="stable")]
    out: list[Window] = []
    for i in order:
        cols: slice | np.ndarray = slice(0, n_az) if full[i] else np.arange(lo[i], hi[i] + 1) % n_az
        out.append((int(i), slice(int(b0[i]), int(b1[i])), cols, float(max(near[i], 0.0))))
    return out


def cast(
    layout: SceneLayout,
    origin: np.ndarray,
    dirs: np.ndarray,
    max_range: float,
    windows: list[Window],
) -> RayHits:
    """Cast the ray grid ``dirs`` (H, W, 3) from ``origin`` (3,) into ``layout``.

    ``windows`` (from ``camera_windows`` / ``lidar_windows``) limit each primitive to a sub-grid;
    a primitive whose nearest possible distance exceeds every current depth in its window is
    skipped (occlusion culling, effective because windows come sorted front to back).
    """
    h, w, _ = dirs.shape
    origin32 = np.asarray(origin, dtype=np.float32)
    dz = dirs[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dz < -1e-6, -origin32[2] / dz, np.inf).astype(np.float32)
    t_best = np.where(t_ground <= max_range, t_ground, np.inf).astype(np.float32)
    owner = np.full((h, w), -1, dtype=np.int32)  # -1 ground/sky, else primitive index
    prims = layout.primitives
    for i, rows, cols, near in windows:
        cur = t_best[rows][:, cols]
        if near >= cur.max():
            continue
        sub = dirs[rows][:, cols]
        t = prims[i].intersect(origin32, sub.reshape(-1, 3)).reshape(cur.shape)
        closer = t < cur
        if not closer.any():
            continue
        new_t = np.where(closer, t, cur)
        new_owner = np.where(closer, np.int32(i), owner[rows][:, cols])
        t_best[rows, cols] = new_t
        owner[rows, cols] = new_owner

    hit = np.isfinite(t_best)
    points = origin32 + dirs * np.where(hit, t_best, 0.0)[..., None]
    material = np.zeros((h, w), dtype=np.int64)
    instance = np.zeros((h, w), dtype=np.int64)
    normal = np.zeros((h, w, 3), dtype=np.float32)
    tint = np.ones((h, w, 3), dtype=np.float32)

    ground = hit & (owner < 0)
    gxy = points[ground][:, :2]
    gmat, _ = classify_ground(gxy, list(layout.zones), layout.default_material)
    material[ground] = gmat
    cells = np.floor(gxy / 8.0).astype(np.int64) & 0xFFFF
    instance[ground] = (
        _GROUND_INSTANCE_BASE + (_SEEM[gmat] << 32) + (cells[:, 0] << 16) + cells[:, 1]
    )
    normal[ground] = (0.0, 0.0, 1.0)

    obj = hit & (owner >= 0)
    if obj.any():
        idx = np.flatnonzero(obj)
        own = owner.reshape(-1)[idx]
        order = np.argsort(own, kind="stable")
        idx, own = idx[order], own[order]
        starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
        ends = np.r_[starts[1:], len(own)]
        flat_mat = material.reshape(-1)
        flat_inst = instance.reshape(-1)
        flat_norm = normal.reshape(-1, 3)
        flat_tint = tint.reshape(-1, 3)
        flat_pts = points.reshape(-1, 3)
        for s, e in zip(starts, ends):
            prim = prims[int(own[s])]
            sel = idx[s:e]
            flat_mat[sel] = prim.material
            flat_inst[sel] = prim.instance
            flat_tint[sel] = prim.tint
            flat_norm[sel] = prim.normals(flat_pts[sel])
    return RayHits(t_best, material, instance, normal, points, tint)


# -- appearance ---------------------------------------------------------------------------------
def value_noise(p: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Smooth 3-D value noise in [-1, 1] at points ``p`` (K, 3) (lattice spacing 1), from a random
    ``table`` (4096,) float32; trilinear interpolation with smoothstep weights.

    The lattice hash uses wrapping int32 products (only the low 12 bits are used).
    """
    base = np.floor(p)
    f = (p - base).astype(np.float32)
    f = f * f * (3.0 - 2.0 * f)
    ib = base.astype(np.int32)
    with np.errstate(over="ignore"):
        hx = (ib[:, 0] * np.int32(73856093), (ib[:, 0] + 1) * np.int32(73856093))
        hy = (ib[:, 1] * np.int32(19349663), (ib[:, 1] + 1) * np.int32(19349663))
        hz = (ib[:, 2] * np.int32(83492791), (ib[:, 2] + 1) * np.int32(83492791))
    wx = (1.0 - f[:, 0], f[:, 0])
    wy = (1.0 - f[:, 1], f[:, 1])
    wz = (1.0 - f[:, 2], f[:, 2])
    out = np.zeros(p.shape[0], dtype=np.float32)
    for a in (0, 1):
        for b in (0, 1):
            hxy = hx[a] ^ hy[b]
            wxy = wx[a] * wy[b]
            for c in (0, 1):
                out += wxy * wz[c] * table[(hxy ^ hz[c]) & 4095]
    return out


def render_image(
    hits: RayHits,
    dirs: np.ndarray,
    rng: np.random.Generator,
    noise_table: np.ndarray,
    max_range: float,
) -> np.ndarray:
    """Shade the hits of a camera ray grid into an RGB image (H, W, 3) uint8.

    Colour = albedo x object tint x procedural texture x (ambient + Lambert sun) + facade windows,
    blended into the sky colour with distance (haze), with exposure jitter and sensor noise.
    """
    h, w = hits.material.shape
    flat = hits.material.reshape(-1)
    idx = np.flatnonzero(flat)
    m = flat[idx]
    pts = hits.points.reshape(-1, 3)[idx]
    nrm = hits.normal.reshape(-1, 3)[idx]
    colour = _ALBEDO[m] * hits.tint.reshape(-1, 3)[idx]
    p1 = pts * _FREQ[m][:, None]
    tex = value_noise(p1, noise_table) + 0.5 * value_noise(p1 * 4.0 + 17.0, noise_table)
    lambert = np.clip(nrm @ SUN_DIRECTION, 0.0, 1.0)
    shade = (1.0 + _TEXTURE[m] * tex) * (0.45 + 0.75 * lambert)
    fsel = np.flatnonzero(m == MATERIAL_ID["foliage"])
    if len(fsel):  # leaf clumps: darker speckles
        shade[fsel] *= 0.8 + 0.35 * value_noise(pts[fsel] * 9.0 + 5.0, noise_table)
    colour *= shade[:, None]
    bsel = np.flatnonzero(m == MATERIAL_ID["building"])
    if len(bsel):  # window grid on facades
        bp, bn = pts[bsel], nrm[bsel]
        along = np.where(np.abs(bn[:, 0]) > np.abs(bn[:, 1]), bp[:, 1], bp[:, 0])
        win = (np.mod(along, 3.2) < 1.6) & (np.mod(bp[:, 2], 3.4) > 1.2) & (np.abs(bn[:, 2]) < 0.5)
        wsel = bsel[win]
        colour[wsel] *= np.array([0.35, 0.42, 0.55], np.float32)

    elev = np.clip(dirs.reshape(-1, 3)[:, 2], 0.0, 1.0)[:, None]
    sky = (
        np.array([0.78, 0.84, 0.92], np.float32) * (1 - elev)
        + np.array([0.35, 0.52, 0.85], np.float32) * elev
    )
    haze = (
        np.clip(hits.t.reshape(-1)[idx] / np.float32(max_range), 0.0, 1.0) ** 1.5 * np.float32(0.8)
    )[:, None]
    img = sky
    img[idx] = colour * (1 - haze) + sky[idx] * haze
    img *= np.float32(rng.uniform(0.85, 1.15))
    img += np.float32(0.015) * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return (img * 255.0 + 0.5).astype(np.uint8).reshape(h, w, 3)


def lidar_returns(
    hits: RayHits,
    origin: np.ndarray,
    dirs: np.ndarray,
    rng: np.random.Generator,
    range_noise: float,
    dropout: float,
    max_range: float,
    noise_table: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn LiDAR hits (B, A) into returns, azimuth-major as the real sweeps.

    Returns (points (N, 3) scene frame, intensity (N,) in [0, 255], ring (N,), material (N,),
    instance (N,)). Range noise: Gaussian, ``range_noise + 0.001 * r``; dropout probability
    ``dropout + 0.15 * (r / max_range)^2 + 0.1 * (1 - reflectivity)^4``.
    """
    order = lambda a: np.swapaxes(a, 0, 1).reshape(-1, *a.shape[2:])  # noqa: E731
    t = order(hits.t)
    mat = order(hits.material)
    inst = order(hits.instance)
    nrm = order(hits.normal)
    d = order(dirs)
    pts = order(hits.points)
    ring = order(np.broadcast_to(np.arange(hits.t.shape[0])[:, None], hits.t.shape))
    keep = np.isfinite(t) & (t > 0.5)
    refl = _REFLECT[mat]
    r_frac = np.where(keep, t, 0.0) / max_range
    p_drop = dropout + 0.15 * r_frac**2 + 0.1 * (1.0 - refl) ** 4
    keep &= rng.random(t.shape[0]) >= p_drop
    t, mat, inst, nrm, d, pts, ring, refl = (
        a[keep] for a in (t, mat, inst, nrm, d, pts, ring, refl)
    )
    noisy = t + rng.normal(0.0, 1.0, t.shape[0]).astype(np.float32) * (range_noise + 1e-3 * t)
    noisy = np.maximum(noisy, EPS)
    points = np.asarray(origin, np.float32) + d * noisy[:, None]
    cos_inc = np.abs(np.einsum("ij,ij->i", nrm, d))
    variation = 1.0 + 0.3 * value_noise(pts * 2.0 + 3.0, noise_table)
    intensity = 255.0 * refl * (0.25 + 0.75 * cos_inc) * variation
    intensity *= np.exp(rng.normal(0.0, 0.15, t.shape[0]))
    intensity = np.clip(np.round(intensity), 0, 255).astype(np.float32)
    return points.astype(np.float32), intensity, ring.astype(np.int64), mat, inst
