"""A re-run never destroys a run (issue 31, defect 1), with real processes and a real SIGTERM.

Before: a pretraining stopped by SIGTERM at step 3 (exit 7, ``last.pt`` at step 3), then the same
folder again without ``run.resume`` (with a longer ``optim.max_steps``), started at step 0 with no
message, overwrote ``last.pt`` and ``config.yaml`` and appended steps 1-3 a second time to
``metrics.jsonl``; a cut-off last line had the new first record fused onto it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.cli import main
from olivine_train.logging import read_jsonl

TIMEOUT = 300

# the real CLI in a fresh process that sends itself a real SIGTERM after step 3
_SIGTERM_AT_STEP_3 = """
import os, signal, sys
import olivine_train.recipes.pretrain as recipe
from olivine_train import cli

real = recipe.run_pretrain

def stop(step, scalars):
    if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)

recipe.run_pretrain = lambda cfg, callbacks=None: real(cfg, callbacks=[stop])
sys.exit(cli.main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("OLIVINE_TRACEBACK", None)
    return env


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train_steps(run: Path) -> list[int]:
    return [int(r["step"]) for r in read_jsonl(run / "metrics.jsonl", kind="train")]


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("olivine-train: error:")]
    return line


@pytest.fixture(scope="module")
def sigterm_run(
    tiny_world: Path, tmp_path_factory: pytest.TempPathFactory, overrides_for: Any
) -> tuple[Path, list[str]]:
    """A pretraining stopped by a real SIGTERM after step 3 (exit 7, last.pt at step 3)."""
    out = tmp_path_factory.mktemp("sigterm")
    args = [*overrides_for(tiny_world, out, "p"), "optim.max_steps=5", "run.num_threads=1"]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGTERM_AT_STEP_3, "pretrain", "demo", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )
    assert proc.returncode == 7, proc.stderr
    assert torch.load(out / "p" / "last.pt", weights_only=True)["step"] == 3
    return out / "p", args


@pytest.fixture()
def stopped_run(sigterm_run: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of :func:`sigterm_run` in this test's folder (the tests change it)."""
    src, args = sigterm_run
    run = Path(shutil.copytree(src, tmp_path / "p"))
    return run, [a.replace(f"run.out_dir={src.parent}", f"run.out_dir={tmp_path}") for a in args]


def test_a_rerun_without_resume_is_refused_and_overwrite_moves_the_old_run_aside(
    stopped_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    run, args = stopped_run
    before = {name: _digest(run / name) for name in ("last.pt", "config.yaml", "metrics.jsonl")}

    for command in ("validate-config", "pretrain"):  # validate-config says it before any work
        assert main([command, "demo", *args, "optim.max_steps=6"]) == 2
        line = _error_line(capsys.readouterr().err)
        assert line.startswith(
            f"olivine-train: error: {run / 'last.pt'}: this run folder holds a checkpoint at "
            "step 3;"
        )
        for choice in ("run.resume=auto", "another run.name", "run.overwrite=true", "p.old-<"):
            assert choice in line
    assert {name: _digest(run / name) for name in before} == before  # nothing changed

    assert main(["pretrain", "demo", *args, "optim.max_steps=4", "run.overwrite=true"]) == 0
    out = capsys.readouterr().out
    (aside,) = run.parent.glob("p.old-*")
    assert f"moved aside to {aside}" in out
    assert {name: _digest(aside / name) for name in before} == before  # the old run, intact
    assert _train_steps(aside) == [1, 2, 3]
    assert _train_steps(run) == [1, 2, 3, 4]  # the new run, each step once
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4


def test_a_cut_off_last_line_is_dropped_not_fused_on_resume(
    stopped_run: tuple[Path, list[str]],
) -> None:
    run, args = stopped_run
    log = run / "metrics.jsonl"
    with open(log, "a", encoding="utf-8") as fh:  # kill -9 in the middle of a record
        fh.write('{"kind": "train", "step": 4, "loss/to')
    assert main(["pretrain", "demo", *args, "run.resume=auto"]) == 0
    for raw in log.read_text().splitlines():
        json.loads(raw)  # every line decodes: no fused record
    assert _train_steps(run) == [1, 2, 3, 4, 5]


def test_a_log_without_checkpoint_is_never_erased(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder whose run left records but no checkpoint (killed before its first save): a new
    run is refused; run.resume=auto keeps the old log beside the new one; each step once.
    """
    args = [*overrides_for(tiny_world, tmp_path, "q"), "optim.max_steps=2", "run.num_threads=1"]
    run = tmp_path / "q"
    run.mkdir()
    old = '{"kind": "train", "step": 1}\n{"kind": "train", "st'
    (run / "metrics.jsonl").write_text(old)
    assert main(["pretrain", "demo", *args]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{run / 'metrics.jsonl'}: this run folder holds the log of an earlier run" in line
    assert "run.resume=auto" in line and "run.overwrite=true" in line
    assert (run / "metrics.jsonl").read_text() == old  # untouched

    assert main(["pretrain", "demo", *args, "run.resume=auto"]) == 0
    (kept,) = run.glob("metrics.old-*.jsonl")
    assert kept.read_text() == old  # the earlier log, byte for byte
    assert f"the earlier log was kept as {kept}" in capsys.readouterr().out
    assert _train_steps(run) == [1, 2]


def test_a_finished_run_is_not_restarted_by_a_longer_one(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides_for: Any
) -> None:
    args = [*overrides_for(tiny_world, tmp_path, "f"), "run.num_threads=1"]
    assert main(["pretrain", "demo", *args, "optim.max_steps=2"]) == 0
    capsys.readouterr()
    before = _digest(tmp_path / "f" / "last.pt")
    assert main(["pretrain", "demo", *args, "optim.max_steps=3"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "this run folder holds a checkpoint at step 2;" in line
    assert _digest(tmp_path / "f" / "last.pt") == before
    assert _train_steps(tmp_path / "f") == [1, 2]
