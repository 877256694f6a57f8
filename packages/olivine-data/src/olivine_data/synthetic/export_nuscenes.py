"""Write a synthetic world as a nuScenes(-lidarseg) dataset folder that the devkit loads.

Layout of ``out_dir``::

    <version>/{attribute,calibrated_sensor,category,ego_pose,instance,log,map,sample,
               sample_annotation,sample_data,scene,sensor,visibility,lidarseg}.json
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<timestamp>.pcd.bin     float32 x5 (x, y, z, intensity,
                                                                 ring)
    samples/CAM_*/<log>__CAM_*__<timestamp>.jpg                  JPEG (quality from the config)
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin    uint8 32-class index per point
    camseg/CAM_*/<image stem>.png                                simulated VFM labels (SEEM17)
    gt/camseg/CAM_*/<image stem>.png                             ground-truth labels (SEEM17)
    maps/<map token>.png                                         placeholder map mask
    olivine_splits.json                                          {"train": [...], "val": [...]}
    synthetic_world.json                                         the generating config

Tokens are md5 digests of ``(seed, kind, key)``, so equal configs give byte-identical folders.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from olivine_data.labels import LabelStore
from olivine_data.progress import progress_bar
from olivine_data.synthetic._io import prepare_out_dir
from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.nuscenes_static import Static, static_tables, token, write_bytes
from olivine_data.synthetic.sensors import matrix_to_quaternion
from olivine_data.synthetic.world import Keyframe, World, generate_world

__all__ = ["export_nuscenes", "token"]

#: Annotations are written for objects within this horizontal range of the LiDAR [m].
ANNOTATION_RANGE = 60.0


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _pose_record(tok: str, timestamp: int, pose: np.ndarray) -> dict[str, Any]:
    return {
        "token": tok,
        "timestamp": timestamp,
        "rotation": list(matrix_to_quaternion(pose[:3, :3])),
        "translation": [float(v) for v in pose[:3, 3]],
    }


class _Tables:
    def __init__(self) -> None:
        self.t: dict[str, list[dict[str, Any]]] = {
            name: []
            for name in (
                "attribute",
                "calibrated_sensor",
                "category",
                "ego_pose",
                "instance",
                "log",
                "map",
                "sample",
                "sample_annotation",
                "sample_data",
                "scene",
                "sensor",
                "visibility",
                "lidarseg",
            )
        }


def export_nuscenes(
    config: SyntheticWorldConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    world: World | None = None,
    overwrite: bool = False,
) -> Path:
    """Render ``config`` and write it to ``out_dir`` in nuScenes format; return ``out_dir``.

    ``NuScenes(version=config.version, dataroot=out_dir)`` loads the result, with lidarseg.
    A non-empty ``out_dir`` is refused unless ``overwrite`` (then the previous export's entries
    are removed first). ``world`` may pass an already generated world for ``config``.
    """
    world = world or generate_world(config)
    root = Path(out_dir)
    version = config.version
    prepare_out_dir(
        root,
        (
            version,
            "samples",
            "lidarseg",
            "camseg",
            "gt",
            "maps",
            "olivine_splits.json",
            "synthetic_world.json",
        ),
        overwrite,
    )
    tables = _Tables().t
    static = static_tables(config, root, tables)
    out = _Out(root, version, config, tables, LabelStore(root), LabelStore(root / "gt"))
    total = config.scenes * config.samples_per_scene
    bar = progress_bar(total=total, desc="synthetic nuScenes", unit="keyframe", enabled=progress)
    for s in range(len(world.layouts)):
        _export_scene(out, static, world, s, bar)
    bar.close()

    for name, rows in tables.items():
        _write_json(root / version / f"{name}.json", rows)
    _write_json(root / "olivine_splits.json", world.splits)
    meta = asdict(config)
    meta["format"] = "nuscenes"
    _write_json(root / "synthetic_world.json", meta)
    return root


def _export_scene(out: _Out, static: Static, world: World, s: int, bar: Any) -> None:
    """Step 2 of :func:`export_nuscenes`: scene ``s``'s log, samples, files, sample_data, ego
    poses, annotations, instances and scene record.
    """
    config, tables, seed = out.config, out.tables, out.config.seed
    layout = world.layouts[s]
    log_name = world.scene_name(s)
    logfile = f"{log_name}-{layout.start_us}"
    tables["log"].append(
        {
            "token": static.log_toks[s],
            "logfile": logfile,
            "vehicle": "synth",
            "date_captured": "2018-08-01",
            "location": "synthetic",
        }
    )
    sample_toks = [token(seed, "sample", s, k) for k in range(config.samples_per_scene)]
    ann_by_instance: dict[int, list[str]] = {}
    by_token: dict[str, dict[str, Any]] = {}
    prev_sd: dict[str, str] = {}
    scene_tok = token(seed, "scene", s)
    for k in range(config.samples_per_scene):
        kf: Keyframe = world.render_keyframe(s, k)
        tables["sample"].append(
            {
                "token": sample_toks[k],
                "timestamp": kf.lidar.timestamp_us,
                "prev": sample_toks[k - 1] if k > 0 else "",
                "next": sample_toks[k + 1] if k + 1 < config.samples_per_scene else "",
                "scene_token": scene_tok,
            }
        )
        frames = _write_keyframe_files(out, s, k, kf, logfile)
        for ch, ts, pose, fname in frames:
            sd_tok = token(seed, "sample_data", s, k, ch)
            tables["ego_pose"].append(_pose_record(sd_tok, ts, pose))
            rec = _sample_data_record(
                config, sd_tok, sample_toks[k], static.calib_tok[ch], ch, ts, fname
            )
            rec["prev"] = prev_sd.get(ch, "")
            if ch in prev_sd:
                by_token[prev_sd[ch]]["next"] = sd_tok
            prev_sd[ch] = sd_tok
            by_token[sd_tok] = rec
            tables["sample_data"].append(rec)
        _annotate(
            world, s, k, kf, sample_toks[k], static.attr_tok, tables, ann_by_instance, by_token
        )
        bar.update(1)
    for inst_id, anns in ann_by_instance.items():
        obj = next(o for o in layout.objects if o.instance == inst_id)
        tables["instance"].append(
            {
                "token": token(seed, "instance", s, inst_id),
                "category_token": static.cat_tok[obj.category],
                "nbr_annotations": len(anns),
                "first_annotation_token": anns[0],
                "last_annotation_token": anns[-1],
            }
        )
    tables["scene"].append(
        {
            "token": scene_tok,
            "log_token": static.log_toks[s],
            "nbr_samples": config.samples_per_scene,
            "first_sample_token": sample_toks[0],
            "last_sample_token": sample_toks[-1],
            "name": log_name,
            "description": f"Synthetic road patch {s} (seed {seed}), {len(layout.objects)} objects",
        }
    )


@dataclass(frozen=True)
class _Out:
    """Where a keyframe's files go."""

    root: Path
    version: str
    config: SyntheticWorldConfig
    tables: dict[str, list[dict[str, Any]]]
    vfm_store: LabelStore
    gt_store: LabelStore


def _write_keyframe_files(
    out: _Out, scene: int, sample: int, kf: Keyframe, logfile: str
) -> list[tuple[str, int, np.ndarray, str]]:
    """A keyframe's sweep, lidarseg labels, JPEGs and VFM/GT label PNGs; returns the
    ``(channel, timestamp, ego pose, file name)`` of each sample_data record to write.
    """
    seed, version = out.config.seed, out.version
    frames: list[tuple[str, int, np.ndarray, str]] = []
    lidar_sd = token(seed, "sample_data", scene, sample, "LIDAR_TOP")
    fname = f"samples/LIDAR_TOP/{logfile}__LIDAR_TOP__{kf.lidar.timestamp_us}.pcd.bin"
    write_bytes(out.root / fname, kf.lidar.points.astype(np.float32).tobytes())
    frames.append(("LIDAR_TOP", kf.lidar.timestamp_us, kf.lidar.ego_pose, fname))
    lidarseg_name = f"{lidar_sd}_lidarseg.bin"
    write_bytes(out.root / "lidarseg" / version / lidarseg_name, kf.lidar.lidarseg.tobytes())
    out.tables["lidarseg"].append(
        {
            "token": lidar_sd,
            "sample_data_token": lidar_sd,
            "filename": f"lidarseg/{version}/{lidarseg_name}",
        }
    )
    for cam in kf.cameras:
        fname = f"samples/{cam.channel}/{logfile}__{cam.channel}__{cam.timestamp_us}.jpg"
        write_bytes(out.root / fname, _jpeg(cam.image, out.config.jpeg_quality))
        out.vfm_store.write(cam.channel, fname, cam.vfm_labels)
        out.gt_store.write(cam.channel, fname, cam.gt_labels)
        frames.append((cam.channel, cam.timestamp_us, cam.ego_pose, fname))
    return frames


def _sample_data_record(
    config: SyntheticWorldConfig,
    sd_tok: str,
    sample_tok: str,
    calib_tok: str,
    channel: str,
    timestamp: int,
    fname: str,
) -> dict[str, Any]:
    """One sample_data row (``prev``/``next`` are linked by the caller)."""
    is_cam = channel != "LIDAR_TOP"
    return {
        "token": sd_tok,
        "sample_token": sample_tok,
        "ego_pose_token": sd_tok,
        "calibrated_sensor_token": calib_tok,
        "timestamp": timestamp,
        "fileformat": "jpg" if is_cam else "pcd",
        "is_key_frame": True,
        "height": config.image_size[1] if is_cam else 0,
        "width": config.image_size[0] if is_cam else 0,
        "filename": fname,
        "prev": "",
        "next": "",
    }


def _annotate(
    world: World,
    scene: int,
    sample: int,
    kf: Keyframe,
    sample_tok: str,
    attr_tok: dict[str, str],
    tables: dict[str, list[dict[str, Any]]],
    ann_by_instance: dict[int, list[str]],
    by_token: dict[str, dict[str, Any]],
) -> None:
    """Append sample_annotation records for objects near the ego with at least one LiDAR point."""
    seed = world.config.seed
    layout = world.layouts[scene]
    s2g = layout.scene_to_global()
    ego = world.ego_to_scene(scene, kf.lidar.timestamp_us)
    ids, counts = np.unique(kf.lidar.instance, return_counts=True)
    n_pts = dict(zip(ids.tolist(), counts.tolist()))
    for obj in layout.objects:
        dx, dy = obj.center[0] - ego[0, 3], obj.center[1] - ego[1, 3]
        if dx * dx + dy * dy > ANNOTATION_RANGE**2 or n_pts.get(obj.instance, 0) == 0:
            continue
        anns = ann_by_instance.setdefault(obj.instance, [])
        tok = token(seed, "sample_annotation", scene, sample, obj.instance)
        centre = s2g @ np.array([*obj.center, 1.0])
        yaw = obj.yaw + layout.global_yaw
        rot = (float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2)))
        rec = {
            "token": tok,
            "sample_token": sample_tok,
            "instance_token": token(seed, "instance", scene, obj.instance),
            "visibility_token": "4",
            "attribute_tokens": [attr_tok[obj.attribute]] if obj.attribute else [],
            "translation": [float(v) for v in centre[:3]],
            "size": list(obj.size),
            "rotation": list(rot),
            "prev": anns[-1] if anns else "",
            "next": "",
            "num_lidar_pts": int(n_pts[obj.instance]),
            "num_radar_pts": 0,
        }
        if anns:
            by_token[anns[-1]]["next"] = tok
        anns.append(tok)
        by_token[tok] = rec
        tables["sample_annotation"].append(rec)
