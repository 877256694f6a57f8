"""The 2D heads evaluated at the paired pixels only give the full-map path's losses and gradients.

Exact by linearity (see ``olivine_models.ImageHead.sample``): ten pretraining steps of the demo
config through ``model.image_head=pairs`` and ``=full_map`` must log the same losses at every
step, and one step must give the same backbone gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.config import load_config
from olivine_train.distributed import DistInfo
from olivine_train.logging import read_jsonl
from olivine_train.recipes.common import Runtime
from olivine_train.recipes.pretrain import Pretrainer, run_pretrain

# The demo's own teacher (ImageNet EfficientNet-Lite0, stride 8, 472 channels), seeing the images
# at twice the pairing resolution: the teacher map is resampled to the pairing grid, and the heads
# upsample it by 8 to pixels that are not all on the map's grid.
DEMO_TEACHER = [
    "model.image_encoder=efficientnet_lite0",
    "model.image_pretrained=true",
    "model.image_input_size=[64, 128]",
]


def _losses(world: Path, out: Path, overrides_for: Any, mode: str) -> list[dict[str, float]]:
    cfg = load_config(
        "demo",
        overrides_for(world, out, mode)
        + DEMO_TEACHER
        + [f"model.image_head={mode}", "optim.max_steps=10", "run.image_log_every=0"],
    )
    torch.manual_seed(0)
    run_pretrain(cfg)
    return read_jsonl(out / mode / "metrics.jsonl", kind="train")


def test_ten_steps_log_the_same_losses_through_both_head_paths(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    pairs = _losses(tiny_world, tmp_path, overrides_for, "pairs")
    full = _losses(tiny_world, tmp_path, overrides_for, "full_map")
    assert [r["step"] for r in pairs] == list(range(1, 11)) == [r["step"] for r in full]
    keys = ("loss/total", "loss/ppnce", "loss/sup", "loss/vmf")
    for a, b in zip(pairs, full, strict=True):
        for key in keys:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    # the run left chance: the comparison is between two runs that learn, not two constant ones
    assert pairs[-1]["loss/ppnce"] < pairs[0]["loss/ppnce"]


def test_one_step_gives_the_same_backbone_gradients(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    grads = {}
    for mode in ("pairs", "full_map"):
        cfg = load_config(
            "demo",
            overrides_for(tiny_world, tmp_path, mode) + DEMO_TEACHER + [f"model.image_head={mode}"],
        )
        rt = Runtime(
            dist=DistInfo(0, 1, 0, torch.device("cpu")),
            device=torch.device("cpu"),
            amp_dtype=None,
            run_dir=tmp_path / mode,
        )
        torch.manual_seed(0)
        tr = Pretrainer(cfg, rt)
        tr.dataset.set_epoch(0)
        tr.sampler.set_epoch(0)
        batch = next(iter(tr.batches()))
        out = tr.compute(batch)
        out.total.backward()
        if mode == "pairs":  # the sampled path never builds a map of the image's size
            assert out.features["image_pp"].shape == (cfg.loss.num_pairs, cfg.model.head_dim)
        grads[mode] = {
            n: p.grad.detach().clone() for n, p in tr.net.named_parameters() if p.grad is not None
        }
    assert set(grads["pairs"]) == set(grads["full_map"])
    assert any(n.startswith("image_pp.") for n in grads["pairs"])
    for name, g in grads["pairs"].items():
        ref = grads["full_map"][name]
        scale = float(ref.abs().max()) + 1e-12
        assert float((g - ref).abs().max()) <= 1e-4 * scale, name
