"""Write a synthetic world in SemanticKITTI / KITTI-odometry format.

Layout of ``out_dir`` (one sequence per scene, ``NN`` = scene index)::

    sequences/NN/velodyne/NNNNNN.bin   float32 x4 (x, y, z, reflectance in [0, 1]), HDL-64E-like
    sequences/NN/labels/NNNNNN.label   uint32: instance id << 16 | raw SemanticKITTI class id
    sequences/NN/image_2/NNNNNN.png    front camera (KITTI sequence-07 P2, scaled)
    sequences/NN/calib.txt             P0-P3 (scaled to the image size) and Tr (real, seq. 07)
    sequences/NN/poses.txt             camera-0 poses in the first frame's camera-0 frame (3x4)
    sequences/NN/times.txt             seconds since the sequence start
    camseg/image_2/NN_NNNNNN.png       simulated VFM labels (SEEM17), KittiPretrainDataset layout
    gt/camseg/image_2/NN_NNNNNN.png    ground-truth labels (SEEM17)
    olivine_splits.json                {"train": ["00", ...], "val": [...]}
    synthetic_world.json               the generating config
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from olivine_data.labels import LabelStore
from olivine_data.progress import progress_bar
from olivine_data.synthetic._io import prepare_out_dir
from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.layout import KEYFRAME_INTERVAL_S
from olivine_data.synthetic.materials import material_lookup
from olivine_data.synthetic.sensors import KITTI_P2, KITTI_TR
from olivine_data.synthetic.world import KITTI_ELEVATION_DEG, World, generate_world

__all__ = ["export_semantickitti", "kitti_scan", "kitti_sweep", "KITTI_BEAMS"]

#: The KITTI export uses a 64-beam LiDAR (HDL-64E field of view).
KITTI_BEAMS = 64
_KITTI_ID = material_lookup("kitti")
#: Raw SemanticKITTI ids of "thing" classes, which carry an instance id.
_THING_IDS = np.array([10, 11, 13, 15, 18, 20, 30, 31, 32], dtype=np.int64)

# Real KITTI sequence-07 P0, P1, P3 (calib.txt); P2 and Tr live in ``sensors``.
_P_OTHER = {
    "P0": np.array(
        [[707.0912, 0.0, 601.8873, 0.0], [0.0, 707.0912, 183.1104, 0.0], [0.0, 0.0, 1.0, 0.0]]
    ),
    "P1": np.array(
        [[707.0912, 0.0, 601.8873, -379.8145], [0.0, 707.0912, 183.1104, 0.0], [0.0, 0.0, 1.0, 0.0]]
    ),
    "P3": np.array(
        [
            [707.0912, 0.0, 601.8873, -333.4597],
            [0.0, 707.0912, 183.1104, 1.93013],
            [0.0, 0.0, 1.0, 3.318498e-03],
        ]
    ),
}


def _fmt(m: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(m, dtype=np.float64).reshape(-1))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def export_semantickitti(
    config: SyntheticWorldConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    world: World | None = None,
    overwrite: bool = False,
) -> Path:
    """Render ``config`` with a KITTI rig and write it in SemanticKITTI format; return ``out_dir``.

    ``SemanticKITTISegDataset(out_dir, sequences=[...])`` and ``KittiPretrainDataset`` read it.
    A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    world = world or generate_world(config)
    root = Path(out_dir)
    prepare_out_dir(
        root,
        ("sequences", "camseg", "gt", "olivine_splits.json", "synthetic_world.json"),
        overwrite,
    )
    velo2ego, cam2_to_ego, k2, size = world.kitti_rig()
    scale = np.diag([k2[0, 0] / KITTI_P2[0, 0], k2[1, 1] / KITTI_P2[1, 1], 1.0])
    tr4 = np.eye(4)
    tr4[:3] = KITTI_TR
    cam0_to_ego = velo2ego @ np.linalg.inv(tr4)
    vfm_store = LabelStore(root)
    gt_store = LabelStore(root / "gt")
    total = config.scenes * config.samples_per_scene
    bar = progress_bar(total=total, desc="synthetic SemanticKITTI", unit="scan", enabled=progress)
    for s in range(config.scenes):
        seq = f"{s:02d}"
        seq_dir = root / "sequences" / seq
        for sub in ("velodyne", "labels", "image_2"):
            (seq_dir / sub).mkdir(parents=True, exist_ok=True)
        calib = {
            "P0": scale @ _P_OTHER["P0"],
            "P1": scale @ _P_OTHER["P1"],
            "P2": scale @ KITTI_P2,
            "P3": scale @ _P_OTHER["P3"],
            "Tr": KITTI_TR,
        }
        (seq_dir / "calib.txt").write_text(
            "".join(f"{key}: {_fmt(m)}\n" for key, m in calib.items())
        )
        poses, times = [], []
        first_cam0 = None
        t0 = world.lidar_timestamp(s, 0)
        for k in range(config.samples_per_scene):
            t = world.lidar_timestamp(s, k)
            frame = f"{k:06d}"
            _write_scan(world, s, t, velo2ego, seq_dir, frame)
            image, gt, vfm, _ = world.render_camera(s, t, cam2_to_ego, k2, size, stream=8)
            (seq_dir / "image_2" / f"{frame}.png").write_bytes(_png(image))
            vfm_store.write("image_2", f"{seq}_{frame}.png", vfm)
            gt_store.write("image_2", f"{seq}_{frame}.png", gt)
            cam0_to_scene = world.ego_to_scene(s, t) @ cam0_to_ego
            if first_cam0 is None:
                first_cam0 = cam0_to_scene
            pose = np.linalg.inv(first_cam0) @ cam0_to_scene
            poses.append(_fmt(pose[:3]))
            times.append(f"{(t - t0) / 1e6:.6e}")
            bar.update(1)
        (seq_dir / "poses.txt").write_text("\n".join(poses) + "\n")
        (seq_dir / "times.txt").write_text("\n".join(times) + "\n")
    bar.close()
    _write_splits_and_meta(root, world, config)
    return root


def kitti_sweep(
    world: World, scene: int, t: int, velo2ego: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LiDAR sweep of the KITTI rig: ``(cloud (N, 5) float32 x, y, z, intensity in 0..255,
    ring; raw SemanticKITTI class (N,); instance id (N,) of things, 0 elsewhere)``. Every
    SemanticKITTI-family export writes these points.
    """
    cloud, mat, inst = world.render_lidar(
        scene, t, velo2ego, elevation_deg=KITTI_ELEVATION_DEG, beams=KITTI_BEAMS, stream=7
    )
    sem = _KITTI_ID[mat]
    inst_id = np.where(np.isin(sem, _THING_IDS), inst & 0xFFFF, 0)
    return cloud.astype(np.float32), sem, inst_id


def kitti_scan(cloud: np.ndarray) -> np.ndarray:
    """A :func:`kitti_sweep` cloud as a KITTI scan: ``(N, 4)`` float32 x, y, z, reflectance in
    [0, 1] (intensity / 255).
    """
    return np.concatenate([cloud[:, :3], cloud[:, 3:4] / 255.0], axis=1).astype(np.float32)


def _write_scan(
    world: World, scene: int, t: int, velo2ego: np.ndarray, seq_dir: Path, frame: str
) -> None:
    """One LiDAR sweep: ``velodyne/<frame>.bin`` (x, y, z, remission) and
    ``labels/<frame>.label`` (instance << 16 | SemanticKITTI class; instances of things only).
    """
    cloud, sem, inst_id = kitti_sweep(world, scene, t, velo2ego)
    (seq_dir / "velodyne" / f"{frame}.bin").write_bytes(kitti_scan(cloud).tobytes())
    label = ((inst_id << 16) | sem).astype(np.uint32)
    (seq_dir / "labels" / f"{frame}.label").write_bytes(label.tobytes())


def _write_splits_and_meta(root: Path, world: World, config: SyntheticWorldConfig) -> None:
    """``olivine_splits.json`` (scene names -> sequence numbers) and ``synthetic_world.json``."""
    splits = {
        key: [f"{int(name.rsplit('-', 1)[1]):02d}" for name in names]
        for key, names in world.splits.items()
    }
    (root / "olivine_splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    meta = asdict(config)
    meta.update(
        format="semantickitti",
        keyframe_interval_s=KEYFRAME_INTERVAL_S,
        lidar_beams_kitti=KITTI_BEAMS,
    )
    (root / "synthetic_world.json").write_text(json.dumps(meta, indent=1) + "\n")
