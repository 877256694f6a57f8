"""A real 2-process torchrun (gloo, CPU) pretraining ends with identical weights on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
from olivine_train.config import load_config
from olivine_train.recipes.pretrain import run_pretrain
out = sys.argv[1]
cfg = load_config("demo", sys.argv[2:])
res = run_pretrain(cfg)
torch.save(res.state_dict, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


def test_two_rank_gloo_run_has_identical_weights(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    script = tmp_path / "ddp_pretrain.py"
    script.write_text(SCRIPT)
    args = overrides_for(tiny_world, tmp_path, "ddp") + [
        "optim.max_steps=2",
        "loss.vmf_warmup_steps=1",
        "model.sync_bn=true",  # ignored with a message on CPU (torch SyncBN needs CUDA)
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert a.keys() == b.keys() and any(k.startswith("vmf.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert float(a["vmf.kappa"].abs().sum()) > 0  # the prior saw (all-reduced) data
    # weights moved away from the (shared) initialisation
    records = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in records if '"kind": "train"' in r]) == 2


# rank 1 alone sends itself SIGUSR1 after step 2; the ranks agree to stop after that step
PREEMPT_SCRIPT = """
import os, signal, sys, torch
torch.set_num_threads(1)
from olivine_train.config import load_config
from olivine_train.preemption import Preempted
from olivine_train.recipes.pretrain import run_pretrain

def signal_rank1(step, scalars):
    if step == 2 and os.environ["RANK"] == "1":
        os.kill(os.getpid(), signal.SIGUSR1)

try:
    run_pretrain(load_config("demo", sys.argv[1:]), callbacks=[signal_rank1])
except Preempted as exc:
    print(f"rank {os.environ['RANK']}: {exc}", flush=True)
    sys.exit(7)
"""


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    """Issue 23: under torchrun a stop signal to any rank stops all of them after the same step
    (no rank is left waiting in a collective), rank 0 writes last.pt, and the run resumes.
    """
    script = tmp_path / "ddp_preempt.py"
    script.write_text(PREEMPT_SCRIPT)
    args = overrides_for(tiny_world, tmp_path, "ddp") + [
        "optim.max_steps=4",
        "loss.vmf_warmup_steps=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*run, str(script), *args], capture_output=True, text=True, timeout=600, env=env
    )
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode != 0, log  # torchrun reports a worker's non-zero exit as its own 1
    for rank in (0, 1):
        assert f"rank {rank}: preempted by SIGUSR1 after step 2" in proc.stdout, log
    assert torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["step"] == 2
    proc = subprocess.run(
        [*run, str(script), *args, "run.resume=auto"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in records if '"kind": "train"' in r]
    assert steps == [1, 2, 3, 4]
