"""Downstream through the real CLI: fine-tuning from a backbone export, evaluation, probing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.checkpoint import save_backbone
from olivine_train.cli import main
from olivine_train.config import load_config
from olivine_train.logging import read_jsonl
from olivine_train.recipes.downstream import run_downstream

# on top of the shared downstream_overrides (tests/conftest.py)
TINY = ["model.point_encoder=minkunet_tiny", "optim.max_steps=2", "run.log_every=1"]


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from olivine_models import create_point_encoder

    torch.manual_seed(11)
    net = create_point_encoder("minkunet_tiny")
    return save_backbone(tmp_path_factory.mktemp("bb") / "backbone.pt", net, "minkunet_tiny", 1)


def test_finetune_then_evaluate_checkpoint(
    tiny_world: Path,
    tmp_path: Path,
    backbone_file: Path,
    capsys: pytest.CaptureFixture[str],
    down_overrides_for: Any,
) -> None:
    args = down_overrides_for(tiny_world, tmp_path, "ft") + TINY
    args += [f"downstream.pretrained={backbone_file}"]
    assert main(["finetune", "finetune_nuscenes_1pct", *args]) == 0
    out = capsys.readouterr().out
    assert "loaded" in out  # the load_matching_state report is printed
    run = tmp_path / "ft"
    train = read_jsonl(run / "metrics.jsonl", kind="train")
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["loss/total"] == pytest.approx(r["loss/ce"] + r["loss/lovasz"]) for r in train)
    val = read_jsonl(run / "metrics.jsonl", kind="val")
    assert len(val) == 1 and 0.0 <= val[0]["miou"] <= 1.0
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()

    assert main(["evaluate", str(run / "best.pt"), "run.progress=false"]) == 0
    text = capsys.readouterr().out
    found = re.search(r"mIoU \(\d+ classes present\)\s+([0-9.]+)", text)
    ref = re.search(r"mIoU, ref\. convention\s+([0-9.]+)", text)
    assert found is not None and ref is not None, text
    assert float(found.group(1)) == pytest.approx(100 * val[0]["miou_present"], abs=0.006)
    assert float(ref.group(1)) == pytest.approx(100 * val[0]["miou"], abs=0.006)


def test_pretrained_backbone_mismatch_is_reported(
    tiny_world: Path,
    tmp_path: Path,
    backbone_file: Path,
    capsys: pytest.CaptureFixture[str],
    down_overrides_for: Any,
) -> None:
    args = (
        down_overrides_for(tiny_world, tmp_path, "bad")
        + TINY
        + [
            f"downstream.pretrained={backbone_file}",
            "model.point_encoder=minkunet14",
        ]
    )
    assert main(["finetune", "finetune_nuscenes_1pct", *args]) == 1
    assert "holds a 'minkunet_tiny' backbone" in capsys.readouterr().err


def test_linear_probe_freezes_trunk_and_cache_is_exact(
    tiny_world: Path, tmp_path: Path, backbone_file: Path, down_overrides_for: Any
) -> None:
    results: dict[bool, Any] = {}
    for cache in (True, False):
        cfg = load_config(
            "linear_probe_nuscenes",
            down_overrides_for(tiny_world, tmp_path, f"lp{cache}")
            + TINY
            + [
                f"downstream.pretrained={backbone_file}",
                "data.augment=false",
                f"downstream.cache_features={str(cache).lower()}",
                "optim.max_steps=3",
            ],
        )
        results[cache] = run_downstream(cfg)
    start = torch.load(backbone_file, weights_only=True)["state_dict"]
    states = {}
    for cache, res in results.items():
        ckpt = torch.load(Path(res.run_dir) / "last.pt", weights_only=True)
        states[cache] = ckpt["model"]
        for name, value in start.items():  # trunk (incl. BN running stats) untouched
            assert torch.equal(ckpt["model"][f"backbone.{name}"], value), name
    for key in ("classifier.linear.weight", "classifier.linear.bias"):
        torch.testing.assert_close(states[True][key], states[False][key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(states[True][key], torch.zeros_like(states[True][key]))
    assert results[True].scores.miou == pytest.approx(results[False].scores.miou, abs=1e-6)
