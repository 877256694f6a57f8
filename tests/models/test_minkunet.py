"""MinkUNet: real-sweep forward/backward, layout arithmetic, row order, errors.

The models are built with ``backend="auto"``: spconv where it is installed, the PyTorch-only
backend in the no_spconv session, so the same checks cover both.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from olivine_models import create_point_encoder, list_point_encoders
from olivine_models.point.minkunet import MINKUNET_CONFIGS


def _subset(sweep, n: int = 3000):  # type: ignore[no-untyped-def]
    """The first n voxels (a few thousand real voxels keep the order tests fast)."""
    return sweep.coords[:n].clone(), sweep.feats[:n].clone()


def expected_res16unet_params(
    layers: tuple[int, ...], planes: tuple[int, ...], init_dim: int, in_channels: int, k: int = 3
) -> int:
    """Parameter count of MinkowskiEngine's Res16UNet (without the final 1x1), from its layout.

    conv0p1s1: k^3 conv in->init + BN; four (2^3 conv stride 2 + BN) + BasicBlocks stages; four
    (2^3 transposed conv + BN), concat with the encoder skip, BasicBlocks. A BasicBlock is two
    k^3 convs + 2 BN, plus a 1x1 conv + BN shortcut when its width changes. BN = 2 parameters
    per channel; all convs without bias.
    """
    kv = k**3

    def bn(c: int) -> int:
        return 2 * c

    def block(inp: int, out: int) -> int:
        n = inp * out * kv + bn(out) + out * out * kv + bn(out)
        return n + (inp * out + bn(out) if inp != out else 0)

    total = in_channels * init_dim * kv + bn(init_dim)
    width = init_dim
    widths_at_level = [init_dim]
    for level in range(4):
        total += width * width * 8 + bn(width)
        for _ in range(layers[level]):
            total += block(width, planes[level])
            width = planes[level]
        widths_at_level.append(width)
    for j in range(4):
        out = planes[4 + j]
        total += width * out * 8 + bn(out)
        width = out + widths_at_level[3 - j]
        for _ in range(layers[4 + j]):
            total += block(width, out)
            width = out
    return total


def test_registry_lists_all_variants() -> None:
    assert list_point_encoders() == [
        "minkunet14",
        "minkunet18",
        "minkunet34c",
        "minkunet_tiny",
        "voxelnet",
    ]


def test_34c_layout_and_parameter_count() -> None:
    model = create_point_encoder("minkunet34c", in_channels=1)
    cfg = MINKUNET_CONFIGS["minkunet34c"]
    assert cfg.layers == (2, 3, 4, 6, 2, 2, 2, 2)
    assert cfg.planes == (32, 64, 128, 256, 256, 128, 96, 96)
    assert cfg.init_dim == 32 and cfg.kernel_size == 3
    assert model.out_channels == 96
    count = sum(p.numel() for p in model.parameters())
    expected = expected_res16unet_params(cfg.layers, cfg.planes, 32, 1)
    print(f"MinkUNet34C parameters: {count:,} (layout arithmetic: {expected:,})")
    assert count == expected
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(m.momentum == 0.05 for m in bns)


@pytest.mark.parametrize("name", ["minkunet18", "minkunet14", "minkunet_tiny"])
def test_small_variants_parameter_count(name: str) -> None:
    model = create_point_encoder(name, in_channels=2)
    cfg = MINKUNET_CONFIGS[name]
    expected = expected_res16unet_params(cfg.layers, cfg.planes, cfg.init_dim, 2)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.out_channels == cfg.planes[7]


def test_forward_backward_on_real_sweep(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    sweep = nuscenes_sweep
    assert sweep.points.shape == (34688, 5)
    model = create_point_encoder("minkunet_tiny", in_channels=1)
    feats = sweep.feats.clone().requires_grad_(True)
    out = model(sweep.coords, feats, sweep.spatial_shape, 1)
    assert out.shape == (sweep.coords.shape[0], model.out_channels)
    assert torch.isfinite(out).all()
    loss = (out**2).mean() + out[:, 0].sum() * 1e-3
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # running statistics were updated with the torch-convention momentum 0.05
    assert not torch.allclose(model.bn0.running_mean, torch.zeros_like(model.bn0.running_mean))


def test_output_rows_follow_input_order(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    coords, feats = _subset(nuscenes_sweep)
    model = create_point_encoder("minkunet_tiny").eval()
    perm = torch.randperm(coords.shape[0])
    with torch.no_grad():
        a = model(coords, feats, nuscenes_sweep.spatial_shape, 1)
        b = model(coords[perm], feats[perm], nuscenes_sweep.spatial_shape, 1)
    torch.testing.assert_close(b, a[perm], rtol=1e-5, atol=1e-5)


def test_batch_elements_are_independent(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    coords, feats = _subset(nuscenes_sweep)
    model = create_point_encoder("minkunet_tiny").eval()
    second = coords.clone()
    second[:, 0] = 1
    other_feats = torch.rand_like(feats) * 255
    with torch.no_grad():
        single = model(coords, feats, nuscenes_sweep.spatial_shape, 1)
        both = model(
            torch.cat([coords, second]),
            torch.cat([feats, other_feats]),
            nuscenes_sweep.spatial_shape,
            2,
        )
    torch.testing.assert_close(both[: coords.shape[0]], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(both[coords.shape[0] :], single)


@pytest.mark.skipif(
    importlib.util.find_spec("spconv") is None,
    reason="spconv is not installed: the CUDA algorithm switch is spconv's",
)
def test_state_dict_is_algorithm_independent() -> None:
    """The CUDA algorithm uses the same parameter names/shapes; CPU forward switches back."""
    model = create_point_encoder("minkunet_tiny")
    cpu_state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model._set_algo(torch.device("cuda"))  # no tensor is moved; only the algorithm changes
    convs = [m for m in model.modules() if hasattr(m, "algo")]
    assert convs and all(m.algo.name == "MaskImplicitGemm" for m in convs)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == cpu_state
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1], [0, 5, 6, 7]], dtype=torch.int32)
    out = model.eval()(coords, torch.ones(3, 1), (8, 8, 8), 1)
    assert out.shape == (3, model.out_channels)
    assert all(m.algo.name == "Native" for m in convs)


def test_coordinates_near_odd_grid_border_are_kept() -> None:
    """Spatial shapes that are not multiples of 16 are padded, so border sites survive."""
    model = create_point_encoder("minkunet_tiny").eval()
    coords = torch.tensor([[0, 0, 0, 0], [0, 16, 4, 2], [0, 16, 4, 1]], dtype=torch.int32)
    with torch.no_grad():
        out = model(coords, torch.ones(3, 1), (17, 5, 3), 1)
    assert out.shape == (3, 16) and torch.isfinite(out).all()


def test_bad_inputs_raise_clear_errors() -> None:
    model = create_point_encoder("minkunet_tiny", in_channels=1)
    coords = torch.tensor([[0, 1, 2, 3], [0, 3, 2, 1]], dtype=torch.int32)
    feats = torch.ones(2, 1)
    with pytest.raises(TypeError, match="int32"):
        model(coords.long(), feats, (8, 8, 8), 1)
    with pytest.raises(ValueError, match=r"\(V, 4\)"):
        model(coords[:, :3], feats, (8, 8, 8), 1)
    with pytest.raises(ValueError, match="1 input feature channel"):
        model(coords, torch.ones(2, 3), (8, 8, 8), 1)
    with pytest.raises(ValueError, match="rows like coords"):
        model(coords, torch.ones(3, 1), (8, 8, 8), 1)
    with pytest.raises(ValueError, match="out of range"):
        model(coords, feats, (3, 8, 8), 1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        model(coords, feats, (8, 8, 8), 0)
    bad_batch = coords.clone()
    bad_batch[1, 0] = 1
    with pytest.raises(ValueError, match="batch_size"):
        model(bad_batch, feats, (8, 8, 8), 1)
    with pytest.raises(ValueError, match="non-negative"):
        model(coords - 2, feats, (8, 8, 8), 1)
    with pytest.raises(ValueError, match="duplicate"):
        model(torch.cat([coords, coords[:1]]), torch.ones(3, 1), (8, 8, 8), 1)
    with pytest.raises(ValueError, match="spatial_shape"):
        model(coords, feats, (8, 8), 1)
    with pytest.raises(KeyError, match="minkunet34c"):
        create_point_encoder("minkunet50")
    with pytest.raises(TypeError, match="unknown keyword"):
        create_point_encoder("minkunet_tiny", dropout=0.1)


def test_model_can_be_deep_copied_and_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """EMA teachers and checkpointing copy/pickle whole models."""
    import copy

    model = create_point_encoder("minkunet_tiny").eval()
    twin = copy.deepcopy(model)
    torch.save(model, tmp_path / "model.pt")
    coords = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 1]], dtype=torch.int32)
    with torch.no_grad():
        torch.testing.assert_close(
            twin(coords, torch.ones(2, 1), (4, 4, 4), 1),
            model(coords, torch.ones(2, 1), (4, 4, 4), 1),
        )
