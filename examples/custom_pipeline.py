"""Compose your own OLIVINE step from the packages (no olivine-train involved).

Reads one real nuScenes keyframe (or any nuScenes-format folder, e.g. ``olivine-data synth``
output), augments and collates it, runs a sparse 3D student and a frozen 2D teacher with their
heads, samples pairs uniformly (L_PPNCE) and with DCAS (L_sup), and combines the losses.

    python examples/custom_pipeline.py [DATAROOT] [VERSION]

Defaults to the real keyframe in ../shared/data (non-commercial licence, never copied here).
Without camera labels (``camseg/``) the semantic terms are skipped; with them (synthetic world)
all three OLIVINE terms run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from olivine_data import Collator, PretrainAugmentation, dcas_sample, uniform_pairs
from olivine_data.datasets import NuScenesPretrainDataset
from olivine_losses import InfoNCELoss, SemanticContrastiveLoss, VMFClassPrior, WeightedSum
from olivine_models import ImageHead, PointHead, create_image_encoder, create_point_encoder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "nuscenes" / "mmdet3d-demo"


def main(dataroot: str = str(DEFAULT), version: str = "v1.0-mini") -> dict[str, float]:
    torch.manual_seed(0)
    has_labels = (Path(dataroot) / "camseg").is_dir()
    dataset = NuScenesPretrainDataset(
        dataroot, version, label_store=dataroot if has_labels else None
    )
    augment = PretrainAugmentation(size=(112, 208), min_pairs=64, seed=0)
    sample = augment(dataset[0], np.random.default_rng(0))
    batch = Collator(mode="cylindrical").pretrain([sample])

    student = create_point_encoder("minkunet_tiny", in_channels=1)
    teacher = create_image_encoder("resnet18_dilated")  # frozen, random weights offline
    head_3d = PointHead(student.out_channels, 64)
    head_2d = ImageHead(teacher.out_channels, 64, upsample=teacher.stride)

    voxels = student(
        batch.voxel_coords, batch.voxel_features, batch.spatial_shape, batch.batch_size
    )
    with torch.no_grad():
        maps = teacher(batch.images)
    pix = head_2d(maps, output_size=tuple(batch.images.shape[-2:]))
    k_all = head_3d(voxels)[batch.pair_voxels]
    px = batch.pair_pixels
    q_all = pix[px[:, 0], :, px[:, 1], px[:, 2]]

    gen = torch.Generator().manual_seed(0)
    uni = uniform_pairs(k_all.shape[0], 1024, gen)
    parts = {"ppnce": InfoNCELoss(temperature=0.07)(k_all[uni], q_all[uni])}
    if batch.pair_labels is not None:
        y = batch.pair_labels
        dcas = dcas_sample(batch.pair_range_bins, y, 1024, gen)
        parts["sup"] = SemanticContrastiveLoss(ignore_index=16)(k_all[dcas], q_all[dcas], y[dcas])
        prior = VMFClassPrior(num_classes=17, dim=64, warmup_steps=0, ignore_index=16)
        prior.update(k_all.detach(), y)
        parts["vmf"] = prior.loss(k_all, y)
    weights = {"ppnce": 0.5, "sup": 0.5, "vmf": 1.0}
    total, logged = WeightedSum({n: weights[n] for n in parts})(**parts)
    total.backward()
    result = {name: float(value) for name, value in logged.items()}
    print(f"{batch.pair_voxels.shape[0]} pairs, {batch.voxel_coords.shape[0]} voxels: {result}")
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
