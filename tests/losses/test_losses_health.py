"""Chance levels (vs the losses evaluated on equal logits), effective rank, vMF freeze guard."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from olivine_losses import (
    VMFClassPrior,
    direction_cosines,
    effective_rank,
    info_nce,
    info_nce_chance,
    most_collinear_pair,
    semantic_contrastive,
    semantic_contrastive_chance,
    superpixel_chance,
    superpixel_info_nce,
)


def constant_features(n: int, d: int = 8) -> torch.Tensor:
    """Every row the same unit vector: every logit of a row is equal (the chance situation)."""
    return F.normalize(torch.ones(n, d, dtype=torch.float64), dim=1)


def test_info_nce_chance_is_the_loss_of_equal_logits() -> None:
    k = constant_features(37)
    assert info_nce(k, k.clone()).item() == pytest.approx(info_nce_chance(37), abs=1e-12)
    assert info_nce_chance(1024) == pytest.approx(6.931471805599453)
    with pytest.raises(ValueError, match="num_candidates"):
        info_nce_chance(0)


@pytest.mark.parametrize("variant", ["sum_in_log", "mean_log_prob"])
@pytest.mark.parametrize("ignore_index", [None, 2])
def test_semantic_chance_is_the_loss_of_equal_logits(
    variant: str, ignore_index: int | None
) -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (64,), generator=g)
    k = constant_features(64)
    loss = semantic_contrastive(k, k.clone(), labels, variant=variant, ignore_index=ignore_index)
    chance = semantic_contrastive_chance(labels, ignore_index=ignore_index, variant=variant)
    assert loss.item() == pytest.approx(chance, abs=1e-12)
    # a label-aware chance is below log M for the sum-in-log form (positives are summed)
    if variant == "sum_in_log":
        assert chance < math.log(64)


def test_semantic_chance_edge_cases() -> None:
    assert semantic_contrastive_chance(torch.full((5,), 3), ignore_index=3) == 0.0
    assert semantic_contrastive_chance(torch.zeros(8, dtype=torch.int64)) == 0.0  # one class
    with pytest.raises(TypeError, match="integer dtype"):
        semantic_contrastive_chance(torch.zeros(4))
    with pytest.raises(ValueError, match="variant"):
        semantic_contrastive_chance(torch.zeros(4, dtype=torch.int64), variant="x")


def test_superpixel_chance_is_the_loss_of_equal_logits() -> None:
    seg = torch.tensor([0, 0, 1, 4, 4, 4, 7, -1])
    k = constant_features(8)
    loss = superpixel_info_nce(k, k.clone(), seg, seg)
    assert superpixel_chance(seg, seg) == pytest.approx(math.log(4))
    assert loss.item() == pytest.approx(superpixel_chance(seg, seg), abs=1e-12)
    # superpixels without pixels do not take part
    assert superpixel_chance(seg, torch.tensor([0, 1])) == pytest.approx(math.log(2))
    assert superpixel_chance(torch.tensor([-1]), torch.tensor([-1])) == 0.0


def test_effective_rank_bounds_and_collapse() -> None:
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(4000, 16, generator=g)
    assert 15.0 < effective_rank(iso) <= 16.0
    one_direction = torch.randn(500, 1, generator=g) @ torch.randn(1, 16, generator=g)
    assert effective_rank(one_direction) == pytest.approx(1.0, abs=1e-4)  # float32 rounding
    two = torch.zeros(100, 16)
    two[:50, 0] = 1.0
    two[50:, 1] = 1.0
    assert effective_rank(two) == pytest.approx(2.0)
    assert effective_rank(torch.zeros(3, 4)) == 0.0
    assert effective_rank(torch.zeros(0, 4)) == 0.0
    assert effective_rank(iso.half()) == pytest.approx(effective_rank(iso), rel=1e-2)
    with pytest.raises(ValueError, match="finite"):
        effective_rank(torch.tensor([[float("nan"), 1.0]]))


def test_direction_cosines() -> None:
    eye = torch.eye(4, 8)
    assert direction_cosines(eye) == (0.0, 0.0)
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 0.0], [-1.0, 0.0]])
    mean, top = direction_cosines(mu)  # the zero row is left out
    c = 1 / math.sqrt(1.01)
    assert mean == pytest.approx((c - 1 - c) / 3)
    assert top == pytest.approx(c)
    assert math.isnan(direction_cosines(mu, torch.tensor([True, False, False, False]))[0])


def test_most_collinear_pair_names_the_pair() -> None:
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.9, 0.1], [-1.0, 0.0]])
    a, b, c = most_collinear_pair(mu)  # the zero row (2) is left out
    assert (a, b) == (0, 3)
    assert c == pytest.approx(0.9 / math.hypot(0.9, 0.1))
    # brute force over random directions: the same pair as the full cosine matrix gives
    g = torch.Generator().manual_seed(0)
    m = torch.randn(7, 5, generator=g)
    u = F.normalize(m, dim=1)
    cos = (u @ u.T).fill_diagonal_(-2)
    i, j = divmod(int(cos.argmax()), 7)
    assert most_collinear_pair(m)[:2] == (min(i, j), max(i, j))
    valid = torch.tensor([True, True, False, False, False, False, False])
    assert most_collinear_pair(m, valid)[:2] == (0, 1)
    assert most_collinear_pair(m, torch.zeros(7, dtype=torch.bool))[:2] == (-1, -1)


def clustered(n_per: int, directions: torch.Tensor, noise: float, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    k, d = directions.shape
    z = directions.repeat_interleave(n_per, 0) + noise * torch.randn(k * n_per, d, generator=g)
    return F.normalize(z, dim=1).double(), torch.arange(k).repeat_interleave(n_per)


def test_freeze_guard_waits_for_separated_directions() -> None:
    d = 16
    base = F.normalize(torch.ones(1, d), dim=1)
    apart = torch.eye(3, d)
    collinear = base + 0.05 * apart  # three nearly identical class directions
    guarded = VMFClassPrior(3, d, decay=0.5, warmup_steps=2, freeze_max_cosine=0.5)
    plain = VMFClassPrior(3, d, decay=0.5, warmup_steps=2)
    for step in range(3):
        z, y = clustered(20, collinear, 0.01, step)
        guarded(z, y)
        plain(z, y)
    assert plain.frozen and int(plain.frozen_at) == 2
    stats = plain.direction_stats()
    assert stats["mu_cos_mean"] > 0.99 and stats["observed"] == 3.0
    assert not guarded.frozen and int(guarded.num_steps) == 3  # still warming up, loss 0
    z, y = clustered(20, collinear, 0.01, 9)
    assert guarded(z, y).item() == 0.0
    # the classes separate: the guard lets the prior freeze as soon as the mean cosine is low
    for step in range(10):
        z, y = clustered(20, apart, 0.01, 10 + step)
        guarded(z, y)
        if guarded.frozen:
            break
    assert guarded.frozen
    assert guarded.direction_stats()["mu_cos_mean"] <= 0.5
    frozen_mu = guarded.mu.clone()
    guarded(z, y)
    assert torch.equal(guarded.mu, frozen_mu)  # frozen for good
    with pytest.raises(ValueError, match="freeze_max_cosine"):
        VMFClassPrior(3, d, freeze_max_cosine=1.5)


def test_old_checkpoints_without_frozen_at_load() -> None:
    prior = VMFClassPrior(2, 4, warmup_steps=2)
    z, y = clustered(5, torch.eye(2, 4), 0.1, 0)
    for _ in range(3):
        prior.update(z, y)
    state = {k: v for k, v in prior.state_dict().items() if k != "frozen_at"}
    clone = VMFClassPrior(2, 4, warmup_steps=2)
    clone.load_state_dict(state)
    assert clone.frozen and int(clone.frozen_at) == 2
    early = VMFClassPrior(2, 4, warmup_steps=10)
    early.load_state_dict(state)
    assert not early.frozen
