"""Reliability on shared machines (issue 23), with real processes and real signals.

* one run per run folder: a second run into a folder in use fails (exit 6) naming the holder;
  the holder line of a killed run is taken over with a message;
* SIGTERM / SIGINT / SIGUSR1 stop a run after the current step with ``last.pt`` written (exit 7),
  and ``run.resume=auto`` continues exactly (pretraining and fine-tuning);
* a resume with a changed config is refused (exit 2) unless the fields are named in
  ``run.allow_changes``; accepted changes are recorded, ``config.yaml`` stays the original.

The subprocesses inherit this process's environment (``PYTHONPATH`` included).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from olivine_train.cli import main
from olivine_train.logging import read_jsonl
from olivine_train.runlock import LOCK_NAME, RunFolderLockedError, RunLock

TIMEOUT = 300  # seconds: an upper bound on any one subprocess of this module


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("OLIVINE_TRACEBACK", None)
    return env


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    """The real ``olivine-train`` entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "olivine_train.cli", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )


def _error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith("olivine-train: error:")]


def _wait_for(predicate: Any, proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``predicate()`` every 0.1 s while ``proc`` runs (bounded by :data:`TIMEOUT`)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}:\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _train_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if rec.get("kind") == "train":
            steps.append(int(rec["step"]))
    return steps


# ----------------------------------------------------------------------------- the lock


_HOLD_LOCK = """
import sys, time
from olivine_train.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_run_lock_names_a_live_holder_and_takes_over_from_a_killed_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLockedError) as info:
            RunLock(run).acquire()
        msg = str(info.value)
        assert msg.startswith(f"{run}: the run folder is in use by another run ")
        assert f"pid {holder.pid} on host {socket.gethostname()}" in msg
    finally:
        holder.kill()  # SIGKILL: no clean-up; the kernel drops the flock, the holder line stays
        holder.wait(timeout=TIMEOUT)
    assert f"pid={holder.pid} " in (run / LOCK_NAME).read_text()
    with RunLock(run) as lock:
        assert lock.took_over is not None and lock.took_over.pid == holder.pid
        assert f"pid={os.getpid()} " in (run / LOCK_NAME).read_text()
    err = capsys.readouterr().err
    assert f"taking over the run folder from pid {holder.pid} on host" in err
    assert (run / LOCK_NAME).read_text() == ""  # released: no holder line is left
    with RunLock(run) as again:
        assert again.took_over is None  # a clean release is not a stale lock


def test_second_run_into_a_folder_in_use_fails_exit_6_and_sigterm_stops_the_first(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    args = [
        *overrides_for(tiny_world, tmp_path, "busy"),
        "optim.epochs=1000",
        "optim.max_steps=1000",  # runs until it is stopped
        "run.num_threads=1",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "olivine_train.cli", "pretrain", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    run = tmp_path / "busy"
    try:
        _wait_for(lambda: len(_train_steps(run)) >= 1, first, "the first run's first step")
        config_before = (run / "config.yaml").read_bytes()
        second = _cli(["pretrain", "demo", *args, "optim.lr=0.1"])
        assert second.returncode == 6, second.stderr
        (line,) = _error_lines(second.stderr)
        assert line.startswith(f"olivine-train: error: {run}: the run folder is in use by ")
        assert f"pid {first.pid} on host {socket.gethostname()}" in line
        assert (run / "config.yaml").read_bytes() == config_before  # not overwritten

        first.send_signal(signal.SIGTERM)  # from another process, as a scheduler would
        _, err = first.communicate(timeout=TIMEOUT)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 7, err
    (line,) = _error_lines(err)
    step = torch.load(run / "last.pt", weights_only=True)["step"]
    assert line == (
        f"olivine-train: error: preempted by SIGTERM after step {step}: {run / 'last.pt'} "
        "written; resume with run.resume=auto"
    )
    steps = _train_steps(run)
    assert steps == list(range(1, step + 1))  # each step once: the second run wrote nothing
    records = read_jsonl(run / "metrics.jsonl", kind="preempted")
    assert records == [
        {"kind": "preempted", "step": step, "signal": "SIGTERM", "checkpoint": str(run / "last.pt")}
    ]
    assert (run / LOCK_NAME).read_text() == ""  # released on the way out


# ----------------------------------------------------------------------------- signals

# the real CLI in a fresh process; after step K the process sends itself a real signal (a step
# callback is the only hook: it makes the step deterministic, the signal is delivered by the OS)
_SIGNAL_AT_STEP = """
import os, signal, sys
import olivine_train.recipes.{module} as recipe
from olivine_train import cli

real = recipe.{function}

def signal_at_step(step, scalars):
    if step == {step}:
        os.kill(os.getpid(), signal.{signal})

recipe.{function} = lambda cfg, callbacks=None: real(cfg, callbacks=[signal_at_step])
sys.exit(cli.main(sys.argv[1:]))
"""


def _signalled_run(
    module: str, function: str, step: int, sig: str, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    script = _SIGNAL_AT_STEP.format(module=module, function=function, step=step, signal=sig)
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_env(),
    )


def _losses(run: Path) -> list[tuple[int, float, float]]:
    records = read_jsonl(run / "metrics.jsonl", kind="train")
    return [(r["step"], r["loss/total"], r["lr"]) for r in records]


@pytest.fixture(scope="module")
def straight_pretrain(
    tiny_world: Path, tmp_path_factory: pytest.TempPathFactory, overrides_for: Any
) -> Path:
    out = tmp_path_factory.mktemp("straight")
    args = [*overrides_for(tiny_world, out, "s"), "optim.max_steps=5", "run.num_threads=1"]
    assert main(["pretrain", "demo", *args]) == 0
    return out / "s"


@pytest.mark.parametrize(("sig", "stop"), [("SIGTERM", 3), ("SIGINT", 2), ("SIGUSR1", 4)])
def test_signal_stops_pretraining_after_the_step_and_resume_is_exact(
    tiny_world: Path,
    tmp_path: Path,
    overrides_for: Any,
    straight_pretrain: Path,
    sig: str,
    stop: int,
) -> None:
    args = [*overrides_for(tiny_world, tmp_path, "p"), "optim.max_steps=5", "run.num_threads=1"]
    proc = _signalled_run("pretrain", "run_pretrain", stop, sig, ["pretrain", "demo", *args])
    run = tmp_path / "p"
    assert proc.returncode == 7, proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert f"preempted by {sig} after step {stop}: {run / 'last.pt'} written" in line
    assert torch.load(run / "last.pt", weights_only=True)["step"] == stop
    assert not (run / "backbone.pt").exists()  # the run did not pretend to finish
    assert [s for s, _, _ in _losses(run)] == list(range(1, stop + 1))

    assert main(["pretrain", "demo", *args, "run.resume=auto"]) == 0
    assert _losses(run) == _losses(straight_pretrain)  # bit for bit, each step once
    assert (run / "backbone.pt").is_file()


def test_sigterm_at_an_epoch_end_of_finetuning_then_resume_is_exact(
    tiny_world: Path, tmp_path: Path
) -> None:
    def argv(name: str) -> list[str]:
        return [
            "finetune",
            "finetune_nuscenes_1pct",
            f"data.root={tiny_world}",
            "data.version=v1.0-mini",
            "data.skip=1",
            "data.batch_size=2",
            "optim.epochs=2",
            "optim.max_steps=null",
            "downstream.mode=finetune",
            f"run.out_dir={tmp_path}",
            f"run.name={name}",
            "run.progress=false",
            "run.log_every=1",
            "run.num_threads=1",
        ]

    # 2 steps per epoch: stop after step 2, before that epoch's evaluation and best.pt
    proc = _signalled_run("downstream", "run_downstream", 2, "SIGTERM", argv("f"))
    run = tmp_path / "f"
    assert proc.returncode == 7, proc.stderr
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    assert not read_jsonl(run / "metrics.jsonl", kind="val")
    assert main([*argv("f"), "run.resume=auto"]) == 0
    assert main(argv("straight")) == 0
    want = [
        (r["kind"], r["step"], r.get("loss/total"), r.get("miou"))
        for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    ]
    got = [
        (r["kind"], r["step"], r.get("loss/total"), r.get("miou"))
        for r in read_jsonl(run / "metrics.jsonl")
        if r["kind"] != "preempted"
    ]
    assert got == want


# after step 1 (mid-epoch: the data-loader workers are alive and prefetching) the run says so in
# a marker file and waits until a stop signal arrives; the test then signals the whole group
_WAIT_AFTER_STEP_1 = """
import sys, time
import olivine_train.recipes.pretrain as recipe
from olivine_train import cli
from olivine_train.preemption import requested_stop

real = recipe.run_pretrain
marker = sys.argv[1]

def wait_for_a_signal(step, scalars):
    if step == 1:
        open(marker, "w").close()
        deadline = time.monotonic() + 120
        while requested_stop() is None and time.monotonic() < deadline:
            time.sleep(0.05)

recipe.run_pretrain = lambda cfg, callbacks=None: real(cfg, callbacks=[wait_for_a_signal])
sys.exit(cli.main(sys.argv[2:]))
"""


def test_sigterm_to_the_whole_process_group_with_data_loader_workers_stops_cleanly(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    """Schedulers signal every process of the job, the data-loader workers too. torch's workers
    die on a SIGTERM that their parent did not send, which failed the run (exit 5).
    """
    args = [
        *overrides_for(tiny_world, tmp_path, "w"),
        "data.batch_size=1",  # 4 steps per epoch
        "data.num_workers=2",
        "optim.max_steps=3",
        "run.num_threads=1",
    ]
    marker = tmp_path / "after-step-1"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WAIT_AFTER_STEP_1, str(marker), "pretrain", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,  # its own process group, as a job step
    )
    try:
        _wait_for(marker.exists, proc, "step 1")
        os.killpg(proc.pid, signal.SIGTERM)  # from outside: the run and its workers
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 7, err
    (line,) = _error_lines(err)
    run = tmp_path / "w"
    assert line.startswith(f"olivine-train: error: preempted by SIGTERM after step 1: {run}")
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 1


# ----------------------------------------------------------------------------- config drift


def test_resume_refuses_config_drift_unless_allowed_and_records_it(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    base = [
        *overrides_for(tiny_world, tmp_path, "d"),
        "optim.max_steps=2",
        "optim.scheduler=constant",
        "run.num_threads=1",
    ]
    assert main(["pretrain", "demo", *base]) == 0
    run = tmp_path / "d"
    config = (run / "config.yaml").read_bytes()
    last = (run / "last.pt").read_bytes()
    metrics = (run / "metrics.jsonl").read_bytes()

    # result-changing fields refused (neutral ones are not listed), nothing in the folder changes
    changed = ["optim.max_steps=4", "optim.lr=5", "loss.temperature=0.1"]
    neutral = ["run.log_every=2", "data.num_workers=0", "run.progress=true", "run.num_threads=2"]
    proc = _cli(["pretrain", "demo", *base, *changed, *neutral, "run.resume=auto"])
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err
    assert err.splitlines()[0] == (
        f"olivine-train: error: {run / 'last.pt'}: refusing to resume: the config differs from "
        "the one this run was trained with in 3 field(s) that change its result; to change them "
        "on purpose add run.allow_changes=[loss.temperature,optim.lr,optim.max_steps] (the "
        "change is recorded in the run folder), or start a new run with another run.name:"
    )
    assert "  - optim.lr: 0.5 (stored) -> 5.0 (now)" in err
    assert "  - optim.max_steps: 2 (stored) -> 4 (now)" in err
    assert "  - loss.temperature: 0.07 (stored) -> 0.1 (now)" in err
    assert "log_every" not in err and "num_workers" not in err and "num_threads" not in err
    assert (run / "config.yaml").read_bytes() == config
    assert (run / "last.pt").read_bytes() == last
    assert (run / "metrics.jsonl").read_bytes() == metrics

    # named fields pass, take effect and are recorded; config.yaml stays the original
    allowed = ["optim.max_steps=4", "optim.lr=0.25", "run.allow_changes=[optim]"]
    proc = _cli(["pretrain", "demo", *base, *allowed, *neutral, "run.resume=auto"])
    assert proc.returncode == 0, proc.stderr
    assert (run / "config.yaml").read_bytes() == config
    resumed = yaml.safe_load((run / "config.resume-2.yaml").read_text())
    assert resumed["optim"]["lr"] == 0.25 and resumed["optim"]["max_steps"] == 4
    (record,) = read_jsonl(run / "metrics.jsonl", kind="resume_changes")
    assert record == {
        "kind": "resume_changes",
        "step": 2,
        "checkpoint": str(run / "last.pt"),
        "config": "config.resume-2.yaml",
        "changes": {"optim.lr": [0.5, 0.25], "optim.max_steps": [2, 4]},
    }
    lrs = {r["step"]: r["lr"] for r in read_jsonl(run / "metrics.jsonl", kind="train")}
    assert lrs == {1: 0.5, 2: 0.5, 4: 0.25}  # log_every=2 after the resume; the new lr is used
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4


# ----------------------------------------------------------------------------- damaged checkpoint


def damage_middle_of_largest_record(path: Path) -> str:
    """Invert 16 bytes in the middle of the largest record of a torch zip file (directory and
    headers intact, as with a bad disk block); return the record's name.
    """
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    off = info.header_offset
    name_len = int.from_bytes(data[off + 26 : off + 28], "little")
    extra_len = int.from_bytes(data[off + 28 : off + 30], "little")
    middle = off + 30 + name_len + extra_len + info.file_size // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))
    return info.filename


def test_resume_from_a_checkpoint_damaged_in_its_middle_exits_1_naming_it(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*overrides_for(tiny_world, tmp_path, "z"), "optim.max_steps=1", "run.num_threads=1"]
    assert main(["pretrain", "demo", *args]) == 0
    last = tmp_path / "z" / "last.pt"
    record = damage_middle_of_largest_record(last)
    capsys.readouterr()
    assert main(["pretrain", "demo", *args, "run.resume=auto"]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"olivine-train: error: CheckpointError: {last}: cannot read the checkpoint: record "
        f"{record!r} does not match its CRC-32 checksum: the file is damaged"
    )
