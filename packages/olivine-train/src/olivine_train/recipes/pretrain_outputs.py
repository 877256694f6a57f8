"""The pretraining network's heads and outputs, named once.

:class:`Head` names the trainable heads a loss term can ask for; :class:`PretrainOutputs` is what
:class:`~olivine_train.recipes.pretrain_model.PretrainNet` returns and what every loss term reads
(through :class:`~olivine_train.recipes.pretrain_terms.PairBatch`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torch import Tensor

__all__ = ["Head", "PretrainOutputs"]


class Head(enum.Enum):
    """A head of the pretraining network, as the loss terms ask for it.

    ``PP``: the point-pixel pair of heads (3D ``k_pp`` and 2D ``q_pp``, always built together);
    ``SEM_3D``: the 3D semantic head (``k_sem``); ``SEM_2D``: the 2D semantic head (``q_sem``).
    """

    PP = "pp"
    SEM_3D = "sem_3d"
    SEM_2D = "sem_2d"


@dataclass(frozen=True)
class PretrainOutputs:
    """The network's outputs of one step.

    ``backbone``, ``k_pp`` and ``k_sem``: per voxel ``(V, C)``. ``q_pp`` and ``q_sem``: the 2D
    heads' features, either ``(P, D)`` rows at the pixels of a
    :class:`~olivine_train.recipes.pretrain_terms.PixelPlan` or full ``(B, D, H, W)`` maps. A head
    that was not built (or, for a 2D head, not asked for at any pixel) is ``None``. The backbone
    always runs, so ``backbone`` is never ``None``.
    """

    backbone: Tensor
    k_pp: Tensor | None = None
    q_pp: Tensor | None = None
    k_sem: Tensor | None = None
    q_sem: Tensor | None = None

    def float(self) -> PretrainOutputs:
        """All outputs in float32 (the losses run in full precision under autocast)."""

        def up(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.float()

        return PretrainOutputs(
            self.backbone.float(), up(self.k_pp), up(self.q_pp), up(self.k_sem), up(self.q_sem)
        )

    def point(self, head: Head) -> Tensor:
        """The 3D features of ``head`` (``PP`` -> ``k_pp``, ``SEM_3D`` -> ``k_sem``)."""
        if head is Head.PP:
            return _present(self.k_pp, "k_pp", head)
        if head is Head.SEM_3D:
            return _present(self.k_sem, "k_sem", head)
        raise ValueError(f"{head}: not a 3D head (expected Head.PP or Head.SEM_3D)")

    def image(self, head: Head) -> Tensor:
        """The 2D features of ``head`` (``PP`` -> ``q_pp``, ``SEM_2D`` -> ``q_sem``)."""
        if head is Head.PP:
            return _present(self.q_pp, "q_pp", head)
        if head is Head.SEM_2D:
            return _present(self.q_sem, "q_sem", head)
        raise ValueError(f"{head}: not a 2D head (expected Head.PP or Head.SEM_2D)")


def _present(t: Tensor | None, name: str, head: Head) -> Tensor:
    if t is None:
        raise ValueError(
            f"network output {name} ({head}) was not computed: no active loss term builds that "
            "head, or no term asked for its pixels"
        )
    return t
