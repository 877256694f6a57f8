"""Building segment-anything models: the official architectures and a tiny test-sized SAM."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from olivine_models.state import StateMismatchError, load_state

__all__ = ["SAM_CHECKPOINT_URLS", "SAM_VARIANTS", "build_sam", "build_tiny_sam"]

SAM_CHECKPOINT_URLS: dict[str, str] = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}
"""Official segment-anything checkpoints (download them yourself; nothing is fetched here)."""

SAM_VARIANTS = ("vit_h", "vit_l", "vit_b", "tiny")


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
    variant: str = "vit_h", checkpoint: str | Path | None = None, random_init: bool = False
) -> nn.Module:
    """Build a segment-anything model in eval mode.

    Args:
        variant: ``"vit_h"``, ``"vit_l"``, ``"vit_b"`` (official architectures) or ``"tiny"``
            (:func:`build_tiny_sam`, for tests and CPU demos).
        checkpoint: path of a state dict (official ``sam_vit_*.pth`` or a saved tiny SAM), loaded
            with ``torch.load(weights_only=True)``.
        random_init: allow an official architecture without a checkpoint (speed tests only; the
            masks are meaningless). ``"tiny"`` never needs it.

    Raises:
        KeyError: unknown variant.
        FileNotFoundError: ``checkpoint`` does not exist (the message gives the official URL).
        ValueError: no checkpoint for an official variant without ``random_init``, or a checkpoint
            that does not fit the variant.
    """
    if variant not in SAM_VARIANTS:
        raise KeyError(f"unknown SAM variant {variant!r}; known: {list(SAM_VARIANTS)}")
    url = SAM_CHECKPOINT_URLS.get(variant)
    where = f" (official checkpoint: {url})" if url else ""
    state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM {variant}: checkpoint file not found: {path}{where}")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
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
