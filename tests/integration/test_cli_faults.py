"""Faults through the real CLI (issue 14): each is one ``olivine-train: error:`` line naming the
file or field, a non-zero exit code and no traceback.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.cli import main
from olivine_train.logging import read_jsonl

# ----------------------------------------------------------------------------- case 2


def test_plain_state_dict_of_another_model_is_refused(
    tiny_world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    down_overrides_for: Any,
) -> None:
    from olivine_models import create_point_encoder

    plain = tmp_path / "tiny_state.pt"
    torch.save(create_point_encoder("minkunet_tiny").state_dict(), plain)  # no format, no name
    args = down_overrides_for(tiny_world, tmp_path, "foreign") + [
        "optim.max_steps=1",
        f"downstream.pretrained={plain}",
        "model.point_encoder=minkunet14",
    ]
    assert main(["finetune", "finetune_nuscenes_1pct", *args]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"olivine-train: error: ValueError: downstream.pretrained={plain} ")
    assert "no weight matches" in first and "num_batches_tracked" in first
    assert "Traceback" not in err
    assert not (tmp_path / "foreign" / "last.pt").exists()


# ----------------------------------------------------------------------------- case 5


def _cli(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """The real ``olivine-train`` entry point in a fresh process."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("OLIVINE_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "olivine_train.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        **kw,
    )


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("olivine-train: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: /sys/fs)."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # running as root
        return Path("/sys/fs/olivine-readonly-test")
    return ro


def test_read_only_run_directory_is_one_line_exit_4(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    ro = _unwritable_dir(tmp_path)
    proc = _cli(["pretrain", "demo", *overrides_for(tiny_world, ro, "r"), "optim.max_steps=1"])
    line = _one_error_line(proc)
    assert proc.returncode == 4, proc.stderr
    assert line.startswith("olivine-train: error: PermissionError: ")
    assert str(ro) in line and "not writable" in line


def test_full_disk_during_checkpoint_is_one_line_exit_4_without_debris(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    limit = 256 * 1024  # bytes per file: config, logs and events fit, last.pt does not

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = [*overrides_for(tiny_world, tmp_path, "full"), "optim.max_steps=1", "run.num_threads=1"]
    proc = _cli(["pretrain", "demo", *args], preexec_fn=small_disk)
    line = _one_error_line(proc)
    assert proc.returncode == 4, proc.stderr
    run = tmp_path / "full"
    assert f"CheckpointWriteError: {run / 'last.pt'}: cannot write the checkpoint" in line
    assert "inline_container" in line and "is the disk full?" in line
    assert not (run / "last.pt").exists()
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]  # no half-written file


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\xff\xfe not a checkpoint", "is not a PyTorch checkpoint"),
        ("truncated", "is a truncated or corrupt PyTorch (zip) checkpoint"),
    ],
)
def test_corrupt_image_weights_name_the_file(
    tiny_world: Path,
    tmp_path: Path,
    overrides_for: Any,
    content: bytes | str,
    expected: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = tmp_path / "moco.pth.tar"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(64, 64)}}, weights)
        weights.write_bytes(weights.read_bytes()[:-200])  # cut off: no zip directory
    else:
        weights.write_bytes(content)  # type: ignore[arg-type]
    args = [*overrides_for(tiny_world, tmp_path, "w"), f"model.image_weights={weights}"]
    assert main(["pretrain", "demo", *args]) == 2
    err = capsys.readouterr().err
    assert f"model.image_weights: file {str(weights)!r} {expected}" in err
    assert "Traceback" not in err


def test_unexpected_error_is_one_line_exit_5(tmp_path: Path) -> None:
    # a recipe bug stands in for any exception outside the expected types
    script = (
        "import sys, olivine_train.cli as cli\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('something internal\\nsecond line')\n"
        "cli.load_config = boom\n"
        "sys.exit(cli.main(['pretrain', 'demo']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    line = _one_error_line(proc)
    assert proc.returncode == 5
    assert line == (
        "olivine-train: error: unexpected RuntimeError: something internal "
        "(set OLIVINE_TRACEBACK=1 for the traceback)"
    )


# ----------------------------------------------------------------------------- case 7

_KILL_SCRIPT = """
import os, signal, sys
from olivine_train.config import load_config
from olivine_train.recipes.downstream import run_downstream

real_fsync = os.fsync

def fsync_then_die(fd):
    real_fsync(fd)  # the temporary file is complete, os.replace has not run: kill -9 here
    os.kill(os.getpid(), signal.SIGKILL)

def callback(step, scalars):
    if step == 3:  # last.pt holds step 2; the next atomic write is interrupted
        os.fsync = fsync_then_die

run_downstream(load_config("finetune_nuscenes_1pct", sys.argv[1:]), callbacks=[callback])
"""


def test_sigkill_mid_write_then_resume_cleans_debris_and_logs_each_step_once(
    tiny_world: Path, tmp_path: Path, down_overrides_for: Any
) -> None:
    common = [
        "optim.epochs=2",
        "optim.max_steps=null",
        "run.log_every=1",
        "run.num_threads=1",
        "downstream.mode=finetune",
    ]

    def overrides(name: str) -> list[str]:
        return down_overrides_for(tiny_world, tmp_path, name) + ["optim.max_steps=1", *common]

    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SCRIPT, *overrides("killed")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run = tmp_path / "killed"
    debris = [p.name for p in run.iterdir() if re.match(r"^\..+\.tmp\d+$", p.name)]
    assert debris, "the kill should have interrupted an atomic write"
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    before = read_jsonl(run / "metrics.jsonl")
    assert max(r["step"] for r in before) > 2  # logged after the checkpoint

    assert (
        main(["finetune", "finetune_nuscenes_1pct", *overrides("killed"), "run.resume=auto"]) == 0
    )
    assert main(["finetune", "finetune_nuscenes_1pct", *overrides("straight")]) == 0
    assert not [p.name for p in run.iterdir() if re.match(r"^\..+\.tmp\d+$", p.name)]
    resumed = read_jsonl(run / "metrics.jsonl")
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    key = [(r["kind"], r["step"]) for r in resumed]
    assert len(key) == len(set(key)), key  # no step logged twice
    assert key == [(r["kind"], r["step"]) for r in straight]
    for got, want in zip(resumed, straight):
        if got["kind"] == "train":
            assert got["loss/total"] == pytest.approx(want["loss/total"], rel=1e-5), got["step"]
