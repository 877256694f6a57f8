"""Checks of the sparse input every point encoder takes: ``(V, 4)`` int32 ``[batch, i, j, k]``
coordinates, ``(V, F)`` float features, a spatial shape and a batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["validate_sparse_input"]


def validate_sparse_input(
    name: str,
    coords: torch.Tensor,
    feats: torch.Tensor,
    spatial_shape: Sequence[int],
    batch_size: int,
    in_channels: int,
    check_unique: bool = True,
) -> tuple[int, int, int]:
    """Check the sparse input of a point encoder; return the spatial shape as a 3-tuple of ints.

    Raises:
        TypeError: tensors of the wrong type or dtype.
        ValueError: wrong shapes, out-of-range or duplicate coordinates.
    """
    if not isinstance(coords, torch.Tensor) or not isinstance(feats, torch.Tensor):
        raise TypeError(
            f"{name}: coords and feats must be torch.Tensors, got {type(coords).__name__} and "
            f"{type(feats).__name__}"
        )
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(
            f"{name}: coords must have shape (V, 4) [batch, i, j, k], got {tuple(coords.shape)}"
        )
    if coords.dtype != torch.int32:
        raise TypeError(f"{name}: coords must be int32, got {coords.dtype}")
    if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
        raise ValueError(
            f"{name}: feats must have shape (V, F) with V = {coords.shape[0]} rows like coords, "
            f"got {tuple(feats.shape)}"
        )
    if feats.shape[1] != in_channels:
        raise ValueError(
            f"{name}: expected {in_channels} input feature channel(s), got feats with "
            f"{feats.shape[1]} (shape {tuple(feats.shape)})"
        )
    if not feats.is_floating_point():
        raise TypeError(f"{name}: feats must be a floating-point tensor, got {feats.dtype}")
    if coords.device != feats.device:
        raise ValueError(
            f"{name}: coords and feats must be on the same device, got {coords.device} and "
            f"{feats.device}"
        )
    if coords.shape[0] == 0:
        raise ValueError(f"{name}: got an empty input (0 voxels)")
    shape = tuple(int(s) for s in spatial_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{name}: spatial_shape must be 3 positive ints, got {tuple(spatial_shape)}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")
    lo = coords.min(dim=0).values.tolist()
    hi = coords.max(dim=0).values.tolist()
    if min(lo) < 0:
        raise ValueError(f"{name}: coords must be non-negative, got per-column minima {lo}")
    limits = (int(batch_size), *shape)
    if any(h >= lim for h, lim in zip(hi, limits)):
        raise ValueError(
            f"{name}: coords out of range: per-column maxima {hi} must be < "
            f"[batch_size, *spatial_shape] = {list(limits)}"
        )
    if check_unique:
        c = coords.to(torch.int64)
        key = ((c[:, 0] * limits[1] + c[:, 1]) * limits[2] + c[:, 2]) * limits[3] + c[:, 3]
        num_unique = int(torch.unique(key).numel())
        if num_unique != coords.shape[0]:
            raise ValueError(
                f"{name}: coords contain {coords.shape[0] - num_unique} duplicate voxel(s); "
                "voxelise so that each (batch, i, j, k) appears once"
            )
    return shape[0], shape[1], shape[2]
