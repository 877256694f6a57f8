"""One pretraining step: the logged decomposition equals olivine_losses called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from olivine_train.config import load_config
from olivine_train.distributed import DistInfo
from olivine_train.recipes.common import Runtime
from olivine_train.recipes.pretrain import Pretrainer
from olivine_train.recipes.pretrain_terms import pixel_features


def _trainer(world: Path, tmp: Path, extra: list[str], overrides_for: Any) -> Pretrainer:
    cfg = load_config("demo", overrides_for(world, tmp, "step") + extra)
    rt = Runtime(
        dist=DistInfo(0, 1, 0, torch.device("cpu")),
        device=torch.device("cpu"),
        amp_dtype=None,
        run_dir=tmp / "step",
    )
    torch.manual_seed(0)
    return Pretrainer(cfg, rt)


@pytest.mark.parametrize("ignore_unlabelled", [False, True])
def test_loss_decomposition_matches_losses_package(
    tiny_world: Path, tmp_path: Path, overrides_for: Any, ignore_unlabelled: bool
) -> None:
    from olivine_losses import info_nce, semantic_contrastive, vmf_nll

    tr = _trainer(
        tiny_world,
        tmp_path,
        [
            "loss.vmf_warmup_steps=1",
            "loss.vmf_decay=0.5",
            f"loss.ignore_unlabelled={str(ignore_unlabelled).lower()}",
        ],
        overrides_for,
    )
    # SEEM17's unlabelled id (16) is left out only when asked; the reference keeps it as a class.
    ignore = 16 if ignore_unlabelled else None
    assert tr.ignore_index == ignore
    tr.dataset.set_epoch(0)
    tr.sampler.set_epoch(0)
    batch = next(iter(tr.batches()))
    tr.net.eval()  # BN with running stats: the same forward twice gives the same features
    first = tr.compute(batch)
    assert float(first.terms["vmf"].detach()) == 0.0  # warm-up step: the prior only updates
    assert tr.terms.prior.frozen
    out = tr.compute(batch)
    assert set(out.terms) == {"ppnce", "sup", "vmf"}

    # recompute every term from scratch with the losses package on the same pairs
    with torch.no_grad():
        teacher = tr.teacher(batch.images)
        feats = tr.net(
            batch.voxel_coords,
            batch.voxel_features,
            tuple(batch.spatial_shape),
            batch.batch_size,
            teacher,
            tuple(batch.images.shape[-2:]),
        )
    pv, px, lab = batch.pair_voxels, batch.pair_pixels, batch.pair_labels
    i_pp, i_sup = out.indices["ppnce"], out.indices["sup"]
    m = tr.cfg.loss.num_pairs
    assert i_pp.numel() == m and i_pp.unique().numel() == m
    assert i_sup.numel() == m and i_sup.unique().numel() == m
    pp = info_nce(feats.k_pp[pv[i_pp]], pixel_features(feats.q_pp, px[i_pp]), 0.07)
    assert bool((lab == 16).any())  # the world has unlabelled pairs, so both cases differ
    assert bool(tr.terms.prior.observed[16]) == (not ignore_unlabelled)
    sup = semantic_contrastive(
        feats.k_sem[pv[i_sup]],
        pixel_features(feats.q_sem, px[i_sup]),
        lab[i_sup],
        0.07,
        ignore_index=ignore,
    )
    kl = vmf_nll(
        feats.k_sem[pv],
        lab,
        tr.terms.prior.mu,
        tr.terms.prior.kappa,
        valid_classes=tr.terms.prior.observed,
        ignore_index=ignore,
    )
    assert float(out.terms["ppnce"].detach()) == pytest.approx(float(pp), rel=1e-5)
    assert float(out.terms["sup"].detach()) == pytest.approx(float(sup), rel=1e-5)
    assert float(out.terms["vmf"].detach()) == pytest.approx(float(kl), rel=1e-5)
    assert float(out.terms["vmf"].detach()) != 0.0
    expected = 0.5 * float(pp) + 0.5 * float(sup) + 1.0 * float(kl)
    assert float(out.total.detach()) == pytest.approx(expected, rel=1e-5)


def test_terms_switch_off_and_uniform_sampling(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    tr = _trainer(
        tiny_world,
        tmp_path,
        ["loss.vmf_weight=0", "loss.ppnce_weight=0", "loss.sup_sampling=uniform"],
        overrides_for,
    )
    assert tr.net.point_pp is None and tr.net.image_pp is None
    tr.dataset.set_epoch(0)
    tr.sampler.set_epoch(0)
    batch = next(iter(tr.batches()))
    out = tr.compute(batch)
    assert set(out.terms) == {"sup"}
    assert float(out.total.detach()) == pytest.approx(0.5 * float(out.terms["sup"].detach()))


def test_teacher_sees_its_own_input_size_and_features_stay_on_the_pairing_grid(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    from olivine_train.recipes.pretrain_model import teacher_features

    tr = _trainer(tiny_world, tmp_path, ["model.image_input_size=[64, 128]"], overrides_for)
    seen: list[tuple[int, ...]] = []
    tr.teacher.register_forward_pre_hook(lambda mod, args: seen.append(tuple(args[0].shape)))
    tr.dataset.set_epoch(0)
    tr.sampler.set_epoch(0)
    batch = next(iter(tr.batches()))
    assert tuple(batch.images.shape[-2:]) == (32, 64)  # pairs stay at data.image_size
    out = tr.compute(batch)
    assert seen[0][-2:] == (64, 128) and torch.isfinite(out.total)  # the teacher input, resized
    # the features are resampled to the stride grid of the pairing size, so that the 2D heads'
    # upsampled maps line up with the paired pixels (not a top-left crop of a larger map)
    with torch.no_grad():
        feats = teacher_features(tr.teacher, batch.images, [64, 128])
        up = torch.nn.functional.interpolate(
            batch.images, size=(64, 128), mode="bilinear", align_corners=False
        )
        fine = tr.teacher(up)
    s = int(tr.teacher.stride)
    assert tuple(feats.shape[-2:]) == (-(-32 // s), -(-64 // s))
    assert tuple(fine.shape[-2:]) == (2 * feats.shape[-2], 2 * feats.shape[-1])
    # exact 2x bilinear downsampling is the 2x2 mean: every cell comes from its own teacher cells
    pooled = torch.nn.functional.avg_pool2d(fine, 2)
    assert torch.allclose(feats, pooled, atol=1e-5)
    assert not torch.allclose(feats, fine[..., : feats.shape[-2], : feats.shape[-1]], atol=1e-3)
    plain = teacher_features(tr.teacher, batch.images, None)
    assert tuple(plain.shape[-2:]) == tuple(feats.shape[-2:])
