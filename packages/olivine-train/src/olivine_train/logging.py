"""Run logging: TensorBoard scalars and images, a JSONL metrics file, progress (rank 0).

Layout of a run folder::

    <run dir>/config.yaml      resolved config
    <run dir>/metrics.jsonl    one JSON object per logged step / evaluation
    <run dir>/tb/              TensorBoard event files
    <run dir>/last.pt, best.pt, backbone.pt

On ranks other than 0 :class:`RunLogger` does nothing (``enabled=False``).

Progress bars are :func:`olivine_data.progress.progress_bar`: live on a terminal, a line per
tenth of the work in a log.

Resume after a crash or ``kill -9``: opening the logger deletes the orphan temporary files of
interrupted atomic writes in the run folder, and :meth:`RunLogger.resume_at` (called once the
checkpoint is loaded) drops the ``metrics.jsonl`` records logged after the checkpoint's step and
purges those TensorBoard events, so that the steps the resumed run repeats are logged once. A
new run in a folder whose earlier run left no checkpoint drops that run's records
(``resume_at(-1)``), and a last line cut off by a crash is removed when the logger opens, so
that ``metrics.jsonl`` never holds a step twice nor a line with a record fused onto it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from olivine_data.collate import PretrainBatch
from olivine_train.checkpoint import remove_orphan_temp_files
from olivine_train.config import Tree

__all__ = ["RunLogger", "draw_pairs_image", "read_jsonl"]

# 20 distinct colours (tab20-like), used cyclically for label ids.
_PALETTE = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
        [174, 199, 232],
        [255, 187, 120],
        [152, 223, 138],
        [255, 152, 150],
        [197, 176, 213],
        [196, 156, 148],
        [247, 182, 210],
        [199, 199, 199],
        [219, 219, 141],
        [158, 218, 229],
    ],
    dtype=np.uint8,
)


def draw_pairs_image(
    image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, labels: torch.Tensor | None
) -> np.ndarray:
    """(H, W, 3) uint8: the camera image (3, H, W) in [0, 1] darkened, with each paired pixel
    painted in the colour of its VFM label (3x3 dots).
    """
    img = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 * 0.6
    img = img.astype(np.uint8)
    h, w = img.shape[:2]
    r = rows.detach().cpu().long().numpy()
    c = cols.detach().cpu().long().numpy()
    lab = labels.detach().cpu().long().numpy() if labels is not None else np.zeros_like(r)
    colours = _PALETTE[lab % len(_PALETTE)]
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            rr = np.clip(r + dr, 0, h - 1)
            cc = np.clip(c + dc, 0, w - 1)
            img[rr, cc] = colours
    return img


class RunLogger:
    """TensorBoard + JSONL logger for one run folder; inert when ``enabled`` is False."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, flush_secs: int = 10) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.tb_dir = self.run_dir / "tb"
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        # Any: the SummaryWriter and the JSONL file, set whenever ``enabled`` is True (which
        # every method checks first); typed Optional, each use would need a None check
        self._writer: Any = None
        self._jsonl: Any = None
        self._t0 = time.perf_counter()
        self._flush_secs = flush_secs
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.removed_temp_files = remove_orphan_temp_files(self.run_dir)
            self._writer = SummaryWriter(log_dir=str(self.tb_dir), flush_secs=flush_secs)
            _drop_cut_off_last_line(self.jsonl_path)
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

    def has_records(self) -> bool:
        """Whether ``metrics.jsonl`` holds anything (e.g. from an earlier run in the folder)."""
        if not self.enabled:
            return False
        self._jsonl.flush()
        return self.jsonl_path.stat().st_size > 0

    def resume_at(self, step: int) -> int:
        """Forget what was logged after ``step`` (the step of the checkpoint a run resumes from;
        ``-1``: everything, for a new run in a folder whose earlier run left no checkpoint).

        Rewrites ``metrics.jsonl`` in place without the records whose ``step`` is greater
        (those steps are about to be trained and logged again), drops a last line cut off by a
        crash, and reopens TensorBoard with ``purge_step=step + 1`` so that it hides the events
        of the repeated steps too. Returns the number of records dropped.
        """
        if not self.enabled:
            return 0

        self._jsonl.flush()
        dropped = 0
        with open(self.jsonl_path, "r+", encoding="utf-8") as fh:
            kept: list[str] = []
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut off by kill -9
                    dropped += 1
                    continue
                if isinstance(rec, dict) and int(rec.get("step", 0)) > step:
                    dropped += 1
                    continue
                kept.append(line if line.endswith("\n") else line + "\n")
            if dropped:
                fh.seek(0)
                fh.write("".join(kept))
                fh.truncate()
                fh.flush()
                os.fsync(fh.fileno())
        self._writer.close()
        self._writer = SummaryWriter(
            log_dir=str(self.tb_dir), flush_secs=self._flush_secs, purge_step=step + 1
        )
        return dropped

    def scalars(self, step: int, values: dict[str, float], *, kind: str = "train") -> None:
        """Log scalars under ``<kind>/<name>`` to TensorBoard and one JSONL record."""
        if not self.enabled:
            return
        clean: dict[str, float | None] = {}
        for name, value in values.items():
            v = float(value)
            self._writer.add_scalar(f"{kind}/{name}", v, step)
            clean[name] = v if math.isfinite(v) else None
        record = {"kind": kind, "step": int(step), "time": time.perf_counter() - self._t0, **clean}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def event(self, step: int, kind: str, payload: Tree) -> None:
        """A free-form JSONL record (e.g. an evaluation table); not sent to TensorBoard."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"kind": kind, "step": int(step), **payload}) + "\n")
        self._jsonl.flush()

    def image(self, step: int, tag: str, image_hwc: np.ndarray) -> None:
        if not self.enabled:
            return
        self._writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def pairs_image(self, step: int, batch: PretrainBatch) -> None:
        """Log the first camera of a pretraining batch with its pairs coloured by VFM label."""
        if not self.enabled:
            return
        px = batch.pair_pixels
        on0 = px[:, 0] == 0
        labels = batch.pair_labels[on0] if batch.pair_labels is not None else None
        img = draw_pairs_image(batch.images[0], px[on0, 1], px[on0, 2], labels)
        self.image(step, "pairs/camera0_vfm_labels", img)

    def text(self, step: int, tag: str, text: str) -> None:
        if not self.enabled:
            return
        self._writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self.enabled:
            self._writer.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled and self._writer is not None:
            self._writer.close()
            self._jsonl.close()
            self._writer = None
            self.enabled = False


def _drop_cut_off_last_line(path: Path) -> None:
    """Truncate ``path`` after its last newline: a last line cut off by a crash (``kill -9``
    mid-write) would otherwise have the next record fused onto it (one undecodable line).
    """
    if not path.is_file():
        return
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        keep, pos, chunk = 0, size, 65536
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path, kind: str | None = None) -> list[Tree]:
    """Records of a ``metrics.jsonl`` file (optionally only those of one ``kind``)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                if kind is None or rec.get("kind") == kind:
                    out.append(rec)
    return out
