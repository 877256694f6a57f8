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
import ast
import hashlib
import importlib.metadata as md
import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PINNED_OPENPCDET = "8cacccec11db6f59bf6934600c9a175dae254806"  # master, 2024-04-17
SEED = 2026


def _load_by_path(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


support = _load_by_path("export_support", ROOT / "tests" / "train" / "export_support.py")
placeholders = _load_by_path(
    "mmcv_ops_placeholders", Path(__file__).with_name("mmcv_ops_placeholders.py")
)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def vendor_openpcdet(git_dir: Path | None, commit: str) -> dict[str, Any]:
    """Refresh (from git) or check (against provenance.json) the pinned OpenPCDet copies."""
    folder = support.PCDET
    prov_file = folder / "provenance.json"
    files = [*support.PCDET_FILES, "LICENSE"]
    if git_dir is not None:
        folder.mkdir(parents=True, exist_ok=True)
        blobs = {}
        for path in files:
            data = subprocess.run(
                ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
                check=True,
                capture_output=True,
            ).stdout
            target = folder / "LICENSE" if path == "LICENSE" else support.vendored_path(path)
            target.write_bytes(data)
            blobs[path] = _blob_id(data)
        prov = {
            "repository": "https://github.com/open-mmlab/OpenPCDet",
            "commit": commit,
            "license": "Apache-2.0",
            "git_blob_ids": blobs,
            "note": "unmodified copies; .py files stored as .py.txt",
        }
        prov_file.write_text(json.dumps(prov, indent=1) + "\n")
    prov = json.loads(prov_file.read_text())
    for path, blob in prov["git_blob_ids"].items():
        target = folder / "LICENSE" if path == "LICENSE" else support.vendored_path(path)
        if _blob_id(target.read_bytes()) != blob:
            sys.exit(f"{target}: does not match {path} at OpenPCDet {prov['commit']}")
    return dict(prov)


def openpcdet_loader_methods() -> dict[str, Any]:
    """``_load_state_dict`` and ``load_params_from_file`` of OpenPCDet's Detector3DTemplate."""
    spconv_utils = sys.modules[f"{support.PKG}.utils.spconv_utils"]
    src = support.vendored_path("pcdet/models/detectors/detector3d_template.py").read_text()
    cls = next(
        n
        for n in ast.parse(src).body
        if isinstance(n, ast.ClassDef) and n.name == "Detector3DTemplate"
    )
    wanted = [
        f
        for f in cls.body
        if isinstance(f, ast.FunctionDef)
        and f.name in ("_load_state_dict", "load_params_from_file")
    ]
    ns: dict[str, Any] = {
        "os": __import__("os"),
        "torch": torch,
        "find_all_spconv_keys": spconv_utils.find_all_spconv_keys,
    }
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "detector3d_template.py", "exec"), ns)
    return {f.name: ns[f.name] for f in wanted}


def _stats(t: torch.Tensor) -> dict[str, Any]:
    flat = t.detach().double().flatten()
    idx = torch.linspace(0, flat.numel() - 1, 8).long()
    return {
        "shape": list(t.shape),
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "abs_max": float(flat.abs().max()),
        "nonzero": int((flat != 0).sum()),
        "sample_index": idx.tolist(),
        "sample": [float(flat[i]) for i in idx],
    }


def _voxels(
    gen: torch.Generator, batch: int, n: int, shape: tuple[int, int, int], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = []
    for b in range(batch):
        cells = torch.randperm(shape[0] * shape[1] * shape[2], generator=gen)[:n]
        z, rem = cells // (shape[1] * shape[2]), cells % (shape[1] * shape[2])
        rows.append(torch.stack([torch.full_like(z, b), z, rem // shape[2], rem % shape[2]], 1))
    coords = torch.cat(rows).int()
    return coords, torch.rand(coords.shape[0], channels, generator=gen)


def _write_backbone(tmp: Path, name: str, state: dict[str, torch.Tensor], cin: int) -> Path:
    return support.write_backbone(tmp / f"{name}.pt", name, state, cin)


def _check_loaded(model: nn.Module, exported: dict[str, torch.Tensor], prefix: str) -> bool:
    own = model.state_dict()
    return all(
        torch.equal(own[k[len(prefix) :]], v) for k, v in exported.items() if k.startswith(prefix)
    )


def _versions() -> dict[str, str]:
    names = ("torch", "spconv-cu120", "mmdet3d", "mmengine", "mmdet", "mmcv-lite", "numpy")
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            pass
    return out


def openpcdet_manifest(tmp: Path, prov: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    from olivine_train.export import export_backbone
    from olivine_train.export.layouts import voxelnet_shapes

    module = support.load_openpcdet()
    real = module.VoxelBackBone8x({}, input_channels=4, grid_size=np.array([64, 64, 40]))
    n_native = support.set_native_algo(real)
    state = support.seeded_state(voxelnet_shapes(4), SEED)
    src = _write_backbone(tmp, "voxelnet", state, 4)
    export_backbone(src, "openpcdet", tmp / "pcdet.pth")

    methods = openpcdet_loader_methods()
    holder = type("SecondLike", (nn.Module,), dict(methods))()
    holder.backbone_3d = real
    records: list[str] = []
    log = logging.getLogger("openpcdet")
    log.addHandler(
        type("H", (logging.Handler,), {"emit": lambda s, r: records.append(r.getMessage())})()
    )
    log.setLevel(logging.INFO)
    holder.load_params_from_file(str(tmp / "pcdet.pth"), logger=log, to_cpu=True)
    exported = torch.load(tmp / "pcdet.pth", weights_only=True)["model_state"]
    exact = _check_loaded(holder, exported, "")

    gen = torch.Generator().manual_seed(SEED + 1)
    coords, feats = _voxels(gen, 2, 400, (41, 64, 64), 4)
    real.eval()
    with torch.no_grad(), support.openpcdet_globals():
        out = real({"voxel_features": feats, "voxel_coords": coords, "batch_size": 2})
    sp = out["encoded_spconv_tensor"]
    dense = sp.dense()
    n, c, d, h, w = dense.shape
    bev = dense.reshape(n, c * d, h, w)
    manifest = {
        "target": "OpenPCDet VoxelBackBone8x",
        "source": prov,
        "constructor": "VoxelBackBone8x(model_cfg={}, input_channels=4, "
        "grid_size=np.array([64, 64, 40]))  # sparse_shape [41, 64, 64]",
        "tensors": support.tensor_table(real.state_dict()),
        "parameters": [k for k, _ in real.named_parameters()],
        "native_algo_convs": n_native,
        "seed": SEED,
        "weights_checksum": support.checksums(state),
        "load": {
            "how": "Detector3DTemplate.load_params_from_file (AST-extracted) into backbone_3d",
            "log": records,
            "exact": exact,
        },
        "forward": {
            "input": "coords (V, 4) [batch, z, y, x], feats (V, 4)",
            "output": "encoded_spconv_tensor.dense() viewed (N, C*D, H, W) as "
            "HeightCompression does",
            "active_sites": int(sp.indices.shape[0]),
            "stats": _stats(bev),
        },
        "versions": _versions(),
    }
    return manifest, {"coords": coords, "feats": feats, "output": bev}


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
        "exact": _check_loaded(holder, exported, ""),
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
            "stats": _stats(out),
        },
        "mmcv_placeholders_requested": sorted(placeholders.REQUESTED),
        "versions": _versions(),
    }
    return manifest, {"coords": inputs["coords"], "feats": inputs["feats"], "output": out}


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
    src = _write_backbone(tmp, "minkunet34c", state, 1)
    export_backbone(src, "mmdet3d", tmp / "mk.pth")
    real = MinkUNetBackbone(in_channels=1, encoder_blocks=[2, 3, 4, 6], sparseconv_backend="spconv")
    n_native = support.set_native_algo(real)
    holder = nn.Module()
    holder.backbone = real
    load = _mmdet3d_load(holder, tmp / "mk.pth", load_checkpoint, "backbone.")
    gen = torch.Generator().manual_seed(SEED + 2)
    coords, feats = _voxels(gen, 2, 300, (32, 32, 32), 1)
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
        "constructor": "MinkUNetBackbone(in_channels=1, encoder_blocks=[2, 3, 4, 6], "
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
            "stats": _stats(out),
            "toolkit_minkunet34c_spconv_max_abs_diff": float((out - toolkit).abs().max()),
        },
        "mmcv_placeholders_requested": sorted(placeholders.REQUESTED),
        "versions": _versions(),
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
    parser.add_argument("--openpcdet-commit", default=PINNED_OPENPCDET)
    parser.add_argument("--out", type=Path, default=support.DATA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prov = vendor_openpcdet(args.openpcdet_git, args.openpcdet_commit)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pc, pc_data = openpcdet_manifest(tmp, prov)
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
