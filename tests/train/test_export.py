"""``olivine_train.export`` against the manifests of the real classes (tests/train/export_data).

The manifests were written by scripts/export_manifests.py from OpenPCDet's real
``VoxelBackBone8x`` (pinned commit) and mmdetection3d 1.4.0's real ``SparseEncoder`` and
``MinkUNetBackbone``, each loaded with OUR export of a seeded state dict by the target's own
loader. Here, without OpenPCDet or mmdetection3d installed, every export is checked against
them: names, shapes and order, the mmdetection3d state-dict metadata, and forward outputs --
OpenPCDet's real class (run from the pinned copy) and the toolkit's own MinkUNet-34C must
reproduce what the real classes computed.
"""

from __future__ import annotations

import re
from pathlib import Path

import export_support as sup
import pytest
import torch

from olivine_train.export import ExportError, export_backbone
from olivine_train.export.layouts import (
    minkunet_layout,
    mmdet3d_minkunet_shapes,
    voxelnet_shapes,
)

PCDET = sup.manifest("openpcdet_voxelnet")
SE = sup.manifest("mmdet3d_sparse_encoder")
MK = sup.manifest("mmdet3d_minkunet34c")


def _table(state: dict[str, torch.Tensor], prefix: str = "") -> list[list[object]]:
    return [[k[len(prefix) :], list(v.shape)] for k, v in state.items() if k.startswith(prefix)]


@pytest.fixture(scope="module")
def voxelnet_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    state = sup.seeded_state(voxelnet_shapes(4), PCDET["seed"])
    path = tmp_path_factory.mktemp("vx") / "backbone.pt"
    return sup.write_backbone(path, "voxelnet", state, 4), state


def test_seeded_states_match_the_manifests(voxelnet_src: tuple[Path, dict]) -> None:
    # the manifests' outputs were computed from these exact weights
    got = sup.checksums(voxelnet_src[1])
    for name, (s, s2) in PCDET["weights_checksum"].items():
        assert got[name] == pytest.approx([s, s2], rel=1e-12, abs=1e-12), name


def test_voxelnet_layout_is_openpcdets() -> None:
    assert [[k, list(v)] for k, v in voxelnet_shapes(4).items()] == PCDET["tensors"]
    assert len(PCDET["tensors"]) == 72
    assert PCDET["load"]["log"][-1] == "==> Done (loaded 72/72)" and PCDET["load"]["exact"]


def test_openpcdet_export_names_shapes(voxelnet_src: tuple[Path, dict], tmp_path: Path) -> None:
    rep = export_backbone(voxelnet_src[0], "openpcdet", tmp_path / "p.pth")
    ck = torch.load(tmp_path / "p.pth", weights_only=True)
    assert set(ck) == {"model_state", "version", "olivine_export"}
    assert _table(ck["model_state"], "backbone_3d.") == PCDET["tensors"]
    assert len(ck["model_state"]) == 72 and len(rep.mapped) == 72
    for k, v in voxelnet_src[1].items():
        assert torch.equal(ck["model_state"][f"backbone_3d.{k}"], v)
    assert "--pretrained_model" in rep.format() and "left out: nothing" in rep.format()
    assert [p.name for p in tmp_path.iterdir()] == ["p.pth"]  # no temporary file left


def test_mmdet3d_sparse_encoder_export(voxelnet_src: tuple[Path, dict], tmp_path: Path) -> None:
    export_backbone(voxelnet_src[0], "mmdet3d", tmp_path / "m.pth")
    ck = torch.load(tmp_path / "m.pth", weights_only=True)
    sd = ck["state_dict"]
    assert _table(sd, "middle_encoder.") == SE["tensors"] and len(sd) == 72
    assert sd["middle_encoder.encoder_layers.encoder_layer3.1.0.weight"] is not None
    src = voxelnet_src[1]
    back = {re.sub(r"encoder_layers\.encoder_layer(\d)", r"conv\1", k[15:]): v
            for k, v in sd.items()}  # fmt: skip
    assert all(torch.equal(back[k], v) for k, v in src.items()) and len(back) == len(src)
    _check_metadata(sd._metadata, SE["load"]["real_metadata"], list(sd))
    assert SE["load"]["exact"]


def _check_metadata(got: dict, real: dict, keys: list[str]) -> None:
    """Every module prefix of the file has the real class's version, and every module that
    owns a tensor is present: no sparse weight is permuted by mmdetection3d's loading hook.
    """
    for module, meta in got.items():
        assert real[module] == meta, module
    owners = {k.rsplit(".", 1)[0] for k in keys}
    assert owners <= set(got)
    assert {m for m in owners if got[m]["version"] == 2} == {
        m for m in owners if real[m]["version"] == 2
    }


def test_openpcdet_real_class_forward_matches_the_manifests(
    voxelnet_src: tuple[Path, dict], tmp_path: Path
) -> None:
    """OpenPCDet's VoxelBackBone8x (pinned copy) loaded from our export reproduces the manifest,
    and equals what mmdetection3d's SparseEncoder computed from our mmdet3d export.
    """
    pytest.importorskip("spconv.pytorch")
    import numpy as np

    module = sup.load_openpcdet()
    real = module.VoxelBackBone8x({}, input_channels=4, grid_size=np.array([64, 64, 40]))
    assert sup.set_native_algo(real) == PCDET["native_algo_convs"] == 12
    assert _table(real.state_dict()) == PCDET["tensors"]
    export_backbone(voxelnet_src[0], "openpcdet", tmp_path / "p.pth")
    state = torch.load(tmp_path / "p.pth", weights_only=True)["model_state"]
    real.load_state_dict({k[len("backbone_3d.") :]: v for k, v in state.items()}, strict=True)
    data = sup.outputs("openpcdet_voxelnet")
    real.eval()
    with torch.no_grad(), sup.openpcdet_globals():
        out = real({"voxel_features": data["feats"], "voxel_coords": data["coords"],
                    "batch_size": 2})["encoded_spconv_tensor"]  # fmt: skip
    dense = out.dense()
    bev = dense.reshape(dense.shape[0], -1, *dense.shape[3:])
    torch.testing.assert_close(bev, data["output"], rtol=1e-5, atol=1e-5)
    mm = sup.outputs("mmdet3d_sparse_encoder")
    torch.testing.assert_close(mm["output"], data["output"], rtol=1e-5, atol=1e-5)
    assert torch.equal(mm["coords"], data["coords"])


@pytest.fixture(scope="module")
def mink_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from olivine_models import create_point_encoder

    ours = create_point_encoder("minkunet34c", in_channels=1, backend="torch")
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    state = sup.seeded_state(shapes, MK["seed"])
    path = tmp_path_factory.mktemp("mk") / "backbone.pt"
    return sup.write_backbone(path, "minkunet34c", state, 1), state


def test_minkunet_layout_is_mmdet3ds(mink_src: tuple[Path, dict]) -> None:
    layout = minkunet_layout({k: tuple(v.shape) for k, v in mink_src[1].items()})
    assert layout.encoder_blocks == (2, 3, 4, 6) and layout.decoder_blocks == (2, 2, 2, 2)
    assert [[k, list(v)] for k, v in mmdet3d_minkunet_shapes(layout).items()] == MK["tensors"]
    got = sup.checksums(mink_src[1])
    for name, (s, s2) in MK["weights_checksum"].items():
        assert got[name] == pytest.approx([s, s2], rel=1e-12, abs=1e-12), name


def test_mmdet3d_minkunet_export(mink_src: tuple[Path, dict], tmp_path: Path) -> None:
    rep = export_backbone(mink_src[0], "mmdet3d", tmp_path / "m.pth")
    sd = torch.load(tmp_path / "m.pth", weights_only=True)["state_dict"]
    assert _table(sd, "backbone.") == MK["tensors"] and len(sd) == 378
    _check_metadata(sd._metadata, MK["load"]["real_metadata"], list(sd))
    w = sd["backbone.conv_input.1.0.weight"]
    assert torch.equal(w[:, 1, 1, 1, :], torch.eye(32)) and float(w.abs().sum()) == 32.0
    assert torch.equal(
        sd["backbone.encoder.3.6.conv2.weight"], mink_src[1]["enc_blocks.3.5.conv2.weight"]
    )
    assert torch.equal(
        sd["backbone.decoder.1.1.0.bn1.running_var"],
        mink_src[1]["dec_blocks.1.0.norm1.running_var"],
    )
    assert len(rep.mapped) == 372 and "conv_input.1.* (6)" in rep.format()
    assert "encoder_blocks=[2, 3, 4, 6]" in rep.format()


def test_mmdet3d_minkunet_omit_stem_and_relative_keys(tmp_path: Path) -> None:
    from olivine_models import create_point_encoder

    tiny = create_point_encoder("minkunet_tiny", in_channels=2, backend="torch")
    state = sup.seeded_state({k: tuple(v.shape) for k, v in tiny.state_dict().items()}, 1)
    src = sup.write_backbone(tmp_path / "t.pt", "minkunet_tiny", state, 2)
    rep2 = export_backbone(src, "mmdet3d", tmp_path / "o.pth", stem="omit", prefix="")
    sd2 = torch.load(tmp_path / "o.pth", weights_only=True)["state_dict"]
    assert len(sd2) == len(state) and "conv_input.1.0.weight" not in sd2
    assert sd2["conv_input.0.0.weight"].shape == (8, 3, 3, 3, 2)
    assert sd2._metadata[""] == {"version": 1} and sd2._metadata["encoder.0.0.0"] == {"version": 2}
    assert sd2._metadata["decoder.0.1"] == {"version": 1}
    assert any("conv_input.1" in names for names, _ in rep2.left_out)


@pytest.mark.parametrize("backend", ["spconv", "torch"])
def test_toolkit_minkunet_computes_what_the_real_class_computed(
    mink_src: tuple[Path, dict], backend: str
) -> None:
    """The real MinkUNetBackbone loaded with our export (identity stem) computed the manifest's
    output; the toolkit's MinkUNet-34C with the same weights must compute the same.
    """
    if backend == "spconv":
        pytest.importorskip("spconv.pytorch")
    from olivine_models import create_point_encoder

    ours = create_point_encoder("minkunet34c", in_channels=1, backend=backend)
    ours.load_state_dict(mink_src[1], strict=True)
    ours.eval()
    data = sup.outputs("mmdet3d_minkunet34c")
    with torch.no_grad():
        out = ours(data["coords"], data["feats"], (32, 32, 32), 2)
    torch.testing.assert_close(out, data["output"], rtol=1e-4, atol=1e-4)
    assert MK["forward"]["toolkit_minkunet34c_spconv_max_abs_diff"] < 1e-5


def test_wrong_kind_is_refused(mink_src: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="--to openpcdet exports a VoxelNet.*minkunet34c"):
        export_backbone(mink_src[0], "openpcdet", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_inconsistent_or_unfit_files_are_refused(
    voxelnet_src: tuple[Path, dict], tmp_path: Path
) -> None:
    state = dict(voxelnet_src[1])
    named_wrong = sup.write_backbone(tmp_path / "a.pt", "minkunet34c", state, 4)
    with pytest.raises(ExportError, match="records point encoder 'minkunet34c' but its tensors"):
        export_backbone(named_wrong, "mmdet3d", tmp_path / "x.pth")
    bad = dict(state, **{"conv_out.0.weight": torch.zeros(128, 3, 3, 3, 64)})
    with pytest.raises(ExportError, match=r"1 mis-shaped \(e.g. conv_out.0.weight"):
        export_backbone(sup.write_backbone(tmp_path / "b.pt", "voxelnet", bad, 4), "openpcdet",
                        tmp_path / "x.pth")  # fmt: skip
    (tmp_path / "c.pt").write_text("not a checkpoint")
    with pytest.raises(ExportError, match="not a pretrained backbone"):
        export_backbone(tmp_path / "c.pt", "mmdet3d", tmp_path / "x.pth")
    other = sup.write_backbone(tmp_path / "d.pt", "pointnet", {"fc.weight": torch.zeros(2)}, 1)
    with pytest.raises(ExportError, match="holds no VoxelNet"):
        export_backbone(other, "mmdet3d", tmp_path / "x.pth")
    with pytest.raises(ExportError, match="would overwrite the source"):
        export_backbone(voxelnet_src[0], "openpcdet", voxelnet_src[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="run folder holds no backbone.pt"):
        export_backbone(tmp_path / "empty", "mmdet3d", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_heads_beside_the_encoder_are_left_out(
    voxelnet_src: tuple[Path, dict], tmp_path: Path
) -> None:
    state = dict(voxelnet_src[1])
    state["pp_head.weight"] = torch.zeros(64, 1, 1, 1, 128)
    state["sem_head.weight"] = torch.zeros(64, 1, 1, 1, 128)
    path = sup.write_backbone(tmp_path / "h.pt", "voxelnet", state, 4)
    rep = export_backbone(path, "openpcdet", tmp_path / "p.pth")
    assert len(torch.load(tmp_path / "p.pth", weights_only=True)["model_state"]) == 72
    text = rep.format()
    assert "left out pp_head.* (1), sem_head.* (1): pretraining heads" in text


def test_an_unknown_encoder_name_is_identified_by_its_tensors(
    voxelnet_src: tuple[Path, dict], tmp_path: Path
) -> None:
    path = sup.write_backbone(tmp_path / "v.pt", "second_backbone", voxelnet_src[1], 4)
    rep = export_backbone(path, "openpcdet", tmp_path / "p.pth")
    assert rep.family == "voxelnet" and rep.point_encoder == "second_backbone"


def _toolkit_voxelnet(backend: str) -> torch.nn.Module:
    from olivine_models import create_point_encoder, list_point_encoders

    if "voxelnet" not in list_point_encoders():
        pytest.skip("olivine-models has no 'voxelnet' point encoder yet")
    return create_point_encoder("voxelnet", in_channels=4, backend=backend)


@pytest.mark.parametrize("backend", ["spconv", "torch"])
def test_toolkit_voxelnet_has_openpcdets_tensors(backend: str) -> None:
    if backend == "spconv":
        pytest.importorskip("spconv.pytorch")
    state = _toolkit_voxelnet(backend).state_dict()
    assert [[k, list(state[k].shape)] for k, _ in PCDET["tensors"] if k in state] == PCDET[
        "tensors"
    ]


@pytest.mark.parametrize("backend", ["spconv", "torch"])
def test_toolkit_voxelnet_computes_what_openpcdet_computed(
    voxelnet_src: tuple[Path, dict], backend: str
) -> None:
    """The toolkit's VoxelNet (its own forward, either sparse backend), loaded with the seeded
    weights, against the output of OpenPCDet's real VoxelBackBone8x recorded in the manifest.
    """
    if backend == "spconv":
        pytest.importorskip("spconv.pytorch")
    enc = _toolkit_voxelnet(backend)
    report = enc.load_state_dict(voxelnet_src[1], strict=True)
    assert not report.missing_keys and not report.unexpected_keys
    enc.eval()
    data = sup.outputs("openpcdet_voxelnet")
    with torch.no_grad():
        out = enc(data["coords"].int(), data["feats"], (41, 64, 64), 2)
    feats, idx = out.features, out.indices.long()
    b, (d, h, w) = 2, out.spatial_shape
    dense = feats.new_zeros(b, feats.shape[1], d, h, w)
    dense[idx[:, 0], :, idx[:, 1], idx[:, 2], idx[:, 3]] = feats
    bev = dense.reshape(b, -1, h, w)  # OpenPCDet's HeightCompression
    torch.testing.assert_close(bev, data["output"], rtol=1e-5, atol=1e-5)


def test_the_manifests_record_how_each_loader_behaved() -> None:
    assert PCDET["load"]["log"][1].startswith("==> Checkpoint trained from version: olivine-train")
    assert SE["load"]["exact"] and MK["load"]["exact"]
    # init_cfg=Pretrained works on a --prefix '' export; with init_cfg's prefix mmengine drops
    # the metadata and mmdetection3d permutes (so fails to load) every sparse weight
    assert MK["load"]["init_cfg_pretrained_exact"] == {
        "relative_export_no_prefix": True,
        "default_export_prefix_backbone": False,
    }
    placeholders = set(SE["mmcv_placeholders_requested"])
    assert {"mmcv.ops.points_in_boxes_all", "mmcv._ext.hard_voxelize_forward"} <= placeholders
