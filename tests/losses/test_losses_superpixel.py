"""SLidR's superpixel-pooled InfoNCE."""

from __future__ import annotations

import pytest
import torch
from losses_naive import info_nce_rows, slidr_superpixel_loss, superpixel_pool_loops

from olivine_losses import SuperpixelInfoNCELoss, pool_by_segment, superpixel_info_nce


def make(n: int = 60, p: int = 200, d: int = 6, num_sp: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pts = torch.randn(n, d, generator=g, dtype=torch.float64)
    pix = torch.randn(p, d, generator=g, dtype=torch.float64)
    psp = torch.randint(0, num_sp, (n,), generator=g)
    xsp = torch.randint(0, num_sp, (p,), generator=g)
    return pts, pix, psp, xsp


def test_matches_pooling_loops_then_info_nce() -> None:
    pts, pix, psp, xsp = make()
    psp[psp == 3] = 4  # superpixel 3 has pixels but no points: left out
    xsp[xsp == 7] = 8  # superpixel 7 has points but no pixels: left out
    psp[:3] = -1  # unpaired / ignored
    k, q = superpixel_pool_loops(pts, pix, psp, xsp)
    expected = info_nce_rows(k, q, 0.07).mean()
    torch.testing.assert_close(superpixel_info_nce(pts, pix, psp, xsp), expected)


def test_matches_slidr_formulation() -> None:
    pts, pix, psp, xsp = make()
    ours = superpixel_info_nce(pts, pix, psp, xsp)
    theirs = slidr_superpixel_loss(pts, pix, psp, xsp, num_sp=12)
    # SLidR divides by count + 1e-6: equal up to that
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_ids_need_not_be_contiguous_and_are_permutation_invariant() -> None:
    pts, pix, psp, xsp = make()
    base = superpixel_info_nce(pts, pix, psp, xsp)
    torch.testing.assert_close(
        superpixel_info_nce(pts, pix, psp * 1000 + 17, xsp * 1000 + 17), base
    )
    perm_n = torch.randperm(60, generator=torch.Generator().manual_seed(1))
    perm_p = torch.randperm(200, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        superpixel_info_nce(pts[perm_n], pix[perm_p], psp[perm_n], xsp[perm_p]), base
    )


def test_normalize_symmetric_chunked_and_gradients() -> None:
    pts, pix, psp, xsp = make()
    k, q = superpixel_pool_loops(pts, pix, psp, xsp)
    kn, qn = torch.nn.functional.normalize(k, dim=1), torch.nn.functional.normalize(q, dim=1)
    expected = 0.5 * (info_nce_rows(kn, qn, 0.1) + info_nce_rows(qn, kn, 0.1)).mean()
    out = superpixel_info_nce(pts, pix, psp, xsp, 0.1, normalize=True, symmetric=True, chunk_size=3)
    torch.testing.assert_close(out, expected)
    a, b = pts[:12].clone().requires_grad_(True), pix[:40].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x, y: superpixel_info_nce(x, y, psp[:12] % 4, xsp[:40] % 4, normalize=True), (a, b)
    )


def test_no_overlap_gives_connected_zero() -> None:
    pts, pix, _, _ = make()
    a = pts.clone().requires_grad_(True)
    out = superpixel_info_nce(
        a, pix, torch.zeros(60, dtype=torch.long), torch.ones(200, dtype=torch.long)
    )
    out.backward()
    assert out.item() == 0.0 and torch.equal(a.grad, torch.zeros_like(a))


def test_pool_by_segment() -> None:
    feats = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    seg = torch.tensor([5, 2, 5, -1, 9, 2])
    means, counts = pool_by_segment(feats, seg, torch.tensor([2, 5, 7]))
    torch.testing.assert_close(counts, torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        means, torch.tensor([[6.0, 7.0], [2.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    )


def test_module_and_errors() -> None:
    pts, pix, psp, xsp = make()
    mod = SuperpixelInfoNCELoss(temperature=0.2, normalize=True)
    torch.testing.assert_close(
        mod(pts, pix, psp, xsp), superpixel_info_nce(pts, pix, psp, xsp, 0.2, normalize=True)
    )
    with pytest.raises(ValueError, match=r"same feature size D.*\(60, 6\).*\(200, 5\)"):
        superpixel_info_nce(pts, pix[:, :5], psp, xsp)
    with pytest.raises(ValueError, match=r"point_superpixels must have shape \(N=60,\)"):
        superpixel_info_nce(pts, pix, psp[:10], xsp)
    with pytest.raises(TypeError, match=r"pixel_superpixels must have an integer dtype"):
        superpixel_info_nce(pts, pix, psp, xsp.float())
    with pytest.raises(ValueError, match=r"non-empty"):
        superpixel_info_nce(pts[:0], pix, psp[:0], xsp)
    with pytest.raises(ValueError, match="temperature"):
        superpixel_info_nce(pts, pix, psp, xsp, temperature=-1.0)
