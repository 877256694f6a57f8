"""``olivine-train probe`` through the real CLI on the tiny synthetic world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.checkpoint import save_backbone
from olivine_train.cli import main

TINY = ["model.point_encoder=minkunet_tiny"]  # the shipped config as it is (augment on)


@pytest.fixture(scope="module")
def trunk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olivine_models import create_point_encoder

    torch.manual_seed(5)
    net = create_point_encoder("minkunet_tiny")
    folder = tmp_path_factory.mktemp("run")
    save_backbone(folder / "backbone.pt", net, "minkunet_tiny", 1)
    return folder


def _probe(args: list[str]) -> int:
    return main(["probe", "linear_probe_nuscenes", *args])


def _record(path: Path) -> dict[str, Any]:
    rec = json.loads(path.read_text())
    for key in ("cache_s", "fit_s"):
        rec.pop(key)
    return rec


def test_probe_record_is_complete_and_deterministic(
    tiny_world: Path, tmp_path: Path, trunk_dir: Path, down_overrides_for: Any, capsys: Any
) -> None:
    records = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        args = [*down_overrides_for(tiny_world, tmp_path, name), *TINY]
        bins = ["--range-bins", "0", "10", "25"]
        assert _probe([*args, "--trunk", str(trunk_dir), "--out", str(out), *bins]) == 0
        records.append(_record(out))
    text = capsys.readouterr().out
    assert "converged linear probe" in text and "L-BFGS iterations" in text
    a, b = records
    a["config"]["run"].pop("name"), b["config"]["run"].pop("name")
    assert a == b  # same trunk, same data: the same fit to the last digit
    assert a["format"] == "olivine-probe/1"
    assert a["trunk"]["pretrained"] == str(trunk_dir / "backbone.pt")
    assert "loaded" in a["trunk"]["load_summary"]
    assert a["converged"] and a["max_abs_grad"] <= a["settings"]["tolerance"]
    assert a["iterations"] >= 1 and a["bn_calibration_samples"] == 0  # pretrained: not calibrated
    assert a["feature_dim"] == 16 and a["train_voxels"] > 0
    assert 0.0 <= a["scores"]["miou_present"] <= 1.0
    assert set(a["scores"]["present"]) <= set(a["scores"]["iou"])
    bins = a["scores_by_range"]
    assert list(bins) == ["0-10", "10-25", "25-inf"]
    # every evaluated point falls in exactly one bin
    assert sum(b["num_points"] for b in bins.values()) == a["scores"]["num_points"]


def test_random_trunk_is_calibrated_and_seeded(
    tiny_world: Path, tmp_path: Path, down_overrides_for: Any
) -> None:
    outs = []
    for name, seed in (("r1", 1), ("r2", 1), ("r3", 2)):
        out = tmp_path / f"{name}.json"
        args = [*down_overrides_for(tiny_world, tmp_path, name), *TINY, f"run.seed={seed}"]
        assert _probe([*args, "--trunk", "random", "--out", str(out)]) == 0
        outs.append(_record(out))
    assert outs[0]["bn_calibration_samples"] == outs[0]["train_samples"] > 0
    assert outs[0]["loss"] == outs[1]["loss"]  # the random trunk is a function of run.seed
    assert outs[0]["loss"] != outs[2]["loss"]


def test_unconverged_probe_exits_8_and_says_so(
    tiny_world: Path, tmp_path: Path, trunk_dir: Path, down_overrides_for: Any, capsys: Any
) -> None:
    out = tmp_path / "nc.json"
    args = [*down_overrides_for(tiny_world, tmp_path, "nc"), *TINY]
    code = _probe([*args, "--trunk", str(trunk_dir), "--out", str(out), "--max-iter", "1",
                   "--tol", "1e-12"])  # fmt: skip
    assert code == 8
    err = capsys.readouterr().err
    assert "did not converge" in err and str(out) in err
    assert json.loads(out.read_text())["converged"] is False


def test_probe_refuses_a_pretraining_config(
    tiny_world: Path, tmp_path: Path, down_overrides_for: Any, capsys: Any
) -> None:
    assert main(["probe", "demo", f"data.root={tiny_world}", "--trunk", "random"]) == 2
    assert "needs a downstream config" in capsys.readouterr().err
    args = down_overrides_for(tiny_world, tmp_path, "bad")
    for bad in (["--tol", "0"], ["--l2", "-1"], ["--max-iter", "0"], ["--range-bins", "10", "5"]):
        assert _probe([*args, "--trunk", "random", *bad]) == 2
        assert "probe settings:" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # a probe that never started leaves no folder


def test_default_record_is_named_after_the_trunk(
    tiny_world: Path, tmp_path: Path, trunk_dir: Path, down_overrides_for: Any
) -> None:
    args = [*down_overrides_for(tiny_world, tmp_path, "named"), *TINY]
    assert _probe([*args, "--trunk", str(trunk_dir)]) == 0
    assert _probe([*args, "--trunk", "random"]) == 0
    names = {p.name for p in (tmp_path / "named").glob("probe-*.json")}
    assert names == {f"probe-{trunk_dir.name}-backbone.json", "probe-random-seed0.json"}
    rec = json.loads((tmp_path / "named" / f"probe-{trunk_dir.name}-backbone.json").read_text())
    assert rec["augmentation"].startswith("none")  # data.augment=true in the config: not used


def test_probe_trunk_folder_without_weights(tmp_path: Path, capsys: Any) -> None:
    assert _probe(["--trunk", str(tmp_path)]) == 1
    assert "without backbone.pt or last.pt" in capsys.readouterr().err
