"""GPU checks (``pytest -m gpu``; skipped without CUDA): same weights on CPU and GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from olivine_models import create_image_encoder, create_point_encoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_minkunet_cpu_and_gpu_agree(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_point_encoder("minkunet34c").eval()
    s = nuscenes_sweep
    with torch.no_grad():
        cpu = model(s.coords, s.feats, s.spatial_shape, 1)
        model.cuda()
        gpu = model(s.coords.cuda(), s.feats.cuda(), s.spatial_shape, 1).cpu()
    convs = [m for m in model.modules() if hasattr(m, "algo")]
    assert all(m.algo.name == "MaskImplicitGemm" for m in convs)
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    # training step on GPU: finite gradients
    model.train()
    out = model(s.coords.cuda(), s.feats.cuda(), s.spatial_shape, 1)
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_teacher_on_gpu_matches_cpu() -> None:
    torch.manual_seed(0)
    encoder = create_image_encoder("resnet18_dilated")
    x = torch.rand(2, 3, 64, 96)
    cpu = encoder(x)
    gpu = encoder.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)


def test_sam_box_labeler_on_gpu_fp16() -> None:
    from olivine_models.vfm import Detection, FixedBoxProvider, SamBoxLabeler, build_sam

    torch.manual_seed(0)
    sam = build_sam("tiny").cuda()
    image = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    labeler = SamBoxLabeler(sam, FixedBoxProvider([Detection((5, 5, 80, 60), 3, 0.9)]), 14, 0)
    out = labeler.label_batch([image, image])
    assert out[0].shape == (90, 160) and out[0].dtype == np.uint8
    assert set(np.unique(out[0]).tolist()) <= {0, 3}


def test_torch_backend_cpu_and_gpu_agree_and_bf16_autocast_trains(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    """The PyTorch-only backend on CUDA: same numbers as on CPU; bf16 autocast forward+backward."""
    torch.manual_seed(0)
    model = create_point_encoder("minkunet34c", backend="torch").eval()
    s = nuscenes_sweep
    with torch.no_grad():
        cpu = model(s.coords, s.feats, s.spatial_shape, 1)
        model.cuda()
        gpu = model(s.coords.cuda(), s.feats.cuda(), s.spatial_shape, 1).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    model.train()
    feats = s.feats.cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(s.coords.cuda(), feats, s.spatial_shape, 1)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    grads = [p.grad for p in model.parameters()]
    assert all(
        g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads
    )


@pytest.mark.skipif(importlib.util.find_spec("spconv") is None, reason="needs spconv")
def test_torch_backend_matches_spconv_on_gpu(nuscenes_sweep) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    ref = create_point_encoder("minkunet34c", backend="spconv").eval().cuda()
    new = create_point_encoder("minkunet34c", backend="torch").eval().cuda()
    new.load_state_dict(ref.state_dict())
    s = nuscenes_sweep
    with torch.no_grad():
        a = ref(s.coords.cuda(), s.feats.cuda(), s.spatial_shape, 1)
        b = new(s.coords.cuda(), s.feats.cuda(), s.spatial_shape, 1)
    assert float((a - b).abs().max() / a.abs().max()) < 1e-3  # TF32/implicit GEMM on both sides
