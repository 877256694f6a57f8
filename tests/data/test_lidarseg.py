"""The SemanticKITTI-family reader on files written here in each dataset's documented layout.

The layouts, raw ids and learning maps below are typed from the datasets' own documentation and
the reference loaders (github.com/Eaphan/OLIVINE downstream/dataloader_*.py), not taken from the
descriptors, so a wrong descriptor fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from olivine_data.datasets import (
    DAPS3D,
    LIDARSEG_SPECS,
    RELLIS3D,
    SCRIBBLEKITTI,
    SEMANTICPOSS,
    SEMANTICSTF,
    SYNLIDAR,
    LidarSegDataset,
    LidarSegSpec,
    get_lidarseg_spec,
    load_semantickitti_config,
)

# fmt: off
# The reference loaders' learning maps (dataloader_rellis3d.py, dataloader_daps3d.py).
REF_RELLIS = {0: 0, 1: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 6, 8: 7, 9: 8, 10: 9, 12: 10, 15: 11,
              17: 12, 18: 13, 19: 14, 23: 15, 27: 16, 31: 17, 33: 18, 34: 19}
REF_DAPS = {0: 0, 1: 0, 10: 1, 11: 1, 13: 1, 15: 1, 16: 1, 18: 1, 20: 1, 30: 2, 31: 2, 32: 2,
            40: 3, 44: 3, 48: 3, 49: 3, 50: 4, 51: 4, 52: 0, 60: 3, 70: 4, 71: 4, 72: 3, 80: 4,
            81: 4, 99: 0, 252: 1, 253: 2, 254: 2, 255: 2, 256: 1, 257: 1, 258: 1, 259: 1}
# The map in the reference's dataloader_semanticstf.py (SemanticPOSS's ids, see the spec doc).
REF_STF_LOADER = {0: 0, 4: 1, 5: 1, 6: 2, 7: 3, 8: 4, 9: 5, 10: 6, 11: 6, 12: 6, 13: 7, 14: 8,
                  15: 9, 16: 10, 17: 11, 21: 12, 22: 13}
# fmt: on


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array.tofile(path)


def _points(n: int, fields: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-20, 20, size=(n, fields)).astype(np.float32)
    pts[:, 3] = rng.uniform(0, 1, n)
    return pts


def test_learning_maps_match_the_references() -> None:
    assert dict(RELLIS3D.learning_map) == REF_RELLIS and RELLIS3D.num_classes == 20
    assert dict(DAPS3D.learning_map) == REF_DAPS and DAPS3D.num_classes == 5
    assert dict(SCRIBBLEKITTI.learning_map) == load_semantickitti_config()["learning_map"]
    # SemanticPOSS: the reference's (misplaced) map, plus the don't-care ids sent to ignore
    assert {k: v for k, v in SEMANTICPOSS.learning_map.items() if k in REF_STF_LOADER} == (
        REF_STF_LOADER
    )
    assert {k for k, v in SEMANTICPOSS.learning_map.items() if k not in REF_STF_LOADER} == {
        1, 2, 3, 18, 19, 20
    } and SEMANTICPOSS.num_classes == 14  # fmt: skip
    # SemanticSTF: raw 1..19 are SemanticKITTI's classes in learning order, 20 'invalid' ignored
    assert SEMANTICSTF.classes[1] == "car" and SEMANTICSTF.classes[19] == "traffic-sign"
    assert SEMANTICSTF.learning_map[20] == 0 and SEMANTICSTF.learning_map[9] == 9
    # SynLiDAR (PointDR synlidar.yaml, 0-based + 1): female 12 -> person, bus 4 -> other-vehicle
    assert SYNLIDAR.classes[SYNLIDAR.learning_map[12]] == "person"
    assert SYNLIDAR.classes[SYNLIDAR.learning_map[4]] == "other-vehicle"
    assert SYNLIDAR.classes[SYNLIDAR.learning_map[9]] == "sidewalk"
    assert SYNLIDAR.learning_map[25] == 0  # traffic-cone: ignore
    assert sorted(LIDARSEG_SPECS) == sorted(
        ["semantickitti", "scribblekitti", "rellis3d", "semanticposs", "semanticstf",
         "synlidar", "daps3d"]
    )  # fmt: skip
    for spec in LIDARSEG_SPECS.values():
        assert spec.doc and spec.classes[0] in ("ignore", "void", "unlabeled")


def test_rellis3d_list_files(tmp_path: Path) -> None:
    pts = [_points(50, seed=i) for i in range(3)]
    raw = np.array([0, 1, 3, 17, 34] * 10, dtype=np.uint32)  # void, dirt, grass, person, rubble
    lines = []
    for i, p in enumerate(pts):
        scan = f"00001/os1_cloud_node_kitti_bin/{i:06d}.bin"
        label = f"00001/os1_cloud_node_semantickitti_label_id/{i:06d}.label"
        _write(tmp_path / scan, p)
        _write(tmp_path / label, raw | np.uint32(5 << 16))
        lines.append(f"{scan} {label}")
    (tmp_path / "pt_train.lst").write_text("\n".join(lines[::-1]) + "\n")  # sorted by the reader
    (tmp_path / "pt_val.lst").write_text(lines[0].split()[0] + "\n")  # label column optional
    ds = LidarSegDataset(tmp_path, RELLIS3D, split="train", skip=2)
    assert ds.tokens == ["00001/000000", "00001/000002"]
    s = ds[1]
    np.testing.assert_array_equal(s.points, pts[2])
    assert s.point_labels is not None
    assert [RELLIS3D.classes[c] for c in s.point_labels[:5]] == [
        "void", "dirt", "grass", "person", "rubble"
    ]  # fmt: skip
    val = LidarSegDataset(tmp_path, RELLIS3D, split="valid")
    assert (
        val.label_path(0) == tmp_path / "00001/os1_cloud_node_semantickitti_label_id/000000.label"
    )
    (tmp_path / "pt_val.lst").unlink()
    with pytest.raises(FileNotFoundError, match=r"RELLIS-3D split file not found: .*pt_val\.lst$"):
        LidarSegDataset(tmp_path, RELLIS3D, split="val")
    (tmp_path / "pt_val.lst").write_text("00001/a.txt\n")
    with pytest.raises(ValueError, match=r"pt_val\.lst:1: expected '<scan>\.bin"):
        LidarSegDataset(tmp_path, RELLIS3D, split="val")


def test_semanticstf_five_floats_and_intensity(tmp_path: Path) -> None:
    pts = _points(40, fields=5)
    pts[:, 3] = np.arange(40, dtype=np.float32) * 6  # 0..234, SemanticSTF's 0..255 scale
    _write(tmp_path / "val/velodyne/2018-02-03_000100.bin", pts)
    raw = np.array([0, 1, 9, 19, 20] * 8, dtype=np.uint32)  # unlabeled, car, road, sign, invalid
    _write(tmp_path / "val/labels/2018-02-03_000100.label", raw)
    s = LidarSegDataset(tmp_path, SEMANTICSTF, split="val")[0]
    np.testing.assert_array_equal(s.points[:, :3], pts[:, :3])  # reshape(-1, 5)[:, :4]
    np.testing.assert_array_equal(s.points[:, 3], pts[:, 3] / np.float32(255))
    assert s.point_labels is not None
    names = [SEMANTICSTF.classes[c] for c in s.point_labels[:5]]
    assert names == ["ignore", "car", "road", "traffic-sign", "ignore"]
    # a 4-float file is not a SemanticSTF scan (160 floats = 32 five-float points, 40 four-float)
    pts[:, :4].tofile(tmp_path / "val/velodyne/2018-02-03_000100.bin")
    bad = LidarSegDataset(tmp_path, SEMANTICSTF, split="val")
    with pytest.raises(ValueError, match=r"000100\.label: 160 bytes = 40 labels .*expected 32"):
        bad[0]


@pytest.mark.parametrize(
    ("spec", "folder", "scans", "labels", "raw", "want"),
    [
        (SEMANTICPOSS, "sequences/03", "velodyne", "labels", [4, 5, 6, 22, 1],
         ["person", "person", "rider", "ground", "unlabeled"]),
        (SYNLIDAR, "12", "velodyne", "labels", [13, 2, 21, 32, 1],
         ["person", "truck", "trunk", "ignore", "car"]),
        (DAPS3D, "data/42-48_10_78_90", "clouds", "labels", [254, 72, 10, 51, 99],
         ["human", "surface", "vehicle", "obstacle", "unlabeled"]),
        (SCRIBBLEKITTI, "sequences/08", "velodyne", "labels", [10, 40, 252, 81, 0],
         ["car", "road", "car", "traffic-sign", "ignore"]),
    ],
)  # fmt: skip
def test_sequence_layouts(
    tmp_path: Path,
    spec: LidarSegSpec,
    folder: str,
    scans: str,
    labels: str,
    raw: list[int],
    want: list[str],
) -> None:
    pts = _points(len(raw))
    _write(tmp_path / folder / scans / "000007.bin", pts)
    _write(tmp_path / folder / labels / "000007.label", np.array(raw, np.uint32) | (3 << 16))
    ds = LidarSegDataset(tmp_path, spec, sequences=[Path(folder).name])
    assert Path(folder).name in spec.splits["val"]
    assert ds.tokens == [f"{Path(folder).name}/000007"]
    s = ds[0]
    np.testing.assert_array_equal(s.points, pts)
    assert s.point_labels is not None
    assert [spec.classes[c] for c in s.point_labels] == want


def test_scribblekitti_trains_on_scribbles(tmp_path: Path) -> None:
    _write(tmp_path / "sequences/00/velodyne/000000.bin", _points(4))
    _write(tmp_path / "sequences/00/scribbles/000000.label", np.array([0, 0, 10, 0], np.uint32))
    _write(tmp_path / "sequences/00/labels/000000.label", np.array([40, 40, 10, 70], np.uint32))
    train = LidarSegDataset(tmp_path, SCRIBBLEKITTI, sequences=["00"], label_dir="scribbles")
    assert train[0].point_labels.tolist() == [0, 0, 1, 0]  # type: ignore[union-attr]
    assert SCRIBBLEKITTI.label_dir_for("train") == "scribbles"
    assert SCRIBBLEKITTI.label_dir_for("val") == "labels"
    with pytest.raises(FileNotFoundError, match=r"ScribbleKITTI sequence folder not found"):
        LidarSegDataset(tmp_path, SCRIBBLEKITTI, split="train")  # 01-07, 09, 10 are missing


def test_bad_files_give_one_line_naming_the_file(tmp_path: Path) -> None:
    d = tmp_path / "data/38-18_7_72_90"
    pts = _points(30)
    _write(d / "clouds/000000.bin", pts)
    _write(d / "labels/000000.label", np.full(30, 40, np.uint32))
    ds = LidarSegDataset(tmp_path, DAPS3D, split="train")
    assert ds[0].point_labels.tolist() == [3] * 30  # type: ignore[union-attr]
    (d / "clouds/000000.bin").write_bytes(pts.tobytes()[:-4])  # scan of the wrong length
    with pytest.raises(
        ValueError, match=r"000000\.bin: size 476 bytes is not a multiple of 16"
    ) as e:
        ds[0]
    assert "\n" not in str(e.value)
    pts.tofile(d / "clouds/000000.bin")
    np.full(29, 40, np.uint32).tofile(d / "labels/000000.label")  # labels of the wrong length
    with pytest.raises(ValueError, match=r"000000\.label: 116 bytes = 29 labels .*expected 30"):
        ds[0]
    lab = np.full(30, 40, np.uint32)
    lab[[3, 4]] = 7  # raw id 7 is not in DAPS-3D's ontology
    lab[5] = 70000  # beyond the map: 70000 & 0xFFFF = 4464
    lab.tofile(d / "labels/000000.label")
    with pytest.raises(ValueError) as err:
        ds[0]
    msg = str(err.value)
    assert (
        "000000.label: semantic ids [7, 4464] are not in the DAPS-3D learning_map (3 points)" in msg
    )
    assert "\n" not in msg
    with pytest.raises(ValueError, match=r"unknown DAPS-3D split 'test'"):
        LidarSegDataset(tmp_path, DAPS3D, split="test")
    with pytest.raises(ValueError, match=r"unknown LiDAR segmentation dataset 'rellis'.*rellis3d"):
        get_lidarseg_spec("rellis")
    with pytest.raises(ValueError, match="outside 0..4"):
        LidarSegSpec("x", "X", DAPS3D.classes, {0: 0, 1: 5})


def test_skip_keeps_a_fixed_sorted_subset(tmp_path: Path) -> None:
    for seq in ("05", "04"):
        for i in (3, 1, 0, 2):
            _write(tmp_path / f"sequences/{seq}/velodyne/{i:06d}.bin", _points(2))
    ds = LidarSegDataset(tmp_path, SEMANTICPOSS, sequences=["05", "04"], skip=3, with_labels=False)
    assert ds.tokens == ["04/000000", "04/000003", "05/000002"]
    assert ds[0].point_labels is None
