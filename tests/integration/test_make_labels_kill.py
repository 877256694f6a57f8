"""``kill -9`` of a make-labels shard mid-write (issue 23, item 7): the temporary file it leaves
names its process and host, and the next run deletes it, but never the temporary file of a live
process or of another host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from olivine_train.cli import main

# the real CLI in a fresh process; PIL's PNG writer stops half-way through the second image and
# the process kills itself (SIGKILL: no clean-up of any kind can run)
_DIE_MID_WRITE = """
import os, signal, sys
from PIL import Image

real_save = Image.Image.save
count = [0]

def save_then_die(self, fp, *args, **kwargs):
    count[0] += 1
    if count[0] == 2:
        fp.write(b"\\x89PNG\\r\\n\\x1a\\n half an image")
        fp.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(self, fp, *args, **kwargs)

Image.Image.save = save_then_die
from olivine_train import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_mid_write_leaves_a_named_temp_file_that_the_next_run_removes_safely(
    tiny_world: Path, tmp_path: Path
) -> None:
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"box": [4, 4, 60, 40], "class_id": 3, "score": 0.9}]))
    out = tmp_path / "labels"
    argv = [
        "make-labels",
        "--root",
        str(tiny_world),
        "--version",
        "v1.0-mini",
        "--split",
        "train",
        "--out",
        str(out),
        "--mode",
        "box",
        "--boxes-json",
        str(boxes),
        "--sam-variant",
        "tiny",
        "--device",
        "cpu",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _DIE_MID_WRITE, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())
    (left,) = [p for p in out.glob("camseg/*/.*") if p.is_file()]
    assert re.fullmatch(rf"\..+\.png\.{proc.pid}@{re.escape(host)}\.tmp", left.name), left.name
    assert len(list(out.glob("camseg/*/*.png"))) == 1  # the first image was finished

    live = subprocess.Popen(["sleep", "300"])  # a shard of this host that is still writing
    try:
        writing = left.with_name(f".other.png.{live.pid}@{host}.tmp")
        remote = left.with_name(f".other.png.{proc.pid}@another-host.example.tmp")
        for path in (writing, remote):
            path.write_bytes(b"in progress")
        assert main(argv) == 0
        assert not left.exists()  # its process is dead: removed
        assert writing.exists() and remote.exists()  # alive here / unknowable there: kept
    finally:
        live.kill()
        live.wait()
    pngs = list(out.glob("camseg/*/*.png"))
    assert len(pngs) == 8  # every train image of the tiny world, the interrupted one included
    assert os.path.getsize(min(pngs)) > 0
