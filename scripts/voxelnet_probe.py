"""Linear probe of the VoxelNet's point features: a pretrained backbone against a random one.

A point's feature is ``conv_out``'s BEV map (HeightCompression, 128 channels) sampled bilinearly at
the point's (x, y), the way pretraining reads the heads (``olivine_models.sample_bev``). Both
backbones run in eval mode on the same voxels; one linear layer per backbone is trained on the
train scenes' points (features standardised with the train statistics, cross-entropy, class 0
ignored) and scored by mIoU on the val scenes' points (classes present in the val ground truth).

Usage (after ``olivine-train demo`` made the world and ``olivine-train pretrain demo_voxelnet``
pretrained a backbone)::

    python scripts/voxelnet_probe.py --world olivine-demo/world \
        --backbone olivine-demo/runs/pretrain_voxelnet/backbone.pt [--epochs 300] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from olivine_data import datasets
from olivine_models import create_point_encoder, height_compression, load_state, sample_bev
from olivine_train.checkpoint import load_backbone_state
from olivine_train.config import load_config
from olivine_train.recipes.common import build_collator, nuscenes_scenes

NUM_CLASSES = 17


def point_features(
    net: torch.nn.Module, dataset: object, collator: object
) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):  # type: ignore[arg-type]
            b = collator.seg([dataset[i]])  # type: ignore[attr-defined,index]
            sp = net(b.voxel_coords, b.voxel_features, b.spatial_shape, 1)
            rows = torch.zeros(b.points.shape[0], dtype=torch.int64)
            feats.append(sample_bev(height_compression(sp), b.points[:, :2], rows))
            labels.append(b.point_labels)
    return torch.cat(feats), torch.cat(labels)


def miou(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, int]:
    ious = []
    for c in range(1, NUM_CLASSES):
        g, p = gt == c, pred == c
        if int(g.sum()) == 0:
            continue
        ious.append(float((g & p).sum()) / float((g | p).sum()))
    return 100.0 * float(np.mean(ious)), len(ious)


def probe(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    seed: int,
) -> float:
    (xt, yt), (xv, yv) = train, val
    mu, sd = xt.mean(0), xt.std(0).clamp_min(1e-6)
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    torch.manual_seed(seed)
    lin = torch.nn.Linear(xt.shape[1], NUM_CLASSES)
    opt = torch.optim.Adam(lin.parameters(), lr=0.01)
    keep = yt > 0
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(lin(xt[keep]), yt[keep]).backward()
        opt.step()
    with torch.no_grad():
        logits = lin(xv)
        logits[:, 0] = -1e6  # class 0 is ignore, never predicted (the reference's rule)
        score, n = miou(logits.argmax(1)[yv > 0], yv[yv > 0])
    print(f"  val points {int((yv > 0).sum())}, classes present {n}")
    return score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", required=True)
    ap.add_argument("--backbone", required=True)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config("demo_voxelnet", [f"data.root={args.world}"])
    collator = build_collator(cfg)
    sets = {}
    for split in ("train", "val"):
        scenes, named = nuscenes_scenes(cfg, split)
        sets[split] = datasets.NuScenesSegDataset(
            cfg.data.root, cfg.data.version, scenes=scenes, split=named
        )
    state, _ = load_backbone_state(args.backbone)
    results = {}
    for name in ("pretrained", "random"):
        torch.manual_seed(args.seed)
        net = create_point_encoder("voxelnet", backend=cfg.model.sparse_backend)
        if name == "pretrained":
            load_state(net, state, source=args.backbone)
        net.eval()
        train = point_features(net, sets["train"], collator)
        val = point_features(net, sets["val"], collator)
        print(f"{name}: {train[0].shape[0]} train points, {val[0].shape[0]} val points")
        results[name] = probe(train, val, args.epochs, args.seed)
    pre, rnd = results["pretrained"], results["random"]
    print(f"linear probe mIoU (val): pretrained {pre:.2f}, random {rnd:.2f}")


if __name__ == "__main__":
    main()
