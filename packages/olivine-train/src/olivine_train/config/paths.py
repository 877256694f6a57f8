"""Checks of the paths a config names (part of :func:`olivine_train.config.validate`).

Folders and files that must exist, weights files that must load with
``torch.load(weights_only=True)`` (a pickle payload, an empty or a text file is a problem here,
before any work), and splits of ``<data.root>/olivine_splits.json`` that must not be empty.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from olivine_data.datasets import read_named_split
from olivine_models import weights_file_problem
from olivine_train.checkpoint import zip_damage
from olivine_train.config.schema import Config

__all__ = ["path_problems"]


def path_problems(cfg: Config) -> list[str]:
    """The problems of the paths a config names: folders and files that do not exist, weights
    files that cannot be loaded weights-only, empty splits; checked before any work.
    """
    p: list[str] = []
    d, m, ds, r = cfg.data, cfg.model, cfg.downstream, cfg.run
    if not Path(d.root).is_dir():
        p.append(f"data.root: folder {str(d.root)!r} does not exist")
    if d.label_root is not None and not Path(d.label_root).is_dir():
        p.append(f"data.label_root: folder {d.label_root!r} does not exist")
    splits = [("data.train_split", d.train_split, d.train_scenes)]
    if cfg.recipe == "downstream":  # pretraining reads no validation split
        splits.append(("data.val_split", d.val_split, d.val_scenes))
    for field, name, explicit in splits:
        if explicit is None and Path(d.root).is_dir():
            try:  # an empty split of olivine_splits.json, found before any work
                read_named_split(d.root, name)
            except ValueError as exc:
                p.append(f"{field}: {exc}")
    if cfg.recipe == "pretrain" and m.image_weights is not None:
        if not Path(m.image_weights).is_file():
            p.append(
                f"model.image_weights: file {m.image_weights!r} does not exist "
                "(download the MoCo-v2 checkpoint or set model.image_weights=null)"
            )
        else:
            bad = _torch_file_problem(Path(m.image_weights))
            if bad is not None:
                p.append(f"model.image_weights: file {m.image_weights!r} {bad}")
            else:  # a pickle payload, or objects that are not tensors: refused before any work
                problem = weights_file_problem(m.image_weights, "model.image_weights")
                p.extend([problem] if problem is not None else [])
    if cfg.recipe == "downstream" and ds.pretrained is not None:
        if not Path(ds.pretrained).is_file():
            p.append(f"downstream.pretrained: file {ds.pretrained!r} does not exist")
        else:
            bad = _torch_file_problem(Path(ds.pretrained))
            if bad is not None:
                p.append(f"downstream.pretrained: file {ds.pretrained!r} {bad}")
            else:
                problem = weights_file_problem(ds.pretrained, "downstream.pretrained")
                p.extend([problem] if problem is not None else [])
    if r.resume not in (None, "auto"):
        if not Path(str(r.resume)).is_file():
            p.append(f"run.resume: file {r.resume!r} does not exist")
        else:  # a payload or a text file, before any work
            problem = weights_file_problem(str(r.resume), "run.resume")
            p.extend([problem] if problem is not None else [])
    return p


def _torch_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file, from its first bytes and (for the zip format
    of torch >= 1.6) its zip directory, without loading it; None if it looks like one.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes): expected a PyTorch checkpoint"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            return f"is a truncated or corrupt PyTorch (zip) checkpoint ({exc})"
        if not any(n.endswith("data.pkl") for n in names):
            return "is a zip archive but not a PyTorch checkpoint (no data.pkl inside)"

        damage = zip_damage(path)
        if damage is not None:
            return f"is a damaged PyTorch (zip) checkpoint: {damage}"
        return None
    if head[0] == 0x80:  # a pickle (the legacy torch.save format)
        return None
    return f"is not a PyTorch checkpoint (starts with bytes {head!r})"
