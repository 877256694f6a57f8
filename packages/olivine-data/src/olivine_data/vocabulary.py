"""Label vocabularies: the id spaces of the VFM labels and of the nuScenes evaluation.

A :class:`Vocabulary` names the ids a label source produces and maps each id to the nuScenes
16-class evaluation id (``0`` = ignore) through the ``to_eval`` lookup array.

``SEEM17``
    The camera-ready OLIVINE labels (SEEM Focal-L, ``demo_code/utils/constants.py``): the 16
    nuScenes class names in SEEM's own order (**not** the lidarseg evaluation order) plus
    ``"background"``. Ids 0..16; ``16 = background`` is the explicit unlabelled id.

    Reference quirk, documented deviation: the reference SEEM script leaves *unpainted* pixels at
    0, which collides with ``barrier`` (id 0). Labels written by this toolkit (the synthetic world,
    the ``make-labels`` recipe) use 16 for unlabelled pixels. Downloaded reference ``camseg`` PNGs
    keep the collision; nothing here can undo it.

``GSAM14``
    The Grounded-SAM labels of the arXiv-v1 era: 0 = background/unlabelled, then the 13 prompt
    classes in prompt order (barrier=1 ... building=13).

``NUSCENES16``
    The nuScenes lidarseg evaluation classes: 0 = ignore, then the 16 classes in lidarseg
    evaluation order (barrier=1 ... vegetation=16). ``to_eval`` is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["GSAM14", "NUSCENES16", "SEEM17", "VOCABULARIES", "Vocabulary", "get_vocabulary"]


@dataclass(frozen=True)
class Vocabulary:
    """A label space: ``class_names[i]`` is the name of id ``i``.

    Attributes:
        name: registry name (``"seem17"``, ...).
        class_names: one name per id, ids ``0 .. len(class_names) - 1``.
        unlabelled_id: the id that means "no label" (background / ignore).
        to_eval: ``(len(class_names),)`` int64 read-only array mapping an id of this vocabulary to
            the nuScenes 16-class evaluation id (0 = ignore). Use ``vocab.to_eval[ids]``.
    """

    name: str
    class_names: tuple[str, ...]
    unlabelled_id: int
    to_eval: np.ndarray = field(compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.class_names)
        if n == 0 or n > 256:
            raise ValueError(f"vocabulary {self.name!r}: expected 1..256 classes, got {n}")
        if not 0 <= self.unlabelled_id < n:
            raise ValueError(
                f"vocabulary {self.name!r}: unlabelled_id must lie in [0, {n}), "
                f"got {self.unlabelled_id}"
            )
        table = np.asarray(self.to_eval, dtype=np.int64).copy()
        if table.shape != (n,):
            raise ValueError(
                f"vocabulary {self.name!r}: to_eval expected shape ({n},), got {table.shape}"
            )
        if table.min() < 0 or table.max() > 16:
            raise ValueError(f"vocabulary {self.name!r}: to_eval ids must lie in [0, 16]")
        table.setflags(write=False)
        object.__setattr__(self, "to_eval", table)

    @property
    def num_classes(self) -> int:
        """Number of ids, including the unlabelled one."""
        return len(self.class_names)

    def validate_ids(self, ids: np.ndarray, what: str) -> None:
        """Raise ``ValueError`` naming ``what`` if any id in ``ids`` is outside the vocabulary."""
        if ids.size == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.num_classes:
            bad = np.unique(ids[(ids < 0) | (ids >= self.num_classes)])
            raise ValueError(
                f"{what}: label ids {bad[:10].tolist()} are outside vocabulary {self.name!r} "
                f"(expected 0..{self.num_classes - 1})"
            )


NUSCENES16 = Vocabulary(
    name="nuscenes16",
    class_names=(
        "ignore",
        "barrier",
        "bicycle",
        "bus",
        "car",
        "construction_vehicle",
        "motorcycle",
        "pedestrian",
        "traffic_cone",
        "trailer",
        "truck",
        "driveable_surface",
        "other_flat",
        "sidewalk",
        "terrain",
        "manmade",
        "vegetation",
    ),
    unlabelled_id=0,
    to_eval=np.arange(17),
)

_EVAL = {name: i for i, name in enumerate(NUSCENES16.class_names)}


#: VFM class names that are not NUSCENES16 names -> their evaluation class (None: 0, ignored).
_VFM_TO_EVAL: dict[str, str | None] = {
    "road": "driveable_surface",
    "building": "manmade",
    "other ground": "other_flat",
    "background": None,
}


def _eval_ids(class_names: tuple[str, ...]) -> np.ndarray:
    """The NUSCENES16 id of each VFM class name (a NUSCENES16 name or one of ``_VFM_TO_EVAL``)."""
    evals = [_VFM_TO_EVAL.get(name, name) for name in class_names]
    return np.array([0 if name is None else _EVAL[name] for name in evals])


_SEEM17_NAMES = (
    "barrier",
    "bicycle",
    "bus",
    "car",
    "truck",
    "trailer",
    "motorcycle",
    "construction_vehicle",
    "pedestrian",
    "traffic_cone",
    "road",
    "sidewalk",
    "terrain",
    "vegetation",
    "building",
    "other ground",
    "background",
)
SEEM17 = Vocabulary(
    name="seem17", class_names=_SEEM17_NAMES, unlabelled_id=16, to_eval=_eval_ids(_SEEM17_NAMES)
)

_GSAM14_NAMES = (
    "background",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "truck",
    "road",
    "sidewalk",
    "terrain",
    "vegetation",
    "building",
)
GSAM14 = Vocabulary(
    name="gsam14", class_names=_GSAM14_NAMES, unlabelled_id=0, to_eval=_eval_ids(_GSAM14_NAMES)
)

VOCABULARIES: dict[str, Vocabulary] = {v.name: v for v in (SEEM17, GSAM14, NUSCENES16)}


def get_vocabulary(name: str | Vocabulary) -> Vocabulary:
    """Return the registered vocabulary ``name`` (case-insensitive); a Vocabulary passes through.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    if isinstance(name, Vocabulary):
        return name
    if not isinstance(name, str):
        raise TypeError(f"vocabulary: expected a name or a Vocabulary, got {type(name).__name__}")
    try:
        return VOCABULARIES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown vocabulary {name!r}; known: {sorted(VOCABULARIES)}") from None
