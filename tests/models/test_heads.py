"""Projection heads, classifier and shape-matching checkpoint loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from olivine_models import (
    Classifier,
    ImageHead,
    PointHead,
    SegmentationHead,
    load_matching_state,
)


def test_point_head_unit_norm_and_zero_safe() -> None:
    torch.manual_seed(0)
    head = PointHead(96, 64)
    out = head(torch.randn(50, 96))
    assert out.shape == (50, 64)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(50))
    # a zero output row (zero input, zero bias) stays zero, without NaN in values or gradients
    with torch.no_grad():
        head.linear.bias.zero_()
    x = torch.zeros(3, 96, requires_grad=True)
    y = head(x)
    assert torch.equal(y, torch.zeros(3, 64))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_point_head_without_normalisation_is_linear() -> None:
    torch.manual_seed(0)
    head = PointHead(8, 4, normalize=False)
    x = torch.randn(5, 8)
    torch.testing.assert_close(head(x), x @ head.linear.weight.T + head.linear.bias)


def test_image_head_upsamples_like_the_reference() -> None:
    torch.manual_seed(0)
    head = ImageHead(32, 64, upsample=4)
    x = torch.randn(2, 32, 14, 26)
    out = head(x)
    assert out.shape == (2, 64, 56, 104)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 56, 104))
    # reference: Conv2d(1x1) -> Upsample(scale_factor=4, bilinear, align_corners=True) -> normalise
    ref = nn.Sequential(
        head.conv, nn.Upsample(scale_factor=4, mode="bilinear", align_corners=True)
    )(x)
    torch.testing.assert_close(out, F.normalize(ref, dim=1))
    # ViT-style padded features: crop back to the crop size
    cropped = head(x, output_size=(50, 100))
    torch.testing.assert_close(cropped, out[:, :, :50, :100])
    with pytest.raises(ValueError, match="within the upsampled size"):
        head(x, output_size=(57, 104))
    with pytest.raises(ValueError, match="32 channels"):
        head(torch.randn(1, 31, 4, 4))


def test_image_head_zero_input_no_nan() -> None:
    head = ImageHead(8, 4, upsample=2)
    with torch.no_grad():
        head.conv.bias.zero_()
    out = head(torch.zeros(1, 8, 3, 3))
    assert out.shape == (1, 4, 6, 6) and torch.equal(out, torch.zeros_like(out))


def test_segmentation_head() -> None:
    head = SegmentationHead(96, 17)
    assert Classifier is SegmentationHead
    assert head(torch.randn(7, 96)).shape == (7, 17)
    with pytest.raises(ValueError, match="96 channels"):
        head(torch.randn(7, 64))
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationHead(96, 1)


class _Net(nn.Module):
    def __init__(self, out: int) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.final = nn.Linear(8, out)


def test_load_matching_state_reports_each_tensor() -> None:
    torch.manual_seed(0)
    source = _Net(out=64)  # pretraining head (64-d) ...
    target = _Net(out=17)  # ... vs downstream classifier (17 classes)
    before_final = target.final.weight.clone()
    ckpt = {f"model_points.{k}": v for k, v in source.state_dict().items()}
    ckpt["model_points.vmf_mu"] = torch.zeros(17, 64)
    report = load_matching_state(target, ckpt)
    assert set(report.loaded) == {
        "backbone.weight",
        "backbone.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "bn.num_batches_tracked",
    }
    reasons = dict(report.skipped)
    assert reasons["model_points.vmf_mu"] == "not in model"
    assert reasons["model_points.final.weight"].startswith("shape mismatch")
    assert "(64, 8)" in reasons["model_points.final.weight"]
    assert "(17, 8)" in reasons["model_points.final.weight"]
    assert set(report.missing) == {"final.weight", "final.bias"}
    torch.testing.assert_close(target.backbone.weight, source.backbone.weight)
    torch.testing.assert_close(target.final.weight, before_final)
    text = report.summary()
    assert "loaded 7 tensors" in text and "vmf_mu" in text and "final.bias" in text
    with pytest.raises(TypeError, match="mapping"):
        load_matching_state(target, [1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("channels", "upsample", "grid", "crop"),
    [
        (472, 8, (4, 6), None),
        (24, 4, (5, 7), (17, 25)),
        (6, 1, (9, 11), None),
        (8, 3, (1, 5), None),
    ],
)
@pytest.mark.parametrize("project_first", [None, True, False])
def test_image_head_sample_equals_the_full_map_gathered(
    channels: int,
    upsample: int,
    grid: tuple[int, int],
    crop: tuple[int, int] | None,
    project_first: bool | None,
) -> None:
    torch.manual_seed(0)
    head = ImageHead(channels, 16, upsample=upsample)
    x = torch.randn(3, channels, *grid)
    height, width = crop or (grid[0] * upsample, grid[1] * upsample)
    px = torch.stack(
        [
            torch.randint(0, 3, (200,)),
            torch.randint(0, height, (200,)),
            torch.randint(0, width, (200,)),
        ],
        1,
    )
    px[0] = torch.tensor([2, height - 1, width - 1])  # the last row and column are reached
    full = head(x, output_size=crop)[px[:, 0], :, px[:, 1], px[:, 2]]
    sampled = head.sample(x, px, output_size=crop, project_first=project_first)
    assert sampled.shape == (200, 16)
    torch.testing.assert_close(sampled, full, rtol=1e-5, atol=1e-6)
    # gradients reach the head's parameters the same way
    g_full = torch.autograd.grad(full.square().sum(), list(head.parameters()))
    g_smp = torch.autograd.grad(
        head.sample(x, px, output_size=crop, project_first=project_first).square().sum(),
        list(head.parameters()),
    )
    for a, b in zip(g_smp, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_image_head_sample_rejects_bad_pixels() -> None:
    head = ImageHead(4, 8, upsample=2)
    x = torch.randn(2, 4, 3, 5)
    with pytest.raises(ValueError, match=r"pixels must be \(P, 3\)"):
        head.sample(x, torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="must be integers"):
        head.sample(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="out of range.*row < 6"):
        head.sample(x, torch.tensor([[0, 6, 0]]))
    with pytest.raises(ValueError, match="out of range.*image < 2"):
        head.sample(x, torch.tensor([[2, 0, 0]]))
    with pytest.raises(ValueError, match="out of range.*col < 7"):
        head.sample(x, torch.tensor([[0, 0, 7]]), output_size=(6, 7))
    assert head.sample(x, torch.zeros(0, 3, dtype=torch.long)).shape == (0, 8)
