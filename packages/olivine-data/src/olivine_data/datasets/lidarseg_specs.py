"""The SemanticKITTI-family datasets of the OLIVINE paper's cross-dataset table, as
:class:`~olivine_data.datasets.lidarseg.LidarSegSpec` descriptors.

Every descriptor's ``doc`` says where each fact comes from: the dataset's own public devkit or
documentation and, where it has one, the reference loader in github.com/Eaphan/OLIVINE
(``downstream/dataloader_{scribble_kitti,rellis3d,semanticstf,daps3d}.py``; the reference has no
SemanticPOSS or SynLiDAR loader, their imports are commented out in
``downstream/lightning_datamodule.py``). Where this toolkit departs from the reference, ``doc``
says so and why. Learning ids are 1-based with 0 = ignore everywhere (the reference's
``ignore_index: 0``).
"""

from __future__ import annotations

import difflib

from olivine_data.datasets.lidarseg import LidarSegSpec
from olivine_data.datasets.semantickitti import (
    SEMANTICKITTI_CLASSES,
    load_semantickitti_config,
    semantickitti_spec,
)

__all__ = [
    "DAPS3D",
    "LIDARSEG_SPECS",
    "RELLIS3D",
    "SCRIBBLEKITTI",
    "SEMANTICPOSS",
    "SEMANTICSTF",
    "SYNLIDAR",
    "get_lidarseg_spec",
]

_KITTI_SPLITS = semantickitti_spec().splits

# fmt: off
_RELLIS_CLASSES = (
    "void", "dirt", "grass", "tree", "pole", "water", "sky", "vehicle", "object", "asphalt",
    "building", "log", "person", "fence", "bush", "concrete", "barrier", "puddle", "mud",
    "rubble",
)
_RELLIS_MAP = {
    0: 0, 1: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 12: 10, 15: 11, 17: 12,
    18: 13, 19: 14, 23: 15, 27: 16, 31: 17, 33: 18, 34: 19,
}
_POSS_CLASSES = (
    "unlabeled", "person", "rider", "car", "trunk", "plants", "traffic-sign", "pole",
    "trashcan", "building", "cone/stone", "fence", "bike", "ground",
)
_POSS_MAP = {
    0: 0, 1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 2, 7: 3, 8: 4, 9: 5, 10: 6, 11: 6, 12: 6, 13: 7,
    14: 8, 15: 9, 16: 10, 17: 11, 18: 0, 19: 0, 20: 0, 21: 12, 22: 13,
}
_SYNLIDAR_MAP = {
    0: 0, 1: 1, 2: 4, 3: 4, 4: 5, 5: 2, 6: 3, 7: 5, 8: 9, 9: 11, 10: 10, 11: 12, 12: 6, 13: 6,
    14: 6, 15: 6, 16: 7, 17: 8, 18: 13, 19: 0, 20: 15, 21: 16, 22: 17, 23: 19, 24: 18, 25: 0,
    26: 14, 27: 0, 28: 0, 29: 0, 30: 0, 31: 0, 32: 0,
}
_DAPS_MAP = {
    0: 0, 1: 0, 10: 1, 11: 1, 13: 1, 15: 1, 16: 1, 18: 1, 20: 1, 30: 2, 31: 2, 32: 2, 40: 3,
    44: 3, 48: 3, 49: 3, 50: 4, 51: 4, 52: 0, 60: 3, 70: 4, 71: 4, 72: 3, 80: 4, 81: 4,
    99: 0, 252: 1, 253: 2, 254: 2, 255: 2, 256: 1, 257: 1, 258: 1, 259: 1,
}
# fmt: on


SCRIBBLEKITTI = LidarSegSpec(
    name="scribblekitti",
    title="ScribbleKITTI",
    classes=SEMANTICKITTI_CLASSES,
    learning_map=dict(load_semantickitti_config()["learning_map"]),
    splits=_KITTI_SPLITS,
    train_label_dir="scribbles",
    doc=(
        "ScribbleKITTI (Unal et al., CVPR 2022, github.com/ouenal/scribblekitti): SemanticKITTI's "
        "scans with scribble labels in sequences/NN/scribbles/*.label (same uint32 format and raw "
        "ids). Ontology and learning map: SemanticKITTI's (the reference's eval_labels dict in "
        "dataloader_scribble_kitti.py equals the semantic-kitti.yaml learning_map). Splits: "
        "train 00-07, 09, 10 / val 08 (the reference's TRAIN_SET / VALIDATION_SET). Train labels "
        "are the scribbles; validation uses the dense SemanticKITTI labels (labels/), the "
        "ScribbleKITTI paper's protocol. The reference instead reads scribbles/ for validation "
        "too and keeps every 10th validation frame: set data.val_label_dir=scribbles and "
        "data.val_skip=10 to reproduce that."
    ),
)

RELLIS3D = LidarSegSpec(
    name="rellis3d",
    title="RELLIS-3D",
    classes=_RELLIS_CLASSES,
    learning_map=_RELLIS_MAP,
    split_files={"train": "pt_train.lst", "val": "pt_val.lst", "test": "pt_test.lst"},
    sequences_dir="",
    scan_dir="os1_cloud_node_kitti_bin",
    label_dir="os1_cloud_node_semantickitti_label_id",
    doc=(
        "RELLIS-3D (Jiang et al., ICRA 2021, github.com/unmannedlab/RELLIS-3D): off-road Ouster "
        "OS1 scans in <root>/<seq 00000-00004>/os1_cloud_node_kitti_bin/*.bin (float32 x4) with "
        "labels in os1_cloud_node_semantickitti_label_id/*.label. Splits: the official list "
        "files pt_train.lst / pt_val.lst / pt_test.lst (benchmarks/SalsaNext/.../rellis.yaml "
        "'split'), one '<scan> <label>' line per frame, as the reference reads them. Ontology: "
        "the 20 raw classes of rellis.yaml (void 0 ... rubble 34) each kept as one learning id, "
        "the reference's learning_map ('we keep same setting with seal'); the official SalsaNext "
        "map instead folds dirt, sky, object, asphalt and building into void (15 classes). The "
        "reference's zero-filled lookup sends raw ids 2, 11, ... silently to void; here they are "
        "an error naming the file."
    ),
)

SEMANTICPOSS = LidarSegSpec(
    name="semanticposs",
    title="SemanticPOSS",
    classes=_POSS_CLASSES,
    learning_map=_POSS_MAP,
    splits={"train": ("00", "01", "02", "04", "05"), "val": ("03",)},
    doc=(
        "SemanticPOSS (Pan et al., IV 2020, www.poss.pku.edu.cn/semanticposs.html): 6 sequences "
        "of 40-beam Pandora scans in SemanticKITTI layout (sequences/NN/velodyne/*.bin float32 "
        "x4, labels/*.label uint32, semantic id in the lower 16 bits). Ontology: the raw ids of "
        "the SemanticPOSS label file semantic-poss.yaml (0 unlabeled, 4 '1 person', 5 '2+ "
        "person', 6 rider, 7 car, 8 trunk, 9 plants, 10-12 traffic signs, 13 pole, 14 trashcan, "
        "15 building, 16 cone/stone, 17 fence, 21 bike, 22 ground) merged into 13 classes "
        "(people, and the three sign kinds, fold into one); the 'don't care / not known' ids "
        "1-3 and 18-20 map to ignore. This is exactly the learning map the reference's "
        "dataloader_semanticstf.py carries (ids up to 22, 13 classes), i.e. the one of its "
        "unpublished SemanticPOSS loader. Split (no reference loader; a documented choice): "
        "train 00, 01, 02, 04, 05 / val 03, the split of public SemanticPOSS code (e.g. the "
        "SynLiDAR -> SemanticPOSS adaptation repositories evaluate on sequence 03 with 13 "
        "classes + ignore)."
    ),
)

SEMANTICSTF = LidarSegSpec(
    name="semanticstf",
    title="SemanticSTF",
    classes=SEMANTICKITTI_CLASSES,
    learning_map={0: 0, **{i: i for i in range(1, 20)}, 20: 0},
    splits={"train": ("train",), "val": ("val",), "test": ("test",)},
    sequences_dir="",
    point_fields=5,
    intensity_divisor=255.0,
    doc=(
        "SemanticSTF (Xiao et al., CVPR 2023, github.com/xiaoaoran/SemanticSTF): adverse-weather "
        "scans in <root>/{train,val,test}/velodyne/*.bin with labels/*.label. 5 float32 per "
        "point, read as reshape(-1, 5)[:, :4] (the reference and PointDR/core/datasets/"
        "semantic_stf.py); the intensity is stored in 0..255 and divided by 255 as PointDR does "
        "(SemanticKITTI's remission scale; the reference keeps 0..255, so its intensity+1 "
        "feature is up to 256). Ontology: raw ids 1-19 are SemanticKITTI's 19 classes in their "
        "learning order, 0 unlabeled, 20 'invalid' (the adverse-weather class: rain, snow, fog "
        "returns), both ignored (PointDR's learning_map). The reference's dataloader_"
        "semanticstf.py applies SemanticPOSS's learning map instead (4,5->1, ..., 22->13), which "
        "scrambles SemanticSTF's ids (car 1 -> ignore, road 9 -> 5); not followed here."
    ),
)

SYNLIDAR = LidarSegSpec(
    name="synlidar",
    title="SynLiDAR",
    classes=SEMANTICKITTI_CLASSES,
    learning_map=_SYNLIDAR_MAP,
    splits={"train": tuple(f"{i:02d}" for i in range(12)), "val": ("12",)},
    sequences_dir="",
    doc=(
        "SynLiDAR (Xiao et al., AAAI 2022, github.com/xiaoaoran/SynLiDAR): 13 synthetic "
        "sequences in <root>/NN/velodyne/*.bin (float32 x4) and <root>/NN/labels/*.label (no "
        "sequences/ folder, README 'organized in the following format'), 32 classes "
        "(annotations.yaml). Learning map: SynLiDAR -> SemanticKITTI's 19 classes as in "
        "xiaoaoran/SemanticSTF PointDR/core/datasets/mapping/synlidar.yaml (pick-up and truck "
        "-> truck, bus -> other-vehicle, female/male/kid/group -> person, other-structure, "
        "traffic-cone, garbage-can, electric-box, table, chair, bench, other-object -> ignore), "
        "shifted by one for 0 = ignore. Split (no reference loader; SynLiDAR defines none and "
        "PointDR trains on all 13): a documented choice, train 00-11 / val 12."
    ),
)

DAPS3D = LidarSegSpec(
    name="daps3d",
    title="DAPS-3D",
    classes=("unlabeled", "vehicle", "human", "surface", "obstacle"),
    learning_map=_DAPS_MAP,
    splits={
        "train": ("38-18_7_72_90",),
        "val": ("38-18_7_72_90", "42-48_10_78_90", "44-18_11_15_32"),
    },
    sequences_dir="data",
    scan_dir="clouds",
    label_dir="labels",
    doc=(
        "DAPS-3D (Klokov et al. 2023, github.com/subake/DAPS3D), its real DAPS-2 part: Ouster "
        "OS0 scans in <DAPS-2>/data/<sequence>/clouds/*.bin (float32 x4) with labels/*.label "
        "(DATASET.md 'Folder Structure'). Raw ids are SemanticKITTI's; the learning map to 5 "
        "classes (unlabeled, vehicle, human, surface, static obstacle) is cfgs/label_params.yml, "
        "identical to the reference's eval_labels. Splits: the reference's TRAIN_SET / "
        "VALIDATION_SET (DAPS3D cfgs/navigation.yml 'daps2'); note that the validation set "
        "contains the training sequence, as published."
    ),
)

LIDARSEG_SPECS: dict[str, LidarSegSpec] = {
    s.name: s
    for s in (
        semantickitti_spec(),
        SCRIBBLEKITTI,
        RELLIS3D,
        SEMANTICPOSS,
        SEMANTICSTF,
        SYNLIDAR,
        DAPS3D,
    )
}
"""Every SemanticKITTI-family dataset by name (``data.dataset`` of an olivine-train config)."""


def get_lidarseg_spec(name: str) -> LidarSegSpec:
    """The descriptor called ``name``; an unknown name lists the known ones."""
    if name not in LIDARSEG_SPECS:
        known = sorted(LIDARSEG_SPECS)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown LiDAR segmentation dataset {name!r}{hint}; known: {', '.join(known)}"
        )
    return LIDARSEG_SPECS[name]
