"""Atomic checkpoints, RNG capture/restore, clear errors on mismatches, backbone export."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from olivine_train.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_save,
    capture_rng,
    load_backbone_state,
    load_checkpoint,
    load_strict,
    restore_rng,
    save_backbone,
    zip_damage,
)


def test_rng_round_trip_through_weights_only_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(4)
    state = capture_rng({"pairs": gen})
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": "pretrain", "rng": state}, tmp_path / "a.pt")
    expected = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=gen).item(),
    )
    random.random(), np.random.rand(), torch.rand(3)  # disturb everything
    torch.rand(5, generator=gen)
    loaded = load_checkpoint(tmp_path / "a.pt", expect_kind="pretrain")
    restore_rng(loaded["rng"], {"pairs": gen})
    got = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=gen).item(),
    )
    assert got == expected


def test_atomic_save_leaves_previous_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    atomic_save({"x": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"x": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["x"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_mismatched_checkpoint_errors(tmp_path: Path) -> None:
    path = atomic_save(
        {"format": CHECKPOINT_FORMAT, "kind": "pretrain", "model_name": "minkunet14"},
        tmp_path / "c.pt",
    )
    with pytest.raises(CheckpointError, match="'minkunet14', but the config asks for"):
        load_checkpoint(path, expect_model="minkunet34c")
    with pytest.raises(CheckpointError, match="expected a 'downstream' checkpoint"):
        load_checkpoint(path, expect_kind="downstream")
    atomic_save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="training checkpoint, got format None"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_load_strict_lists_missing_and_shape() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = dict(model.state_dict())
    state["0.weight"] = torch.zeros(5, 3)
    del state["1.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_strict(model, state, "checkpoint x")
    msg = str(info.value)
    assert "1 missing key(s) (e.g. 1.bias)" in msg
    assert "1 unexpected key(s) (e.g. extra)" in msg
    assert "0.weight: checkpoint (5, 3) vs model (4, 3)" in msg


def test_backbone_export_and_training_checkpoint_prefix(tmp_path: Path) -> None:
    net = torch.nn.Linear(2, 2)
    save_backbone(tmp_path / "backbone.pt", net, "minkunet_tiny", 1)
    state, name = load_backbone_state(tmp_path / "backbone.pt")
    assert name == "minkunet_tiny" and set(state) == {"weight", "bias"}
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "kind": "pretrain",
            "model_name": "minkunet_tiny",
            "model": {"backbone.weight": net.weight.detach(), "head.w": torch.zeros(1)},
        },
        tmp_path / "last.pt",
    )
    state, name = load_backbone_state(tmp_path / "last.pt")
    assert list(state) == ["weight"] and torch.equal(state["weight"], net.weight.detach())


def damage_middle_of_largest_record(path: Path) -> str:
    """Invert 16 bytes in the middle of the largest record of a torch zip file (its directory
    and headers stay intact, as with a bad disk block); return the record's name.
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


def test_checkpoint_damaged_in_its_middle_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Issue 23, item 7: ``torch.load`` does not check the zip records' CRC-32, so a checkpoint
    damaged in its middle loaded with wrong values; now every load checks them.
    """
    path = tmp_path / "last.pt"
    weights = torch.arange(50_000, dtype=torch.float32)
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": "pretrain", "model": {"w": weights}}, path)
    assert zip_damage(path) is None
    assert torch.equal(load_checkpoint(path)["model"]["w"], weights)
    record = damage_middle_of_largest_record(path)
    bad = torch.load(path, weights_only=True)["model"]["w"]  # torch alone does not notice
    assert not torch.equal(bad, weights)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path}: cannot read the checkpoint: record {record!r} does not match its CRC-32 "
        "checksum: the file is damaged"
    )
    with pytest.raises(CheckpointError, match=f"^{path}: cannot read the pretrained weights"):
        load_backbone_state(path)
