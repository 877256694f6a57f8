"""Cross-dataset fine-tuning through the CLI: each shipped finetune_<dataset>_<fraction> config
runs a few steps on a tiny synthetic export of its dataset, and the configs carry the reference's
settings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from olivine_data.datasets import get_lidarseg_spec
from olivine_data.synthetic import SyntheticWorldConfig, World, export_lidarseg, generate_world
from olivine_train.cli import main
from olivine_train.config import ConfigError, list_configs, load_config
from olivine_train.logging import read_jsonl

#: (config, data.skip, data.batch_size, optim.lr_head, classes, feature): the paper's table.
COLUMNS = [
    ("finetune_scribblekitti_1pct", 100, 10, 2.0, 20, "intensity+1"),
    ("finetune_scribblekitti_10pct", 10, 10, 2.0, 20, "intensity+1"),
    ("finetune_rellis3d_1pct", 100, 2, 2.0, 20, "intensity+1"),
    ("finetune_rellis3d_10pct", 10, 10, 2.0, 20, "intensity+1"),
    ("finetune_semanticposs_50pct", 2, 10, 2.0, 14, "intensity+1"),
    ("finetune_semanticposs_100pct", 1, 10, 2.0, 14, "intensity+1"),
    ("finetune_semanticstf_50pct", 2, 10, 2.0, 20, "intensity+1"),
    ("finetune_semanticstf_100pct", 1, 10, 2.0, 20, "intensity+1"),
    ("finetune_synlidar_1pct", 100, 10, 2.0, 20, "intensity+1"),
    ("finetune_synlidar_10pct", 10, 10, 2.0, 20, "intensity+1"),
    ("finetune_daps3d_50pct", 2, 2, 0.2, 5, "intensity"),
    ("finetune_daps3d_100pct", 1, 2, 0.2, 5, "intensity"),
]


def test_every_column_has_a_config_with_the_reference_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert {c[0] for c in COLUMNS} <= set(list_configs())
    assert main(["ls"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {c[0]} " in listed for c in COLUMNS)
    for name, skip, batch, lr_head, classes, feature in COLUMNS:
        cfg = load_config(name, check_paths=False)
        d, o = cfg.data, cfg.optim
        assert (d.skip, d.batch_size, o.lr_head, cfg.downstream.num_classes, d.feature) == (
            skip, batch, lr_head, classes, feature
        ), name  # fmt: skip
        assert get_lidarseg_spec(d.dataset).num_classes == classes
        assert (d.voxel_mode, d.voxel_size) == ("cylindrical", [0.1, 1.0, 0.1])
        assert (o.lr, o.momentum, o.dampening, o.weight_decay) == (0.05, 0.9, 0.1, 1e-4)
        assert (o.scheduler, o.epochs, cfg.downstream.lovasz_weight) == ("cosine", 100, 1.0)
        assert cfg.run.name == name and cfg.recipe == "downstream"
    with pytest.raises(ConfigError, match=r"downstream.num_classes: DAPS-3D has 5 classes"):
        load_config("finetune_daps3d_50pct", ["downstream.num_classes=20"], check_paths=False)
    with pytest.raises(ConfigError, match=r"data.val_skip: must be > 0"):
        load_config("finetune_synlidar_1pct", ["data.val_skip=0"], check_paths=False)


@pytest.fixture(scope="module")
def world() -> World:
    cfg = SyntheticWorldConfig(
        scenes=2, samples_per_scene=2, seed=1, image_size=(96, 54), lidar_azimuth_steps=180
    )
    return generate_world(cfg)


@pytest.mark.parametrize(
    "config",
    [
        "finetune_scribblekitti_1pct",
        "finetune_rellis3d_1pct",
        "finetune_semanticposs_50pct",
        "finetune_semanticstf_50pct",
        "finetune_synlidar_1pct",
        "finetune_daps3d_50pct",
    ],
)
def test_finetune_a_few_steps_on_each_dataset(
    config: str,
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dataset = config.split("_")[1]
    root = export_lidarseg(world.config, tmp_path / dataset, dataset, progress=False, world=world)
    code = main(
        [
            "finetune",
            config,
            f"data.root={root}",
            f"run.out_dir={tmp_path}",
            "run.name=ft",
            "run.progress=false",
            "run.num_threads=1",
            "model.point_encoder=minkunet_tiny",
            "data.batch_size=2",
            "optim.max_steps=2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    spec = get_lidarseg_spec(dataset)
    assert spec.classes[-1] in out and "mIoU" in out  # the dataset's classes are scored
    train = read_jsonl(tmp_path / "ft" / "metrics.jsonl", kind="train")
    assert len(train) >= 1 and all(math.isfinite(r["loss/total"]) for r in train)
    val = read_jsonl(tmp_path / "ft" / "metrics.jsonl", kind="val")
    assert val and all(0.0 <= r["miou"] <= 1.0 for r in val)
    # the label fraction, written down: the config's skip keeps the first frame of the sorted list
    scans = (tmp_path / "ft" / "train_scans.txt").read_text().splitlines()
    skip = load_config(config, check_paths=False).data.skip
    assert len(scans) == math.ceil(2 / skip) and scans[0].endswith("0000")  # frame 0 of a scene


@pytest.mark.parametrize("fault", ["missing split file", "label out of the ontology"])
def test_bad_files_are_one_error_line_through_the_cli(
    fault: str, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = export_lidarseg(
        world.config, tmp_path / "rellis", "rellis3d", progress=False, world=world
    )
    if fault == "missing split file":
        (root / "pt_val.lst").unlink()
        want = f"RELLIS-3D split file not found: {root / 'pt_val.lst'}"
    else:
        scan, label = (root / "pt_train.lst").read_text().split("\n")[0].split()
        raw = np.fromfile(root / label, np.uint32)
        raw[:7] = 2  # RELLIS-3D has no raw class 2
        raw.tofile(root / label)
        want = f"{root / label}: semantic ids [2] are not in the RELLIS-3D learning_map (7 points)"
    args = [f"data.root={root}", f"run.out_dir={tmp_path}", "run.progress=false"]
    code = main(["finetune", "finetune_rellis3d_1pct", *args, "data.skip=1", "optim.max_steps=1"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("olivine-train: error: "), err
    assert want in err.splitlines()[0] and "Traceback" not in err
