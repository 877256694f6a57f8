"""Frozen 2D teachers: strides, channels, frozenness, dilation, weight loading, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from olivine_models import ImageHead, create_image_encoder, list_image_encoders
from olivine_models.image import dilate_resnet

CROP = (224, 416)

# name -> (stride, channels); the contract of the registry.
DOCUMENTED = {
    "resnet50_dilated": (4, 2048),
    "resnet50": (32, 2048),
    "resnet18_dilated": (4, 512),
    "dino_vits16": (16, 384),
    "dino_vitb16": (16, 768),
    "dino_vits8": (8, 384),
    "dino_vitb8": (8, 768),
    "dinov2_vits14": (14, 384),
    "dinov2_vitb14": (14, 768),
    "efficientnet_lite0": (8, 472),
}
# Checked on the full 224x416 crop in the default run; the others are costly on CPU and are
# checked on a 1/4-scale crop (same code path) -- ViT-B builds are marked slow.
FULL_CROP = ["resnet18_dilated", "resnet50", "dino_vits16", "dinov2_vits14", "efficientnet_lite0"]
SMALL_CROP = ["resnet50_dilated", "dino_vits8"]
SLOW = ["dino_vitb16", "dino_vitb8", "dinov2_vitb14"]


def test_registry_is_complete() -> None:
    assert sorted(DOCUMENTED) == list_image_encoders()


def _check_teacher(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    encoder = create_image_encoder(name)
    stride, channels = DOCUMENTED[name]
    assert (encoder.stride, encoder.out_channels) == (stride, channels)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not any(m.training for m in encoder.modules())
    images = torch.rand(1, 3, *size)
    feats = encoder(images)
    expected = (1, channels, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert tuple(feats.shape) == expected
    assert torch.isfinite(feats).all() and not feats.requires_grad


@pytest.mark.parametrize("name", FULL_CROP)
def test_teacher_on_full_crop(name: str) -> None:
    _check_teacher(name, CROP)


@pytest.mark.parametrize("name", SMALL_CROP)
def test_teacher_on_small_crop(name: str) -> None:
    _check_teacher(name, (CROP[0] // 4, CROP[1] // 4))


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_vit_b_teachers(name: str) -> None:
    _check_teacher(name, (CROP[0] // 4, CROP[1] // 4))


@pytest.mark.slow
def test_resnet50_dilated_on_full_crop_feeds_image_head() -> None:
    encoder = create_image_encoder("resnet50_dilated")
    feats = encoder(torch.rand(1, 3, *CROP))
    assert feats.shape == (1, 2048, 56, 104)
    out = ImageHead(2048, 64, upsample=encoder.stride)(feats)
    assert out.shape == (1, 64, *CROP)


def test_dilated_resnet50_matches_torchvision_dilation() -> None:
    """Our post-hoc dilation == torchvision's replace_stride_with_dilation=[True]*3 (stride 4)."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(
        weights=None, replace_stride_with_dilation=[True, True, True]
    ).eval()
    ours = torchvision.models.resnet50(weights=None).eval()
    ours.load_state_dict(reference.state_dict())
    dilate_resnet(ours)
    for (name, a), b in zip(reference.named_modules(), ours.modules()):
        if isinstance(a, torch.nn.Conv2d):
            assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding), name
    x = torch.randn(1, 3, 40, 56)

    def trunk(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    with torch.no_grad():
        ref = trunk(reference, x)
        got = trunk(ours, x)
    assert ref.shape == (1, 2048, 10, 14)  # stride 4
    torch.testing.assert_close(got, ref)


def test_imagenet_normalisation_inside(tmp_path: Path) -> None:
    encoder = create_image_encoder("resnet18_dilated")
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = encoder.forward_features((x - mean) / std)
    torch.testing.assert_close(encoder(x), expected)


def _random_resnet50_state() -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(123)
    model = torchvision.models.resnet50(weights=None)
    for m in model.modules():  # make BN buffers non-trivial so the round trip is informative
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    return model.state_dict()


def test_moco_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _random_resnet50_state()
    trunk_state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    moco: dict[str, torch.Tensor] = {}
    for key, value in trunk_state.items():
        moco[f"module.encoder_q.{key}"] = value
        moco[f"module.encoder_k.{key}"] = torch.zeros_like(value)
    # MoCo-v2 MLP projection head and queue: must be dropped
    moco["module.encoder_q.fc.0.weight"] = torch.randn(2048, 2048)
    moco["module.encoder_q.fc.0.bias"] = torch.randn(2048)
    moco["module.encoder_q.fc.2.weight"] = torch.randn(128, 2048)
    moco["module.encoder_q.fc.2.bias"] = torch.randn(128)
    moco["module.queue"] = torch.randn(128, 65536 // 64)
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": moco}, path)

    encoder = create_image_encoder("resnet50", weights=path)
    loaded = encoder.trunk.state_dict()
    for key, value in trunk_state.items():
        assert torch.equal(loaded[key], value), key
    assert not any(p.requires_grad for p in encoder.parameters())
    # the dilated variant takes the same checkpoint (dilation does not change weights)
    dilated = create_image_encoder("resnet50_dilated", weights=path)
    assert torch.equal(dilated.trunk.layer4[2].conv3.weight, trunk_state["layer4.2.conv3.weight"])


def test_plain_resnet_state_dict_and_bad_weights(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(5)
    r18 = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(r18.state_dict(), path)
    encoder = create_image_encoder("resnet18_dilated", weights=path)
    assert torch.equal(encoder.trunk.conv1.weight, r18.conv1.weight)
    with pytest.raises(ValueError, match="do not fit a torchvision ResNet"):
        create_image_encoder("resnet50", weights=path)


def test_vit_state_dict_round_trip(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(7)
    source = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(source.state_dict(), path)
    encoder = create_image_encoder("dino_vits16", weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(encoder.vit.state_dict()[key], value), key


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="resnet50_dilated"):
        create_image_encoder("resnet101")
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_image_encoder("resnet18_dilated", weights=missing)
    with pytest.raises(ValueError, match="not both"):
        create_image_encoder("resnet18_dilated", weights=missing, pretrained=True)
    encoder = create_image_encoder("resnet18_dilated")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="float images"):
        encoder(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
