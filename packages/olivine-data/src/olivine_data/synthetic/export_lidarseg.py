"""Write a synthetic world in the on-disk layout of a SemanticKITTI-family dataset.

``export_lidarseg(config, out_dir, dataset)`` writes the KITTI rig's LiDAR sweeps (the points
:func:`~olivine_data.synthetic.export_semantickitti.export_semantickitti` writes) as
ScribbleKITTI, RELLIS-3D, SemanticPOSS, SemanticSTF, SynLiDAR or DAPS-3D would store them:

=============  ============================================================================
scribblekitti  sequences/NN/velodyne/*.bin, labels/*.label (dense), scribbles/*.label
rellis3d       NNNNN/os1_cloud_node_kitti_bin/*.bin, os1_cloud_node_semantickitti_label_id/,
               pt_train.lst and pt_val.lst ("<scan> <label>" per line)
semanticposs   sequences/NN/velodyne/*.bin, labels/*.label
semanticstf    {train,val}/velodyne/*.bin (5 float32: x, y, z, intensity 0..255, ring), labels/
synlidar       NN/velodyne/*.bin, NN/labels/*.label
daps3d         data/<sequence>/clouds/*.bin, labels/*.label
=============  ============================================================================

The layouts above are written out here literally, independently of the reader's descriptors, so
that reading an export checks the descriptor against the format. Labels: each point's
SemanticKITTI class (the world's classes, see ``materials``) is mapped to the dataset's class by
:data:`WORLD_TO_DATASET` (by name; unmatched classes are the dataset's ignore class), and that
class to a raw id through the dataset's learning map *inverted* (the smallest raw id the map sends
to it), so the reader's learning map gives back ``WORLD_TO_DATASET`` of the world's class.
Train and validation scenes go to sequence folders named like the dataset's own (the i-th train
scene to the i-th train sequence); ``olivine_splits.json`` names them where the dataset's split
lists more sequences than a small world fills (RELLIS-3D's list files and SemanticSTF's split
folders are the split itself). Scribbles are a fixed random 10 % of the dense labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from olivine_data.datasets.lidarseg_specs import get_lidarseg_spec
from olivine_data.datasets.semantickitti import SEMANTICKITTI_CLASSES, semantickitti_spec
from olivine_data.progress import progress_bar
from olivine_data.synthetic._io import prepare_out_dir
from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.export_semantickitti import kitti_scan, kitti_sweep
from olivine_data.synthetic.world import World, generate_world

__all__ = ["LIDARSEG_EXPORTS", "SCRIBBLE_FRACTION", "WORLD_TO_DATASET", "export_lidarseg"]

#: Fraction of the points a synthetic scribble labels.
SCRIBBLE_FRACTION = 0.1

_VEHICLES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle")
_RIDERS = ("bicyclist", "motorcyclist")
_GROUND = ("road", "parking", "sidewalk", "other-ground", "terrain")

#: SemanticKITTI class name -> the dataset's class name (absent = the dataset's ignore class).
WORLD_TO_DATASET: dict[str, dict[str, str]] = {
    "scribblekitti": {c: c for c in SEMANTICKITTI_CLASSES[1:]},
    "semanticstf": {c: c for c in SEMANTICKITTI_CLASSES[1:]},
    "synlidar": {c: c for c in SEMANTICKITTI_CLASSES[1:]},
    "rellis3d": {
        **{c: "vehicle" for c in _VEHICLES},
        **{c: "person" for c in ("person", *_RIDERS)},
        "road": "asphalt",
        "parking": "asphalt",
        "sidewalk": "concrete",
        "other-ground": "dirt",
        "terrain": "grass",
        "building": "building",
        "fence": "fence",
        "vegetation": "tree",
        "trunk": "tree",
        "pole": "pole",
        "traffic-sign": "object",
    },
    "semanticposs": {
        **{c: "car" for c in ("car", "truck", "other-vehicle")},
        **{c: "bike" for c in ("bicycle", "motorcycle")},
        **{c: "rider" for c in _RIDERS},
        **{c: "ground" for c in _GROUND},
        "person": "person",
        "building": "building",
        "fence": "fence",
        "vegetation": "plants",
        "trunk": "trunk",
        "pole": "pole",
        "traffic-sign": "traffic-sign",
    },
    "daps3d": {
        **{c: "vehicle" for c in _VEHICLES},
        **{c: "human" for c in ("person", *_RIDERS)},
        **{c: "surface" for c in _GROUND},
        **{c: "obstacle" for c in ("building", "fence", "vegetation", "trunk", "pole")},
        "traffic-sign": "obstacle",
    },
}


@dataclass(frozen=True)
class _Layout:
    """How one dataset stores a sequence (see the module table)."""

    seq_root: str  # folder of the sequence folders under out_dir ("" = out_dir)
    scans: str
    labels: str
    train_names: tuple[str, ...]  # sequence folder of the i-th train scene
    val_names: tuple[str, ...]
    shared: bool = False  # all scenes of a split in one folder (SemanticSTF)
    scribbles: str | None = None
    fields: int = 4  # 4: x, y, z, reflectance in [0, 1]; 5: + ring, intensity in 0..255
    instances: bool = True  # instance id in the upper 16 bits of a label
    split_files: tuple[str, str] | None = None  # (train, val) list files
    splits_json: bool = True


_LAYOUTS: dict[str, _Layout] = {
    "scribblekitti": _Layout(
        "sequences", "velodyne", "labels",
        ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"), ("08",),
        scribbles="scribbles",
    ),
    "rellis3d": _Layout(
        "", "os1_cloud_node_kitti_bin", "os1_cloud_node_semantickitti_label_id",
        ("00000", "00001", "00002"), ("00003", "00004"), instances=False,
        split_files=("pt_train.lst", "pt_val.lst"), splits_json=False,
    ),
    "semanticposs": _Layout(
        "sequences", "velodyne", "labels", ("00", "01", "02", "04", "05"), ("03",)
    ),
    "semanticstf": _Layout(
        "", "velodyne", "labels", ("train",), ("val",), shared=True, fields=5,
        instances=False, splits_json=False,
    ),
    "synlidar": _Layout(
        "", "velodyne", "labels", tuple(f"{i:02d}" for i in range(12)), ("12",)
    ),
    "daps3d": _Layout(
        "data", "clouds", "labels", ("38-18_7_72_90",), ("42-48_10_78_90", "44-18_11_15_32"),
        instances=False,
    ),
}  # fmt: skip

#: The datasets :func:`export_lidarseg` writes.
LIDARSEG_EXPORTS: tuple[str, ...] = tuple(_LAYOUTS)


def raw_id_table(dataset: str) -> np.ndarray:
    """Lookup raw SemanticKITTI id -> the dataset's raw id for the world's points."""
    spec = get_lidarseg_spec(dataset)
    names = WORLD_TO_DATASET[dataset]
    inverse: dict[int, int] = {}
    for raw, cls in sorted(spec.learning_map.items()):
        inverse.setdefault(cls, raw)
    kitti = semantickitti_spec()
    table = np.zeros(max(kitti.learning_map) + 1, dtype=np.int64)
    for raw, cls in kitti.learning_map.items():
        target = names.get(SEMANTICKITTI_CLASSES[cls])
        table[raw] = inverse[spec.classes.index(target) if target is not None else 0]
    return table


def export_lidarseg(
    config: SyntheticWorldConfig,
    out_dir: str | os.PathLike[str],
    dataset: str,
    progress: bool = True,
    world: World | None = None,
    overwrite: bool = False,
) -> Path:
    """Render ``config``'s LiDAR sweeps and write them in ``dataset``'s layout; return ``out_dir``.

    ``dataset`` is one of :data:`LIDARSEG_EXPORTS`. ``LidarSegDataset(out_dir,
    get_lidarseg_spec(dataset), split=...)`` reads the result (through ``olivine_splits.json``
    where the export writes one). A non-empty ``out_dir`` is refused unless ``overwrite``.
    """
    if dataset not in _LAYOUTS:
        raise ValueError(f"dataset: expected one of {', '.join(_LAYOUTS)}, got {dataset!r}")
    lay = _LAYOUTS[dataset]
    world = world or generate_world(config)
    root = Path(out_dir)
    owned = {lay.seq_root or name for name in (*lay.train_names, *lay.val_names)}
    owned |= {*(lay.split_files or ()), "olivine_splits.json", "synthetic_world.json"}
    prepare_out_dir(root, tuple(sorted(owned)), overwrite)
    table = raw_id_table(dataset)
    velo2ego = world.kitti_rig()[0]
    seq_of = _sequence_names(world, lay, dataset)
    lists: dict[str, list[str]] = {"train": [], "val": []}
    bar = progress_bar(
        total=config.scenes * config.samples_per_scene, desc=f"synthetic {dataset}",
        unit="scan", enabled=progress,
    )  # fmt: skip
    for s, (split, seq) in enumerate(seq_of):
        seq_dir = root / lay.seq_root / seq
        for sub in (lay.scans, lay.labels, lay.scribbles):
            if sub is not None:
                (seq_dir / sub).mkdir(parents=True, exist_ok=True)
        for k in range(config.samples_per_scene):
            frame = f"{s:02d}{k:04d}" if lay.shared else f"{k:06d}"
            cloud, sem, inst = kitti_sweep(world, s, world.lidar_timestamp(s, k), velo2ego)
            _write_frame(lay, seq_dir, frame, cloud, table[sem], inst, (config.seed, s, k))
            lists[split].append(f"{seq}/{lay.scans}/{frame}.bin {seq}/{lay.labels}/{frame}.label")
            bar.update(1)
    bar.close()
    if lay.split_files is not None:
        for split, name in zip(("train", "val"), lay.split_files):
            (root / name).write_text("".join(f"{line}\n" for line in lists[split]))
    if lay.splits_json:
        splits = {
            key: sorted({seq for split, seq in seq_of if split == key}) for key in ("train", "val")
        }
        (root / "olivine_splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    meta = asdict(config)
    meta.update(format=dataset, lidar="kitti rig (export_semantickitti's sweeps)")
    (root / "synthetic_world.json").write_text(json.dumps(meta, indent=1) + "\n")
    return root


def _sequence_names(world: World, lay: _Layout, dataset: str) -> list[tuple[str, str]]:
    """``(split, sequence folder)`` of every scene, in scene order."""
    out: dict[int, tuple[str, str]] = {}
    for split, names in (("train", lay.train_names), ("val", lay.val_names)):
        scenes = [int(n.rsplit("-", 1)[1]) for n in world.splits[split]]
        if len(scenes) > len(names) and not lay.shared:
            raise ValueError(
                f"{dataset}: {len(scenes)} {split} scenes, but the layout names only "
                f"{len(names)} {split} sequences ({', '.join(names)}); use fewer scenes"
            )
        for i, s in enumerate(scenes):
            out[s] = (split, names[0] if lay.shared else names[i])
    return [out[s] for s in sorted(out)]


def _write_frame(
    lay: _Layout,
    seq_dir: Path,
    frame: str,
    cloud: np.ndarray,
    raw: np.ndarray,
    inst: np.ndarray,
    key: tuple[int, int, int],
) -> None:
    """A scan in ``lay.fields`` float32 per point, its labels and (ScribbleKITTI) scribbles."""
    pts = cloud if lay.fields == 5 else kitti_scan(cloud)  # 5: SemanticSTF, intensity 0..255
    (seq_dir / lay.scans / f"{frame}.bin").write_bytes(pts.astype(np.float32).tobytes())
    label = (inst << 16 | raw) if lay.instances else raw
    (seq_dir / lay.labels / f"{frame}.label").write_bytes(label.astype(np.uint32).tobytes())
    if lay.scribbles is not None:
        keep = np.random.default_rng([*key, 31]).random(len(raw)) < SCRIBBLE_FRACTION
        scribble = np.where(keep, label, 0).astype(np.uint32)
        (seq_dir / lay.scribbles / f"{frame}.label").write_bytes(scribble.tobytes())
