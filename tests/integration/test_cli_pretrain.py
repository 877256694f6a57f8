"""The real CLI, in process, on a tiny synthetic world: pretraining, logging, resume, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.cli import main
from olivine_train.config import load_config
from olivine_train.logging import read_jsonl
from olivine_train.recipes.pretrain import run_pretrain


@pytest.fixture(scope="module")
def pretrain_run(
    tiny_world: Path, tmp_path_factory: pytest.TempPathFactory, overrides_for: Any
) -> Path:
    out = tmp_path_factory.mktemp("runs")
    code = main(["pretrain", "demo", *overrides_for(tiny_world, out, "p"), "optim.max_steps=3"])
    assert code == 0
    return out / "p"


def test_pretrain_cli_writes_finite_logged_losses(pretrain_run: Path) -> None:
    records = read_jsonl(pretrain_run / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        for key in ("loss/total", "loss/ppnce", "loss/sup", "loss/vmf", "lr", "pairs"):
            assert r[key] is not None and math.isfinite(r[key]), (key, r)
        total = 0.5 * r["loss/ppnce"] + 0.5 * r["loss/sup"] + r["loss/vmf"]
        assert r["loss/total"] == pytest.approx(total, rel=1e-5)
    assert records[0]["lr"] == 0.5 and records[1]["lr"] < 0.5  # cosine
    assert (pretrain_run / "backbone.pt").is_file() and (pretrain_run / "last.pt").is_file()
    cfg = load_config(str(pretrain_run / "config.yaml"))
    assert cfg.optim.max_steps == 3 and cfg.model.point_encoder == "minkunet_tiny"


def test_tensorboard_events_read_back(pretrain_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(pretrain_run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = set(tags["scalars"])
    for tag in (
        "train/loss/total",
        "train/loss/ppnce",
        "train/loss/sup",
        "train/loss/vmf",
        "train/lr",
        "train/pairs",
        "train/throughput",
        "train/vmf/kappa/car",
    ):
        assert tag in scalars, (tag, sorted(scalars))
    events = acc.Scalars("train/loss/total")
    assert [e.step for e in events] == [1, 2, 3]
    logged = read_jsonl(pretrain_run / "metrics.jsonl", kind="train")
    assert [e.value for e in events] == pytest.approx([r["loss/total"] for r in logged])
    assert "pairs/camera0_vfm_labels" in tags["images"]
    img = acc.Images("pairs/camera0_vfm_labels")[0]
    assert img.width == 64 and img.height == 32


def _losses_by_step(path: Path) -> dict[int, float]:
    return {r["step"]: r["loss/total"] for r in read_jsonl(path, kind="train")}


def test_kill_and_resume_continues_exactly(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    common = ["optim.max_steps=4", "run.checkpoint_every=2", "loss.vmf_warmup_steps=2"]
    assert main(["pretrain", "demo", *overrides_for(tiny_world, tmp_path, "full"), *common]) == 0
    full = _losses_by_step(tmp_path / "full" / "metrics.jsonl")

    class Killed(BaseException):
        pass

    def kill_after_step_2(step: int, scalars: dict[str, float]) -> None:
        if step == 2:
            raise Killed  # like SIGKILL: nothing is saved after this point

    cfg = load_config("demo", overrides_for(tiny_world, tmp_path, "killed") + common)
    with pytest.raises(Killed):
        run_pretrain(cfg, callbacks=[kill_after_step_2])
    ckpt = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2
    resumed = overrides_for(tiny_world, tmp_path, "killed") + common + ["run.resume=auto"]
    assert main(["pretrain", "demo", *resumed]) == 0
    records = read_jsonl(tmp_path / "killed" / "metrics.jsonl", kind="train")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    got = {r["step"]: r["loss/total"] for r in records}
    assert got[3] == full[3] and got[4] == full[4]  # bit-identical after resume
    assert got[3] != got[4]
    assert full[4] != 0.0 and records[-1]["loss/vmf"] != 0.0  # vMF term active after warm-up


def test_non_finite_loss_stops_with_last_good_checkpoint(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = overrides_for(tiny_world, tmp_path, "nan") + [
        "optim.max_steps=4",
        "run.checkpoint_every=1",
        "optim.lr=1e38",  # the first update overflows the weights -> NaN features
    ]
    code = main(["pretrain", "demo", *args])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "non-finite loss at step 2" in err and "last.pt" in err
    ckpt = torch.load(tmp_path / "nan" / "last.pt", weights_only=True)
    assert ckpt["step"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_with_other_model_is_a_clear_error(
    pretrain_run: Path, tiny_world: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = overrides_for(tiny_world, pretrain_run.parent, "p") + [
        "optim.max_steps=3",
        "model.point_encoder=minkunet14",
        f"run.resume={pretrain_run / 'last.pt'}",
    ]
    # a changed model is config drift (exit 2); allowed, the checkpoint still does not fit (1)
    assert main(["pretrain", "demo", *args]) == 2
    err = capsys.readouterr().err
    assert "model.point_encoder: 'minkunet_tiny' (stored) -> 'minkunet14' (now)" in err
    assert main(["pretrain", "demo", *args, "run.allow_changes=[model.point_encoder]"]) == 1
    err = capsys.readouterr().err
    assert "'minkunet_tiny', but the config asks for 'minkunet14'" in err
    assert not list(pretrain_run.glob("config.resume-*.yaml"))  # the failed resume left none


def test_validate_config_reports_everything(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "validate-config",
            "olivine_nuscenes",
            "optim.lrr=1",
            "loss.temperature=hot",
            "data.root=/nonexistent",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "did you mean 'optim.lr'" in err and "loss.temperature" in err and "data.root" in err
    assert main(["validate-config", "demo", "--no-check-paths"]) == 0
    assert "minkunet_tiny" in capsys.readouterr().out


def test_ls_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "olivine_nuscenes" in out and "minkunet34c" in out and "resnet50_dilated" in out
    for cmd in ("pretrain", "finetune", "evaluate", "make-labels", "demo", "validate-config"):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0
        assert "usage: olivine-train " + cmd in capsys.readouterr().out


def test_jsonl_is_valid_json(pretrain_run: Path) -> None:
    lines = (pretrain_run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line parses as strict JSON
    assert records and all(isinstance(r, dict) and "kind" in r and "step" in r for r in records)
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


def test_worker_count_does_not_change_the_run(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    losses = []
    for workers in (0, 2):
        name = f"w{workers}"
        args = overrides_for(tiny_world, tmp_path, name) + [
            "optim.max_steps=2",
            f"data.num_workers={workers}",
        ]
        assert main(["pretrain", "demo", *args]) == 0
        losses.append(_losses_by_step(tmp_path / name / "metrics.jsonl"))
    assert losses[0] == losses[1] and len(losses[0]) == 2
