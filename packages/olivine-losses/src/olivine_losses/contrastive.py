"""Point-pixel InfoNCE (PPKT / OLIVINE's L_PPNCE) and SLidR's superpixel-pooled InfoNCE."""

from __future__ import annotations

import torch
from torch import Tensor

from olivine_losses._checks import (
    check_chunk_size,
    check_features,
    check_labels,
    check_pair,
    check_reduction,
    check_temperature,
    check_weights,
    compute_dtype,
    graph_zero,
)
from olivine_losses._kernel import reduce_losses, row_losses

__all__ = ["info_nce", "superpixel_info_nce", "pool_by_segment"]


def info_nce(
    k: Tensor,
    q: Tensor,
    temperature: float = 0.07,
    *,
    symmetric: bool = False,
    weights: Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """Point-pixel InfoNCE with diagonal positives (PPKT, OLIVINE's ``L_PPNCE``).

    With logits ``L = k q^T / temperature`` (``M x M``), the loss of anchor ``i`` is the
    cross-entropy of row ``i`` against its diagonal entry::

        l_i = -log( exp(L_ii) / sum_j exp(L_ij) ) = logsumexp_j(L_ij) - L_ii

    This is ``F.cross_entropy(k @ q.T / temperature, arange(M))`` of the reference code (3D anchors
    ``k`` against 2D candidates ``q``), computed with log-sum-exp only.

    Args:
        k: ``(M, D)`` anchor features (3D points). Need not be unit norm.
        q: ``(M, D)`` candidate features (the matched 2D pixels); row ``i`` is the positive of
            ``k[i]``, every other row a negative.
        temperature: ``tau > 0`` (paper: 0.07).
        symmetric: also use ``q`` as anchors against ``k`` and average the two directions per pair
            (``l_i = (l_i^{3D->2D} + l_i^{2D->3D}) / 2``). Default ``False`` as the reference.
        weights: optional ``(M,)`` per-pair weights ``w_i``.
        reduction: ``"mean"`` (``sum w_i l_i / sum w_i``; the plain mean without weights),
            ``"sum"`` (``sum w_i l_i``) or ``"none"`` (the ``(M,)`` vector ``w_i l_i``).
        chunk_size: process the anchors ``chunk_size`` rows at a time in the forward and the
            backward (a custom autograd function that recomputes the logits), so that peak memory
            is ``O(M * chunk_size)`` instead of ``O(M^2)``. Same values and gradients as
            ``None`` (the dense computation) up to float rounding. The chunked path supports a
            single backward (no double backward).

    Returns:
        The loss in the dtype of ``k``, except that half and bfloat16 inputs are computed in
        float32 and the loss is *returned* in float32 (an fp16 loss overflows to ``inf`` above
        65504, which large-norm features reach); the gradients reach ``k`` and ``q`` in their
        own dtype.
    """
    kt, qt = check_pair("k", k, "q", q)
    tau = check_temperature(temperature)
    w = check_weights("weights", weights, kt.shape[0])
    red = check_reduction(reduction)
    chunk = check_chunk_size(chunk_size)
    out_dtype = compute_dtype(kt.dtype)
    cdt = compute_dtype(torch.promote_types(kt.dtype, qt.dtype))
    kc, qc = kt.to(cdt), qt.to(cdt)
    losses = row_losses(kc, qc, None, "diag", 1.0 / tau, chunk)
    if symmetric:
        losses = 0.5 * (losses + row_losses(qc, kc, None, "diag", 1.0 / tau, chunk))
    return reduce_losses(losses, w, None, red).to(out_dtype)


def pool_by_segment(features: Tensor, segments: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``features`` rows per segment id, for the segment ids listed in sorted ``keep``.

    Rows whose segment is not in ``keep`` (or is negative) are ignored. Returns the ``(S, D)``
    means and the ``(S,)`` counts (0 where a kept segment has no row; its mean is then 0).
    """
    dt = features.dtype
    if keep.shape[0] == 0:
        empty = features.new_zeros((0, features.shape[1]))
        return empty, torch.zeros(0, dtype=dt, device=features.device)
    idx = torch.searchsorted(keep, segments).clamp(max=keep.shape[0] - 1)
    member = (segments >= 0) & (keep[idx] == segments)
    rows = member.nonzero().squeeze(1)
    target = idx[rows]
    sums = features.new_zeros((keep.shape[0], features.shape[1]))
    sums = sums.index_add(0, target, features[rows])
    counts = torch.zeros(keep.shape[0], dtype=dt, device=features.device)
    counts = counts.index_add(0, target, torch.ones_like(target, dtype=dt))
    means = sums / counts.clamp(min=1.0)[:, None]
    return means, counts


def superpixel_info_nce(
    point_features: Tensor,
    pixel_features: Tensor,
    point_superpixels: Tensor,
    pixel_superpixels: Tensor,
    temperature: float = 0.07,
    *,
    normalize: bool = False,
    symmetric: bool = False,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """SLidR's superpoint-to-superpixel InfoNCE (``loss_superpixels_average``).

    Point features are average-pooled per superpixel into superpoint features ``k_s`` (each
    paired point goes to the superpixel of its pixel), pixel features are average-pooled per
    superpixel into ``q_s``, and :func:`info_nce` is applied to the pooled pairs. As in SLidR, only
    superpixels that contain at least one paired point take part (SLidR keeps rows whose first
    pooled channel is non-zero; here the counts decide, which also keeps a superpoint whose mean
    happens to have a zero first channel), and pooled means are exact (SLidR divides by
    ``count + 1e-6``).

    Args:
        point_features: ``(N, D)`` features of the paired points (one row per point-pixel pair).
        pixel_features: ``(P, D)`` pixel features (e.g. all pixels of all images, flattened).
        point_superpixels: ``(N,)`` integer superpixel id of each pair's pixel. Ids must be unique
            across images (offset them per image, as SLidR does); negative ids are ignored.
        pixel_superpixels: ``(P,)`` integer superpixel id of each pixel (negative: ignored).
        temperature: ``tau > 0`` (SLidR: 0.07).
        normalize: L2-normalise the pooled features before the loss (SLidR does not).
        symmetric, reduction, chunk_size: as in :func:`info_nce`, over superpixels.

    Returns:
        The loss in the dtype of ``point_features`` (float32 for half/bfloat16 inputs, as
        :func:`info_nce`); 0 (connected to the graph) when no superpixel has both points and
        pixels.
    """
    pts = check_features("point_features", point_features)
    pix = check_features("pixel_features", pixel_features)
    if pts.shape[1] != pix.shape[1]:
        raise ValueError(
            "point_features and pixel_features must have the same feature size D, got "
            f"point_features {tuple(pts.shape)} and pixel_features {tuple(pix.shape)}"
        )
    if pts.device != pix.device:
        raise ValueError(
            f"point_features and pixel_features must be on the same device, got {pts.device} "
            f"and {pix.device}"
        )
    psp = check_labels("point_superpixels", point_superpixels, pts.shape[0], "N")
    xsp = check_labels("pixel_superpixels", pixel_superpixels, pix.shape[0], "P")
    check_temperature(temperature)
    check_reduction(reduction)
    check_chunk_size(chunk_size)
    out_dtype = compute_dtype(pts.dtype)
    cdt = compute_dtype(torch.promote_types(pts.dtype, pix.dtype))
    psp64 = psp.to(device=pts.device, dtype=torch.int64)
    xsp64 = xsp.to(device=pts.device, dtype=torch.int64)

    candidates = torch.unique(psp64[psp64 >= 0])  # sorted superpixels that hold points
    k_pool, k_count = pool_by_segment(pts.to(cdt), psp64, candidates)
    q_pool, q_count = pool_by_segment(pix.to(cdt), xsp64, candidates)
    both = (k_count > 0) & (q_count > 0)
    k_pool, q_pool = k_pool[both], q_pool[both]
    if k_pool.shape[0] == 0:
        zero = graph_zero(pts, pix)
        if reduction == "none":
            return zero.reshape(1)[:0].to(out_dtype)
        return zero.to(out_dtype)
    if normalize:
        k_pool = torch.nn.functional.normalize(k_pool, dim=1)
        q_pool = torch.nn.functional.normalize(q_pool, dim=1)
    return info_nce(
        k_pool,
        q_pool,
        temperature,
        symmetric=symmetric,
        reduction=reduction,
        chunk_size=chunk_size,
    ).to(out_dtype)
