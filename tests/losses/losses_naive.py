"""Naive, obviously-correct reference implementations for the olivine-losses tests.

Per-row Python loops in float64 over plain torch ops, written straight from the equations of the
method digest (§2), plus the reference code's own formulation (materialised ``exp`` matrix).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b))


def info_nce_rows(k: Tensor, q: Tensor, tau: float) -> Tensor:
    """l_i = -log(exp(k_i.q_i/tau) / sum_j exp(k_i.q_j/tau)), one row at a time."""
    out = []
    kl, ql = k.tolist(), q.tolist()
    for i in range(len(kl)):
        logits = [_dot(kl[i], ql[j]) / tau for j in range(len(ql))]
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        out.append(lse - logits[i])
    return torch.tensor(out, dtype=torch.float64)


def semantic_rows(k: Tensor, q: Tensor, labels: Tensor, tau: float, variant: str) -> Tensor:
    """L_sup per anchor: 'sum_in_log' = -log sum_{A(i)} p_ij, 'mean_log_prob' = -mean log p_ij."""
    out = []
    lab = labels.tolist()
    kl, ql = k.tolist(), q.tolist()
    for i in range(len(kl)):
        logits = [_dot(kl[i], ql[j]) / tau for j in range(len(ql))]
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        pos = [j for j in range(len(lab)) if lab[j] == lab[i]]
        assert i in pos
        if variant == "sum_in_log":
            ptop = max(logits[j] for j in pos)
            lpos = ptop + math.log(sum(math.exp(logits[j] - ptop) for j in pos))
            out.append(lse - lpos)
        else:
            out.append(lse - sum(logits[j] for j in pos) / len(pos))
    return torch.tensor(out, dtype=torch.float64)


def reference_supcon(k: Tensor, q: Tensor, labels: Tensor, tau: float = 0.07) -> Tensor:
    """The reference code's formulation: materialised exp matrix, sum of positives in the log."""
    sim = torch.exp(k @ q.T / tau)
    mask = (labels[:, None] == labels[None, :]).to(sim.dtype)
    return -torch.log((sim * mask).sum(1) / sim.sum(1)).mean()


def superpixel_pool_loops(
    pts: Tensor, pix: Tensor, psp: Tensor, xsp: Tensor
) -> tuple[Tensor, Tensor]:
    """Superpoint / superpixel means by explicit loops over the superpixel ids."""
    ks, qs = [], []
    for s in sorted(set(psp.tolist())):
        if s < 0:
            continue
        prow = [i for i, v in enumerate(psp.tolist()) if v == s]
        xrow = [i for i, v in enumerate(xsp.tolist()) if v == s]
        if not prow or not xrow:
            continue
        ks.append(sum(pts[i] for i in prow) / len(prow))
        qs.append(sum(pix[i] for i in xrow) / len(xrow))
    return torch.stack(ks), torch.stack(qs)


def slidr_superpixel_loss(
    pts: Tensor, pix: Tensor, psp: Tensor, xsp: Tensor, num_sp: int, tau: float = 0.07
) -> Tensor:
    """SLidR's ``loss_superpixels_average``: one-hot pooling, ``+1e-6``, first-channel mask."""
    n, p = pts.shape[0], pix.shape[0]
    one_hot_p = torch.sparse_coo_tensor(
        torch.stack((psp, torch.arange(n))),
        torch.ones(n, dtype=pts.dtype),
        (num_sp, n),
        check_invariants=True,
    )
    one_hot_i = torch.sparse_coo_tensor(
        torch.stack((xsp, torch.arange(p))),
        torch.ones(p, dtype=pix.dtype),
        (num_sp, p),
        check_invariants=True,
    )
    k = one_hot_p @ pts
    k = k / (torch.sparse.sum(one_hot_p, 1).to_dense()[:, None] + 1e-6)
    q = one_hot_i @ pix
    q = q / (torch.sparse.sum(one_hot_i, 1).to_dense()[:, None] + 1e-6)
    mask = torch.where(k[:, 0] != 0)
    k, q = k[mask], q[mask]
    logits = k @ q.T / tau
    return torch.nn.functional.cross_entropy(logits, torch.arange(k.shape[0]))


def vmf_nll_loops(z: Tensor, labels: Tensor, mu: Tensor, log_c: Tensor, kappa: Tensor) -> Tensor:
    """Class-averaged vMF NLL with explicit loops; ``log_c`` is the (K,) log normaliser."""
    terms = []
    for c in sorted(set(labels.tolist())):
        rows = [i for i, v in enumerate(labels.tolist()) if v == c]
        mean_dot = sum(float(mu[c] @ z[i]) for i in rows) / len(rows)
        terms.append(-float(log_c[c]) - float(kappa[c]) * mean_dot)
    return torch.tensor(sum(terms) / len(terms), dtype=torch.float64)
