"""The OpenPCDet half of scripts/export_manifests.py, and helpers shared by both halves.

``VoxelBackBone8x`` runs from the pinned, unmodified OpenPCDet files in
``tests/train/export_data/openpcdet/`` (``export_support.load_openpcdet``); OpenPCDet's own
``Detector3DTemplate._load_state_dict`` / ``load_params_from_file`` load our export: the two
method bodies are taken by AST from ``detector3d_template.py`` at the same commit and bound to
a module whose only child is ``backbone_3d``, as in SECOND and PV-RCNN.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PINNED_OPENPCDET = "8cacccec11db6f59bf6934600c9a175dae254806"  # master, 2024-04-17
SEED = 2026


def _load_by_path(name: str, path: Path) -> Any:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


support = _load_by_path("export_support", ROOT / "tests" / "train" / "export_support.py")


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
            "log": [r.replace(str(tmp), "<tmp>") for r in records],
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
