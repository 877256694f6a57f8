"""kill -9 during pretraining, then resume: no debris, each step logged once, same losses
(issue 14, case 7). Needs ``logger.resume_at(trainer.step)`` after ``trainer.resume(resume)`` in
``run_pretrain``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.cli import main
from olivine_train.logging import read_jsonl

_KILL_SCRIPT = """
import os, signal, sys
from olivine_train.config import load_config
from olivine_train.recipes.pretrain import run_pretrain

real_fsync = os.fsync

def fsync_then_die(fd):
    real_fsync(fd)  # the temporary file is complete, os.replace has not run: kill -9 here
    os.kill(os.getpid(), signal.SIGKILL)

def callback(step, scalars):
    if step == 3:  # last.pt holds step 2; the checkpoint write of step 4 is interrupted
        os.fsync = fsync_then_die

run_pretrain(load_config("demo", sys.argv[1:]), callbacks=[callback])
"""

_TMP = re.compile(r"^\..+\.tmp\d+$")


def test_pretrain_sigkill_mid_write_then_resume(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    common = ["optim.max_steps=5", "run.checkpoint_every=2", "run.num_threads=1"]
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, *overrides_for(tiny_world, tmp_path, "k"), *common],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr
    run = tmp_path / "k"
    assert [p for p in run.iterdir() if _TMP.match(p.name)]
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl", kind="train")) == 4

    resume = [*overrides_for(tiny_world, tmp_path, "k"), *common, "run.resume=auto"]
    assert main(["pretrain", "demo", *resume]) == 0
    assert main(["pretrain", "demo", *overrides_for(tiny_world, tmp_path, "s"), *common]) == 0
    assert not [p for p in run.iterdir() if _TMP.match(p.name)]
    got = read_jsonl(run / "metrics.jsonl", kind="train")
    want = read_jsonl(tmp_path / "s" / "metrics.jsonl", kind="train")
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4, 5]
    for a, b in zip(got, want):
        assert a["loss/total"] == pytest.approx(b["loss/total"], rel=1e-5), a["step"]
