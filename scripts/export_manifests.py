"""Write the export manifests of the real OpenPCDet and mmdetection3d classes (test data).

For each target the script builds the REAL class, exports a seeded toolkit-side state dict with
``olivine_train.export.export_backbone``, loads the exported file with the target's own loader,
checks that every tensor arrived unchanged, runs a forward pass on a fixed small input and
writes ``tests/train/export_data/<target>.json`` (every parameter and buffer name and shape,
the loader's report, output statistics, versions) and ``<target>.pt`` (the input and the full
output):

* ``openpcdet_voxelnet``: ``VoxelBackBone8x`` from OpenPCDet at a pinned commit, run from the
  unmodified files in ``tests/train/export_data/openpcdet/`` (``export_support.load_openpcdet``).
  ``--openpcdet-git DIR`` (a clone or bare git dir of github.com/open-mmlab/OpenPCDet) refreshes
  those copies from ``git show <commit>:<path>``; without it their git blob ids are checked
  against ``provenance.json``. The file is loaded by OpenPCDet's own
  ``Detector3DTemplate._load_state_dict`` / ``load_params_from_file`` (the two method bodies
  taken by AST from ``detector3d_template.py`` at the same commit and bound to a module whose
  only child is ``backbone_3d``, as in SECOND and PV-RCNN).
* ``mmdet3d_sparse_encoder`` / ``mmdet3d_minkunet34c``: ``SparseEncoder`` and
  ``MinkUNetBackbone(encoder_blocks=[2, 3, 4, 6], sparseconv_backend='spconv')`` of the
  installed mmdet3d 1.4.0, loaded with mmengine's ``load_checkpoint`` (what ``load_from``
  uses), ``strict=True``. See ``mmcv_ops_placeholders.py`` for how ``mmdet3d.models`` is
  imported without mmcv's compiled ops.

Run in a venv with mmdet3d==1.4.0 mmengine mmdet==3.3.0 mmcv-lite==2.1.0 spconv and the four
olivine packages (``nox -s export_manifests``). CPU only: every sparse convolution of the real
classes is set to ``ConvAlgo.Native`` after construction (spconv's only CPU algorithm).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn


def _load_by_path(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


HERE = Path(__file__).resolve().parent
op = _load_by_path("manifest_openpcdet", HERE / "manifest_openpcdet.py")
placeholders = _load_by_path("mmcv_ops_placeholders", HERE / "mmcv_ops_placeholders.py")
support = op.support
SEED = op.SEED


def _mmdet3d_classes() -> tuple[Any, Any, Any]:
    placeholders.install()
    import mmdet3d.models  # noqa: F401  (registers spconv 2: SparseModule._version = 2)
    from mmdet3d.models.backbones import MinkUNetBackbone
    from mmdet3d.models.middle_encoders import SparseEncoder
    from mmengine.runner.checkpoint import load_checkpoint

    return SparseEncoder, MinkUNetBackbone, load_checkpoint


def _mmdet3d_load(
    holder: nn.Module, file: Path, load_checkpoint: Any, prefix: str
) -> dict[str, Any]:
    load_checkpoint(holder, str(file), map_location="cpu", strict=True)
    exported = torch.load(file, weights_only=True)["state_dict"]
    meta = holder.state_dict()._metadata  # type: ignore[attr-defined]
    base = prefix.rstrip(".")
    return {
        "how": "mmengine.runner.checkpoint.load_checkpoint(strict=True), as load_from",
        "exact": op._check_loaded(holder, exported, ""),
        "file_metadata": dict(exported._metadata),
        "real_metadata": {k: v for k, v in meta.items() if k == base or k.startswith(base + ".")},
    }


def sparse_encoder_manifest(tmp: Path, inputs: dict) -> tuple[dict[str, Any], dict]:
    from olivine_train.export import export_backbone

    SparseEncoder, _, load_checkpoint = _mmdet3d_classes()
    real = SparseEncoder(4, [41, 64, 64])
    n_native = support.set_native_algo(real)
    holder = nn.Module()
    holder.middle_encoder = real
    export_backbone(tmp / "voxelnet.pt", "mmdet3d", tmp / "se.pth")
    load = _mmdet3d_load(holder, tmp / "se.pth", load_checkpoint, "middle_encoder.")
    real.eval()
    with torch.no_grad():
        out = real(inputs["feats"], inputs["coords"], 2)
    manifest = {
        "target": "mmdetection3d SparseEncoder",
        "constructor": "SparseEncoder(in_channels=4, sparse_shape=[41, 64, 64])",
        "tensors": support.tensor_table(real.state_dict()),
        "parameters": [k for k, _ in real.named_parameters()],
        "native_algo_convs": n_native,
        "seed": SEED,
        "load": load,
        "forward": {
            "input": "the openpcdet_voxelnet input",
            "output": "spatial_features (N, C*D, H, W)",
            "stats": op._stats(out),
        },
        "mmcv_placeholders_requested": sorted(placeholders.REQUESTED),
        "versions": op._versions(),
    }
    return manifest, {"coords": inputs["coords"], "feats": inputs["feats"], "output": out}


def _mink_args() -> dict[str, Any]:
    """Fresh lists each call: MinkUNetBackbone inserts into encoder_channels/decoder_channels
    (its defaults included, so a second default construction in one process fails).
    """
    return dict(
        in_channels=1, encoder_channels=[32, 64, 128, 256], encoder_blocks=[2, 3, 4, 6],
        decoder_channels=[256, 128, 96, 96], sparseconv_backend="spconv",
    )  # fmt: skip


def _init_cfg_checks(tmp: Path, src: Path, backbone_cls: Any) -> dict[str, bool]:
    """``init_cfg=dict(type='Pretrained')`` on the backbone: on a module-relative export
    (``--prefix ''``) without init_cfg's prefix, and on the default export with
    ``prefix='backbone.'`` (mmengine then passes a plain dict: the metadata is gone and the
    spconv-2 hook permutes every sparse weight, which then fails to load).
    """
    from olivine_train.export import export_backbone

    export_backbone(src, "mmdet3d", tmp / "mk_rel.pth", prefix="")
    want = torch.load(tmp / "mk.pth", weights_only=True)["state_dict"]
    out = {}
    cases = {
        "relative_export_no_prefix": {"checkpoint": str(tmp / "mk_rel.pth")},
        "default_export_prefix_backbone": {
            "checkpoint": str(tmp / "mk.pth"),
            "prefix": "backbone.",
        },
    }
    for name, cfg in cases.items():
        model = backbone_cls(**_mink_args(), init_cfg=dict(type="Pretrained", **cfg))
        model.init_weights()
        out[name] = op._check_loaded(model, want, "backbone.")
    return out


def minkunet_manifest(tmp: Path) -> tuple[dict[str, Any], dict]:
    from olivine_models import create_point_encoder
    from olivine_train.export import export_backbone

    _, MinkUNetBackbone, load_checkpoint = _mmdet3d_classes()
    ours = create_point_encoder("minkunet34c", in_channels=1, backend="spconv")
    state = support.seeded_state({k: tuple(v.shape) for k, v in ours.state_dict().items()}, SEED)
    # importing mmdet3d.models patched spconv's SparseModule._load_from_state_dict for the whole
    # process: a plain dict would be permuted; the metadata of our own state_dict() says
    # version 2 for every sparse module (SparseModule._version is now 2), so nothing is.
    keep = OrderedDict(state)
    keep._metadata = ours.state_dict()._metadata  # type: ignore[attr-defined]
    ours.load_state_dict(keep)
    src = op._write_backbone(tmp, "minkunet34c", state, 1)
    export_backbone(src, "mmdet3d", tmp / "mk.pth")
    real = MinkUNetBackbone(**_mink_args())
    n_native = support.set_native_algo(real)
    holder = nn.Module()
    holder.backbone = real
    load = _mmdet3d_load(holder, tmp / "mk.pth", load_checkpoint, "backbone.")
    load["init_cfg_pretrained_exact"] = _init_cfg_checks(tmp, src, MinkUNetBackbone)
    gen = torch.Generator().manual_seed(SEED + 2)
    coords, feats = op._voxels(gen, 2, 300, (32, 32, 32), 1)
    coords[-1, 1:] = 31  # MinkUNetBackbone takes spatial_shape = max + 1: make it 32^3
    coords = torch.unique(coords, dim=0).int()  # sorted by batch (batch_size = last row + 1)
    feats = feats[: coords.shape[0]]
    real.eval()
    ours.eval()
    with torch.no_grad():
        out = real(feats, coords)
        toolkit = ours(coords, feats, (32, 32, 32), 2)
    manifest = {
        "target": "mmdetection3d MinkUNetBackbone",
        "constructor": "MinkUNetBackbone(in_channels=1, encoder_channels=[32, 64, 128, 256], "
        "encoder_blocks=[2, 3, 4, 6], decoder_channels=[256, 128, 96, 96], "
        "sparseconv_backend='spconv')",
        "tensors": support.tensor_table(real.state_dict()),
        "parameters": [k for k, _ in real.named_parameters()],
        "native_algo_convs": n_native,
        "seed": SEED,
        "weights_checksum": support.checksums(state),
        "load": load,
        "export": "stem=identity (conv_input.1 set to the identity)",
        "forward": {
            "input": "coords (V, 4) [batch, i, j, k], feats (V, 1); spatial shape 32^3",
            "output": "decoder_outs[-1].features (V, 96)",
            "stats": op._stats(out),
            "toolkit_minkunet34c_spconv_max_abs_diff": float((out - toolkit).abs().max()),
        },
        "mmcv_placeholders_requested": sorted(placeholders.REQUESTED),
        "versions": op._versions(),
    }
    return manifest, {"coords": coords, "feats": feats, "output": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--openpcdet-git",
        type=Path,
        default=None,
        help="git dir of OpenPCDet: refresh the pinned copies from it",
    )
    parser.add_argument("--openpcdet-commit", default=op.PINNED_OPENPCDET)
    parser.add_argument("--out", type=Path, default=support.DATA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prov = op.vendor_openpcdet(args.openpcdet_git, args.openpcdet_commit)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pc, pc_data = op.openpcdet_manifest(tmp, prov)
        se, se_data = sparse_encoder_manifest(tmp, pc_data)
        mk, mk_data = minkunet_manifest(tmp)
    for name, manifest, data in (
        ("openpcdet_voxelnet", pc, pc_data),
        ("mmdet3d_sparse_encoder", se, se_data),
        ("mmdet3d_minkunet34c", mk, mk_data),
    ):
        manifest["generated_by"] = "scripts/export_manifests.py"
        manifest["outputs_file"] = f"{name}.pt"
        (args.out / f"{name}.json").write_text(json.dumps(manifest, indent=1) + "\n")
        torch.save({k: v.contiguous() for k, v in data.items()}, args.out / f"{name}.pt")
        f = manifest["forward"]["stats"]
        print(
            textwrap.shorten(
                f"{name}: {len(manifest['tensors'])} tensors, load exact="
                f"{manifest['load']['exact']}, output {f['shape']} "
                f"mean {f['mean']:.6g} abs_max {f['abs_max']:.6g}",
                200,
            )
        )
    print("OpenPCDet loader:", pc["load"]["log"][-1])
    print("MinkUNetBackbone init_cfg=Pretrained exact:", mk["load"]["init_cfg_pretrained_exact"])
    print(
        "toolkit vs real MinkUNetBackbone max |diff|:",
        mk["forward"]["toolkit_minkunet34c_spconv_max_abs_diff"],
    )
    print(
        "SparseEncoder vs VoxelBackBone8x max |diff|:",
        float((se_data["output"] - pc_data["output"]).abs().max()),
    )


if __name__ == "__main__":
    main()
