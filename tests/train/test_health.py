"""Training health: induced failures are flagged, a healthy run is not, metrics reach the logs.

The runs are real pretrainings of the tiny world (CPU, a few seconds each): a learning rate far
too high keeps the terms at chance, a vMF prior frozen after one update collapses the semantic
features, the freeze guard prevents that, and a small run at a sane learning rate leaves chance by
the documented margin (``health.chance_margin``, 5 %).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.config import HealthConfig, load_config
from olivine_train.health import HealthMonitor, format_summary
from olivine_train.logging import read_jsonl
from olivine_train.recipes.pretrain import run_pretrain

# settings under test (not the demo's): 20 steps of the tiny world, learning rate 0.05
BASE = ["optim.max_steps=20", "optim.epochs=100", "optim.lr=0.05", "run.image_log_every=0"]


def pretrain(world: Path, out: Path, name: str, overrides_for: Any, *extra: str) -> Any:
    cfg = load_config("demo", overrides_for(world, out, name) + BASE + list(extra))
    return run_pretrain(cfg)


def kinds(summary: Any) -> set[str]:
    return {w.split(":")[0] for w in summary.warnings}


# ----------------------------------------------------------------------------- monitor alone


def test_monitor_verdicts_from_recorded_histories() -> None:
    mon = HealthMonitor(HealthConfig(window=0.5))
    for step in range(1, 11):
        mon.observe_terms(step, {"ppnce": (6.9, 6.93), "sup": (2.0 - 0.05 * step, 2.2)})
    mon.observe_ranks(10, {"backbone": 1.3, "point_pp": 6.0})
    stats = {"mu_cos_mean": 0.9, "mu_cos_max": 0.99, "kappa_min": 3.0, "kappa_max": 9.0}
    mon.observe_vmf(4, stats, frozen_now=True, warmup_end=4)
    s = mon.summary(10, vmf_active=True)
    assert kinds(s) == {"at_chance", "collapsed", "vmf_collinear"}
    assert s.terms["sup"]["loss"] == pytest.approx(sum(2.0 - 0.05 * k for k in range(6, 11)) / 5)
    assert s.terms["sup"]["left_chance"] == 1.0 and s.terms["ppnce"]["left_chance"] == 0.0
    assert s.terms["ppnce"]["window_steps"] == 5.0
    assert "ppnce" in format_summary(s) and "AT CHANCE" in format_summary(s)
    clone = HealthMonitor(HealthConfig(window=0.5))
    clone.load_state_dict(json.loads(json.dumps(mon.state_dict())))
    assert clone.summary(10, vmf_active=True).to_dict() == s.to_dict()

    healthy = HealthMonitor(HealthConfig())
    healthy.observe_terms(1, {"ppnce": (5.0, 6.93)})
    healthy.observe_ranks(1, {"backbone": 8.0})
    assert healthy.summary(1, vmf_active=False).healthy


def test_monitor_keeps_only_the_final_window_of_a_run_of_known_length() -> None:
    mon = HealthMonitor(HealthConfig(window=0.25), total_steps=8)
    for step in range(1, 9):
        mon.observe_terms(step, {"ppnce": (float(step), 10.0)})
    assert [t[0] for t in mon.margins["ppnce"]] == [7, 8]  # the checkpoint carries 2 entries
    s = mon.summary(8, vmf_active=False)
    assert s.terms["ppnce"]["window_steps"] == 2.0 and s.terms["ppnce"]["loss"] == 7.5


def test_guard_that_never_freezes_is_reported() -> None:
    mon = HealthMonitor(HealthConfig())
    stats = {"mu_cos_mean": 0.8, "mu_cos_max": 0.99, "kappa_min": 3.0, "kappa_max": 9.0}
    for step in range(1, 9):
        mon.observe_vmf(step, stats, frozen_now=False, warmup_end=4)
    assert kinds(mon.summary(8, vmf_active=True)) == {"vmf_not_frozen"}
    assert mon.summary(4, vmf_active=True).healthy  # still within the warm-up


# ----------------------------------------------------------------------------- real runs


def test_healthy_small_run_leaves_chance_and_logs_health(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    result = pretrain(tiny_world, tmp_path, "ok", overrides_for, "loss.vmf_weight=0")
    s = result.health
    assert s.healthy, format_summary(s)
    assert set(s.terms) == {"ppnce", "sup"}
    for term in s.terms.values():
        assert term["loss"] < term["chance"] * (1 - 0.05)
    assert s.terms["ppnce"]["chance"] == pytest.approx(math.log(256))
    assert min(s.effective_ranks.values()) > 2.0
    run = tmp_path / "ok"
    stored = json.loads((run / "health.json").read_text())
    assert stored["healthy"] is True and stored["steps"] == 20
    records = read_jsonl(run / "metrics.jsonl", kind="train")
    assert all(r["health/ppnce/chance"] == pytest.approx(math.log(256)) for r in records)
    for r in records:
        assert r["health/sup/margin"] == pytest.approx(r["loss/sup"] - r["health/sup/chance"])
    ranked = [r["step"] for r in records if "health/erank/backbone" in r]
    assert ranked[0] == 1 and ranked[-1] == 20
    assert read_jsonl(run / "metrics.jsonl", kind="health")[0]["healthy"] is True

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "train/health/ppnce/margin",
        "train/health/sup/chance",
        "train/health/erank/backbone",
        "train/health/erank/point_sem",
    ):
        assert tag in tags, sorted(tags)


def test_learning_rate_far_too_high_is_flagged_at_chance(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    s = pretrain(
        tiny_world, tmp_path, "hot", overrides_for, "loss.vmf_weight=0", "optim.lr=5"
    ).health
    assert "at_chance" in kinds(s), format_summary(s)
    assert s.terms["ppnce"]["left_chance"] == 0.0 and s.terms["sup"]["left_chance"] == 0.0


def test_early_vmf_freeze_collapses_and_is_flagged_and_the_guard_prevents_it(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    early = ["loss.vmf_warmup_steps=1", "loss.vmf_decay=0.5"]
    s = pretrain(tiny_world, tmp_path, "early", overrides_for, *early).health
    assert {"collapsed", "vmf_collinear"} <= kinds(s), format_summary(s)
    assert s.effective_ranks["point_sem"] < 2.0
    assert s.vmf["at_freeze"]["step"] == 1.0 and s.vmf["at_freeze"]["mu_cos_mean"] > 0.5

    guarded = pretrain(
        tiny_world, tmp_path, "guard", overrides_for, *early, "loss.vmf_freeze_max_cosine=0.3"
    ).health
    assert "collapsed" not in kinds(guarded) and "vmf_collinear" not in kinds(guarded)
    assert "vmf_not_frozen" in kinds(guarded)  # it says that L_kl never acted
    assert guarded.effective_ranks["point_sem"] > 2.0


def test_resumed_run_summarises_the_whole_run(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    steps = ["optim.max_steps=6", "run.checkpoint_every=3", "loss.vmf_warmup_steps=2"]
    full = pretrain(tiny_world, tmp_path, "full", overrides_for, *steps).health

    class Killed(BaseException):
        pass

    def kill(step: int, scalars: dict[str, float]) -> None:
        if step == 4:
            raise Killed

    cfg = load_config("demo", overrides_for(tiny_world, tmp_path, "cut") + BASE + steps)
    with pytest.raises(Killed):
        run_pretrain(cfg, callbacks=[kill])
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"] == 3
    resumed = pretrain(tiny_world, tmp_path, "cut", overrides_for, *steps, "run.resume=auto")
    assert resumed.health.to_dict() == full.to_dict()
