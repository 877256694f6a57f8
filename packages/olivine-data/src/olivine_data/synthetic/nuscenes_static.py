"""The scene-independent tables of the synthetic nuScenes export (step 1 of
:func:`~olivine_data.synthetic.export_nuscenes.export_nuscenes`): category, attribute,
visibility, sensor, calibrated_sensor and map, and the deterministic tokens every table uses.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.materials import NUSCENES_LIDARSEG_CATEGORIES
from olivine_data.synthetic.sensors import NUSCENES_CALIBRATION, scaled_intrinsics

__all__ = ["Static", "static_tables", "token", "write_bytes"]

_ATTRIBUTES = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary."),
    (
        "vehicle.parked",
        "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    ),
    ("cycle.with_rider", "There is someone riding a bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on a bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)
_VISIBILITY = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)


def token(*key: object) -> str:
    """Deterministic 32-hex-digit token of ``key``."""
    return hashlib.md5("/".join(str(k) for k in key).encode()).hexdigest()


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass(frozen=True)
class Static:
    """Tokens of the static tables that the per-scene records point to."""

    cat_tok: dict[str, str]
    attr_tok: dict[str, str]
    calib_tok: dict[str, str]
    log_toks: list[str]


def static_tables(
    config: SyntheticWorldConfig, root: Path, tables: dict[str, list[dict[str, Any]]]
) -> Static:
    """Step 1 of :func:`export_nuscenes`: category, attribute, visibility, sensor,
    calibrated_sensor and map (with its placeholder PNG).
    """
    seed = config.seed
    cat_tok = {name: token("category", name) for name in NUSCENES_LIDARSEG_CATEGORIES}
    tables["category"] = [
        {"token": cat_tok[name], "name": name, "description": name, "index": i}
        for i, name in enumerate(NUSCENES_LIDARSEG_CATEGORIES)
    ]
    attr_tok = {name: token("attribute", name) for name, _ in _ATTRIBUTES}
    tables["attribute"] = [
        {"token": attr_tok[n], "name": n, "description": d} for n, d in _ATTRIBUTES
    ]
    tables["visibility"] = [
        {"description": d, "token": t, "level": lvl} for t, lvl, d in _VISIBILITY
    ]
    channels = ("LIDAR_TOP", *config.cameras)
    sensor_tok = {ch: token("sensor", ch) for ch in channels}
    calib_tok = {ch: token(seed, "calibrated_sensor", ch) for ch in channels}
    for ch in channels:
        calib = NUSCENES_CALIBRATION[ch]
        tables["sensor"].append(
            {
                "token": sensor_tok[ch],
                "channel": ch,
                "modality": "lidar" if ch == "LIDAR_TOP" else "camera",
            }
        )
        intrinsic: list[list[float]] = []
        if ch != "LIDAR_TOP":
            intrinsic = [
                [float(v) for v in row] for row in scaled_intrinsics(ch, config.image_size)
            ]
        tables["calibrated_sensor"].append(
            {
                "token": calib_tok[ch],
                "sensor_token": sensor_tok[ch],
                "translation": list(calib.translation),
                "rotation": list(calib.rotation),
                "camera_intrinsic": intrinsic,
            }
        )
    map_tok = token(seed, "map")
    log_toks = [token(seed, "log", s) for s in range(config.scenes)]
    tables["map"] = [
        {
            "token": map_tok,
            "category": "semantic_prior",
            "filename": f"maps/{map_tok}.png",
            "log_tokens": log_toks,
        }
    ]
    map_png = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(map_png, format="PNG")
    write_bytes(root / "maps" / f"{map_tok}.png", map_png.getvalue())
    return Static(cat_tok, attr_tok, calib_tok, log_toks)
