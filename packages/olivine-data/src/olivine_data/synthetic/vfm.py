"""Simulated visual-foundation-model (VFM) labels: ground truth with realistic corruption.

Three corruptions, as seen in SEEM / Grounded-SAM label maps:

1. **segment confusion** -- whole segments (an object, or an 8 m ground patch) take a similar class
   (car <-> truck, terrain <-> vegetation, road <-> sidewalk, small objects missed...);
2. **boundary errors** -- bands along class boundaries are eroded (unlabelled) or bled over by the
   neighbouring class, per segment;
3. **unlabelled regions** -- smooth random blobs left unlabelled.

The budget is exact: of the labelled (non-background) ground-truth pixels, a fraction ``rate`` ends
with a different label (40 % of the budget for segments, 30 % for boundaries, the remainder blobs).
"""

from __future__ import annotations

import numpy as np

from olivine_data.synthetic.materials import SEEM17_UNLABELLED

__all__ = ["SEEM17_CONFUSIONS", "corrupt_labels", "label_noise_rate"]

U = SEEM17_UNLABELLED

#: For each SEEM17 class, the classes a VFM plausibly confuses it with.
SEEM17_CONFUSIONS: dict[int, tuple[int, ...]] = {
    0: (9, 14),  # barrier -> traffic_cone, building
    1: (6, 8, U),  # bicycle -> motorcycle, pedestrian, missed
    2: (4, 3),  # bus -> truck, car
    3: (4, 4, 2),  # car -> truck, bus
    4: (3, 2, 5, 7),  # truck -> car, bus, trailer, construction_vehicle
    5: (4,),  # trailer -> truck
    6: (1, 3),  # motorcycle -> bicycle, car
    7: (4,),  # construction_vehicle -> truck
    8: (U, 1),  # pedestrian -> missed, bicycle
    9: (0, U),  # traffic_cone -> barrier, missed
    10: (11, 15),  # road -> sidewalk, other ground
    11: (10, 12, 15),  # sidewalk -> road, terrain, other ground
    12: (13, 11),  # terrain -> vegetation, sidewalk
    13: (12, 14),  # vegetation -> terrain, building
    14: (13, U, 0),  # building -> vegetation, missed, barrier
    15: (10, 11),  # other ground -> road, sidewalk
}

_SHIFTS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def _shifted(a: np.ndarray, dr: int, dc: int, fill: int) -> np.ndarray:
    """``out[r, c] = a[r + dr, c + dc]`` (``fill`` outside)."""
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(-dr, 0) : h - max(dr, 0), max(-dc, 0) : w - max(dc, 0)] = a[
        max(dr, 0) : h - max(-dr, 0), max(dc, 0) : w - max(-dc, 0)
    ]
    return out


def label_noise_rate(gt: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of labelled ground-truth pixels (gt != background) whose label differs."""
    labelled = gt != U
    n = int(labelled.sum())
    return float((labels[labelled] != gt[labelled]).sum()) / n if n else 0.0


def corrupt_labels(
    gt: np.ndarray,
    instance: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    max_band: int = 8,
) -> np.ndarray:
    """VFM-like labels (H, W) uint8 from a ground-truth SEEM17 map ``gt`` (H, W) and an instance
    map (H, W) (segments), with exactly ``round(rate * #labelled)`` labelled pixels changed.
    """
    if gt.shape != instance.shape or gt.ndim != 2:
        raise ValueError(
            f"gt/instance: expected equal (H, W) shapes, got {gt.shape}, {instance.shape}"
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: expected a value in [0, 1], got {rate}")
    gt = gt.astype(np.int64)
    out = gt.copy()
    labelled = gt != U
    n_lab = int(labelled.sum())
    budget = int(round(rate * n_lab))
    if budget == 0:
        return out.astype(np.uint8)
    changed = np.zeros(gt.shape, dtype=bool)
    lab_idx = np.flatnonzero(labelled)
    ids, inverse, counts = np.unique(
        instance.reshape(-1)[lab_idx], return_inverse=True, return_counts=True
    )
    seg_class = np.zeros(len(ids), dtype=np.int64)
    seg_class[inverse] = gt.reshape(-1)[lab_idx]

    flat_out = out.reshape(-1)
    used = _confuse_segments(flat_out, changed, lab_idx, inverse, counts, seg_class, budget, rng)
    used += _boundary_errors(
        gt,
        flat_out,
        changed,
        labelled,
        lab_idx,
        inverse,
        n_seg=len(ids),
        bnd_budget=min(budget - used, int(0.3 * budget)),
        max_band=max_band,
        rng=rng,
    )
    _unlabelled_blobs(gt, flat_out, changed, labelled, budget - used, rng)
    return out.astype(np.uint8)


def _confuse_segments(
    flat_out: np.ndarray,
    changed: np.ndarray,
    lab_idx: np.ndarray,
    inverse: np.ndarray,
    counts: np.ndarray,
    seg_class: np.ndarray,
    budget: int,
    rng: np.random.Generator,
) -> int:
    """Step 1 of :func:`corrupt_labels`: whole segments take a confusable class, up to 40 % of
    the budget; returns the pixels changed.
    """
    seg_budget = int(0.4 * budget)
    n_seg = len(counts)
    chosen = np.zeros(n_seg, dtype=bool)
    target = np.full(n_seg, U, dtype=np.int64)
    used = 0
    for j in rng.permutation(n_seg):
        if used + counts[j] <= seg_budget:
            options = SEEM17_CONFUSIONS[int(seg_class[j])]
            chosen[j] = True
            target[j] = options[int(rng.integers(len(options)))]
            used += int(counts[j])
    sel = chosen[inverse]
    flat_out[lab_idx[sel]] = target[inverse[sel]]
    changed.reshape(-1)[lab_idx[sel]] = True
    return used


def _boundary_errors(
    gt: np.ndarray,
    flat_out: np.ndarray,
    changed: np.ndarray,
    labelled: np.ndarray,
    lab_idx: np.ndarray,
    inverse: np.ndarray,
    n_seg: int,
    bnd_budget: int,
    max_band: int,
    rng: np.random.Generator,
) -> int:
    """Step 2: rings at growing distance from class boundaries take the class across the
    boundary (segments that bleed) or become unlabelled; returns the pixels changed.
    """
    band = np.zeros(gt.shape, dtype=bool)
    other = np.full(gt.shape, -1, dtype=np.int64)
    for dr, dc in _SHIFTS:
        nb = _shifted(gt, dr, dc, -1)
        edge = (nb >= 0) & (nb != gt) & labelled & (other < 0)
        other[edge] = nb[edge]
        band |= edge
    bleed = np.zeros(n_seg, dtype=bool)
    bleed[:] = rng.random(n_seg) < 0.5
    seg_bleed = np.zeros(gt.shape, dtype=bool)
    seg_bleed.reshape(-1)[lab_idx] = bleed[inverse]
    ring = band
    taken = 0
    for _ in range(max_band):
        cand = ring & ~changed
        n_cand = int(cand.sum())
        if n_cand == 0 or taken >= bnd_budget:
            break
        cidx = np.flatnonzero(cand)
        if taken + n_cand > bnd_budget:
            cidx = rng.choice(cidx, bnd_budget - taken, replace=False)
        value = np.where(
            seg_bleed.reshape(-1)[cidx] & (other.reshape(-1)[cidx] >= 0), other.reshape(-1)[cidx], U
        )
        value = np.where(value == gt.reshape(-1)[cidx], U, value)
        flat_out[cidx] = value
        changed.reshape(-1)[cidx] = True
        taken += len(cidx)
        new_ring = np.zeros_like(band)
        for dr, dc in _SHIFTS:  # grow the band by one pixel, carrying the other-side class
            nb_in = _shifted(ring, dr, dc, 0).astype(bool)
            nb_other = _shifted(other, dr, dc, -1)
            grow = nb_in & ~band & ~new_ring & labelled
            other[grow] = np.where(other[grow] < 0, nb_other[grow], other[grow])
            new_ring |= grow
        band |= new_ring
        ring = new_ring
    return taken


def _unlabelled_blobs(
    gt: np.ndarray,
    flat_out: np.ndarray,
    changed: np.ndarray,
    labelled: np.ndarray,
    remaining: int,
    rng: np.random.Generator,
) -> None:
    """Step 3: the rest of the budget becomes unlabelled where a smooth random field is highest."""
    if remaining <= 0:
        return
    h, w = gt.shape
    gh, gw = max(h // 40, 2) + 2, max(w // 40, 2) + 2
    coarse = rng.random((gh, gw))
    ys = np.linspace(0, gh - 1.001, h)
    xs = np.linspace(0, gw - 1.001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    field = (
        (1 - fy) * (1 - fx) * coarse[y0][:, x0]
        + (1 - fy) * fx * coarse[y0][:, x0 + 1]
        + fy * (1 - fx) * coarse[y0 + 1][:, x0]
        + fy * fx * coarse[y0 + 1][:, x0 + 1]
    )
    pool = np.flatnonzero(labelled.reshape(-1) & ~changed.reshape(-1))
    if remaining < len(pool):
        top = np.argpartition(-field.reshape(-1)[pool], remaining - 1)[:remaining]
        pool = pool[top]
    flat_out[pool] = U
