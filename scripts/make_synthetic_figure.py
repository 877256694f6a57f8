"""Make docs/synthetic_world.png: a synthetic camera image, its label maps and the projected LiDAR.

The world is exported to a temporary nuScenes folder and read back with the same reader the
pretraining code uses (``NuScenesPretrainDataset``), so the overlay shows the real point-pixel
pairs, not a shortcut.

    python scripts/make_synthetic_figure.py [--out docs/synthetic_world.png] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from olivine_data import LabelStore
from olivine_data.datasets import NuScenesPretrainDataset
from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes
from olivine_data.synthetic.materials import SEEM17_NAMES

# One colour per SEEM17 id (nuScenes-lidarseg-like palette; background black).
PALETTE = np.array(
    [
        [112, 128, 144],
        [220, 20, 60],
        [255, 127, 80],
        [255, 158, 0],
        [255, 99, 71],
        [255, 140, 0],
        [255, 61, 99],
        [233, 150, 70],
        [0, 0, 230],
        [47, 79, 79],
        [0, 207, 191],
        [75, 0, 75],
        [112, 180, 60],
        [0, 175, 0],
        [222, 184, 135],
        [175, 0, 75],
        [0, 0, 0],
    ],
    dtype=np.uint8,
)


def _colour_depth(depth: np.ndarray, max_depth: float = 40.0) -> np.ndarray:
    """Turbo-like colour ramp (near red, far blue) for depths (N,)."""
    x = np.clip(depth / max_depth, 0.0, 1.0)[:, None]
    stops = np.array([[230, 30, 30], [250, 200, 40], [60, 200, 90], [40, 120, 240]], np.float64)
    pos = x * (len(stops) - 1)
    i = np.minimum(pos.astype(int)[:, 0], len(stops) - 2)
    f = pos[:, 0] - i
    return (stops[i] * (1 - f[:, None]) + stops[i + 1] * f[:, None]).astype(np.uint8)


def _panel(image: np.ndarray, title: str) -> Image.Image:
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, 0, 8 + 7 * len(title), 16], fill=(0, 0, 0))
    draw.text((4, 2), title, fill=(255, 255, 255))
    return im


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/synthetic_world.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--camera", default="CAM_FRONT")
    parser.add_argument("--size", default="800x450", help="camera resolution WxH")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = SyntheticWorldConfig(
        scenes=1,
        samples_per_scene=3,
        seed=args.seed,
        image_size=(w, h),
        vfm_noise=0.2,
        cameras=(args.camera,),
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = export_nuscenes(cfg, tmp, progress=False)
        ds = NuScenesPretrainDataset(root, cfg.version, label_store=root, cameras=(args.camera,))
        sample = ds[2]
        nusc = ds.nusc
        sd = nusc.get("sample_data", nusc.get("sample", ds.sample_tokens[2])["data"][args.camera])
        vfm = LabelStore(root).read(args.camera, sd["filename"])
        gt = LabelStore(root / "gt").read(args.camera, sd["filename"])
    image = sample.images[0]
    keep = sample.pair_pixels[:, 0] == 0
    pts = sample.points[sample.pair_points[keep], :3]
    row, col = sample.pair_pixels[keep, 1], sample.pair_pixels[keep, 2]
    depth = np.linalg.norm(pts, axis=1)
    overlay = (image.astype(np.float32) * 0.6).astype(np.uint8)
    colours = _colour_depth(depth)
    order = np.argsort(-depth)  # near points drawn last
    for dr in (0, 1):
        for dc in (0, 1):
            rr = np.clip(row[order] + dr, 0, h - 1)
            cc = np.clip(col[order] + dc, 0, w - 1)
            overlay[rr, cc] = colours[order]
    panels = [
        _panel(image, f"{args.camera} (synthetic, {w}x{h})"),
        _panel(PALETTE[gt], "ground-truth labels (SEEM17)"),
        _panel(overlay, f"LiDAR projected ({int(keep.sum())} pairs, colour = range)"),
        _panel(PALETTE[vfm], f"simulated VFM labels (vfm_noise={cfg.vfm_noise})"),
    ]
    legend_h = 22
    fig = Image.new("RGB", (2 * w, 2 * h + legend_h), (255, 255, 255))
    for i, p in enumerate(panels):
        fig.paste(p, ((i % 2) * w, (i // 2) * h))
    draw = ImageDraw.Draw(fig)
    x = 4
    present = sorted(set(np.unique(gt).tolist()) | set(np.unique(vfm).tolist()))
    for cid in present:
        name = SEEM17_NAMES[cid]
        draw.rectangle(
            [x, 2 * h + 5, x + 12, 2 * h + 17],
            fill=tuple(int(v) for v in PALETTE[cid]),
            outline=(0, 0, 0),
        )
        draw.text((x + 16, 2 * h + 5), name, fill=(0, 0, 0))
        x += 24 + 6 * len(name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.save(out, optimize=True)
    print(f"wrote {out} ({fig.size[0]}x{fig.size[1]})")


if __name__ == "__main__":
    main()
