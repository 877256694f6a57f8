"""Weighted combination of named losses, with the parts kept for logging."""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor, nn

__all__ = ["WeightedSum", "OLIVINE_WEIGHTS"]

#: OLIVINE's total loss: ``mean([L_PPNCE, L_sup]) + L_kl`` in the reference code; the vMF term
#: (the paper's ``L_kl``) is named ``"vmf"``, as in olivine-train's config and logs.
OLIVINE_WEIGHTS: Mapping[str, float] = {"ppnce": 0.5, "sup": 0.5, "vmf": 1.0}


class WeightedSum(nn.Module):
    """``total = sum_name weight[name] * loss[name]`` over a fixed set of named scalar losses.

    ``forward`` takes the losses by name (a mapping and/or keyword arguments) and returns
    ``(total, parts)``; ``parts`` maps every name to its *unweighted* value, detached, plus
    ``"total"`` (detached), ready for a logger. Every configured name must be given (a missing or
    unknown name is an error, so a typo cannot silently drop a term); a weight of 0 keeps a term
    logged without training on it.

    Example::

        combine = WeightedSum.olivine()          # 0.5 ppnce + 0.5 sup + 1.0 vmf
        total, parts = combine(ppnce=l_pp, sup=l_sup, vmf=l_vmf)
        total.backward()
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__()
        if not isinstance(weights, Mapping) or len(weights) == 0:
            raise ValueError(f"weights must be a non-empty mapping name -> float, got {weights!r}")
        clean: dict[str, float] = {}
        for name, w in weights.items():
            if not isinstance(name, str) or not name or name == "total":
                raise ValueError(
                    f"loss names must be non-empty strings other than 'total', got {name!r}"
                )
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"weight of {name!r} must be a finite number, got {w!r}")
            clean[name] = float(w)
        self.weights: dict[str, float] = clean

    @classmethod
    def olivine(cls) -> WeightedSum:
        """The paper's weights: ``0.5 ppnce + 0.5 sup + 1.0 vmf``."""
        return cls(OLIVINE_WEIGHTS)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.weights.items())

    def forward(
        self, losses: Mapping[str, Tensor] | None = None, **kwargs: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        given: dict[str, Tensor] = dict(losses or {})
        for name, value in kwargs.items():
            if name in given:
                raise ValueError(f"loss {name!r} given twice (in the mapping and as a keyword)")
            given[name] = value
        missing = sorted(set(self.weights) - set(given))
        unknown = sorted(set(given) - set(self.weights))
        if missing or unknown:
            raise ValueError(
                f"WeightedSum expects exactly the losses {sorted(self.weights)}; "
                f"missing {missing}, unknown {unknown}"
            )
        total: Tensor | None = None
        parts: dict[str, Tensor] = {}
        for name, weight in self.weights.items():
            value = given[name]
            if not isinstance(value, Tensor) or value.numel() != 1:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"loss {name!r} must be a scalar tensor, got {shape}")
            value = value.reshape(())
            parts[name] = value.detach()
            term = value * weight
            total = term if total is None else total + term
        assert total is not None  # weights is non-empty
        parts["total"] = total.detach()
        return total, parts
