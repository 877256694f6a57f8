"""Input validation shared by the losses (internal).

Every check raises ``TypeError`` (wrong kind of object / dtype) or ``ValueError`` (wrong shape or
value) with a message that names the argument and shows what was expected and what was given.
None of these checks reads tensor *values* (so none synchronises an accelerator), except
:func:`check_label_range`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def check_features(name: str, x: object, allow_empty: bool = False) -> Tensor:
    """``x`` must be a floating-point tensor of shape (N, D) with N >= 1 (or >= 0) and D >= 1."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, D) (2 dimensions), got {x.ndim} dimensions "
            f"with shape {tuple(x.shape)}"
        )
    if (x.shape[0] == 0 and not allow_empty) or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    return x


def check_pair(k_name: str, k: object, q_name: str, q: object) -> tuple[Tensor, Tensor]:
    """Two (M, D) feature tensors with identical shapes, devices and comparable dtypes."""
    kt = check_features(k_name, k)
    qt = check_features(q_name, q)
    if kt.shape != qt.shape:
        raise ValueError(
            f"{k_name} and {q_name} must have the same shape (M, D), got {k_name} "
            f"{tuple(kt.shape)} and {q_name} {tuple(qt.shape)}"
        )
    if kt.device != qt.device:
        raise ValueError(
            f"{k_name} and {q_name} must be on the same device, got {kt.device} and {qt.device}"
        )
    return kt, qt


def check_labels(name: str, labels: object, n: int, n_name: str = "N") -> Tensor:
    """``labels`` must be an integer tensor of shape (n,)."""
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of shape ({n_name}={n},), "
            f"got {type(labels).__name__}"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"{name} must have an integer dtype (int64, int32, uint8, ...), got {labels.dtype}"
        )
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n_name}={n},), got shape {tuple(labels.shape)}")
    return labels


def check_weights(name: str, weights: object, n: int) -> Tensor | None:
    """Optional per-pair weights: None or a floating tensor of shape (n,)."""
    if weights is None:
        return None
    if not isinstance(weights, Tensor):
        raise TypeError(
            f"{name} must be None or a torch.Tensor of shape ({n},), got {type(weights).__name__}"
        )
    if not weights.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {weights.dtype}")
    if weights.ndim != 1 or weights.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got shape {tuple(weights.shape)}")
    return weights


def check_temperature(temperature: object) -> float:
    """A finite, strictly positive Python number."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(
            f"temperature must be a positive float, got {type(temperature).__name__} "
            f"({temperature!r})"
        )
    value = float(temperature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    return value


def check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return str(reduction)


def check_chunk_size(chunk_size: object) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(
            f"chunk_size must be None or a positive int, got {type(chunk_size).__name__}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def check_optional_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be None or an int, got {type(value).__name__} ({value!r})")
    return value


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the losses compute in and return: float32 for half/bfloat16 inputs, else the
    input dtype.

    A loss value is returned in this dtype, not cast back to fp16: with fp16 features of norm ~100
    a correct InfoNCE value (~7.8e4) is above fp16's largest finite number (65504) and would
    become ``inf``. Gradients still flow back to the inputs in their own dtype.
    """
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return dtype


def graph_zero(*tensors: Tensor) -> Tensor:
    """A scalar +0.0 that is connected to the autograd graph of ``tensors`` (zero gradients).

    Returning it instead of a fresh constant keeps DDP's unused-parameter detection and
    ``loss.backward()`` working when a loss has nothing to act on.
    """
    first = tensors[0]
    total = torch.zeros((), dtype=first.dtype, device=first.device)
    for t in tensors:
        total = total + t.sum() * 0.0
    return total + 0.0  # -0.0 + 0.0 == +0.0


def check_label_range(labels: Tensor, include: Tensor, num_classes: int) -> None:
    """``ValueError`` listing the labels outside ``[0, num_classes)`` among the ``include`` ones."""
    bad = include & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()[:10]
        raise ValueError(
            f"labels must lie in [0, num_classes={num_classes}) (or equal ignore_index), "
            f"got out-of-range values {values}"
        )
