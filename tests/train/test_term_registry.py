"""The loss-term registry is the one source: heads, labels, the DDP flag and the config checks
follow from it, and a new term added as docs/architecture.md says trains through the real recipe.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import olivine_train
from olivine_train.config import Config, ConfigError, load_config, term_weight_fields
from olivine_train.recipes import pretrain_terms
from olivine_train.recipes.pretrain_outputs import Head
from olivine_train.recipes.pretrain_termset import ActiveTerms, weight_fields

NAMES = ("ppnce", "sup", "vmf", "superpixel")


def _with_weights(on: tuple[str, ...]) -> Config:
    cfg = Config()
    weights = {f"{n}_weight": (1.0 if n in on else 0.0) for n in NAMES}
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **weights))


@pytest.mark.parametrize(
    "on", [c for r in range(len(NAMES) + 1) for c in itertools.combinations(NAMES, r)]
)
def test_derived_facts_match_the_rules_they_replace(on: tuple[str, ...]) -> None:
    active = ActiveTerms.of(_with_weights(on))
    assert tuple(active.weights) == on  # registry order, weight > 0 only
    # the DDP flag was hard-coded as: vMF on, L_sup off (the sem 3D head idles in the warm-up)
    assert active.find_unused_parameters == ("vmf" in on and "sup" not in on)
    heads = set()
    if "ppnce" in on or "superpixel" in on:
        heads.add(Head.PP)
    if "sup" in on or "vmf" in on:
        heads.add(Head.SEM_3D)
    if "sup" in on:
        heads.add(Head.SEM_2D)
    assert active.heads == heads
    assert active.needs_labels == any(n in on for n in ("sup", "vmf", "superpixel"))


def test_registry_and_schema_agree_and_a_mismatch_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert list(weight_fields()) == list(pretrain_terms.TERMS) == list(NAMES)
    assert term_weight_fields() == tuple(f"{n}_weight" for n in NAMES)
    terms = dict(pretrain_terms.TERMS, toy=pretrain_terms.PPNCETerm)
    monkeypatch.setattr(pretrain_terms, "TERMS", terms)
    monkeypatch.setattr("olivine_train.recipes.pretrain_termset.TERMS", terms)
    with pytest.raises(ValueError, match=r"terms without a weight field: \['toy_weight'\]"):
        ActiveTerms.of(Config())


@pytest.mark.parametrize("field", term_weight_fields())
def test_every_weight_field_is_validated(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"loss\.{field}: must be >= 0"):
        load_config("demo", [f"loss.{field}=-1"], check_paths=False)


def test_all_weights_zero_lists_every_term() -> None:
    zero = [f"loss.{f}=0" for f in term_weight_fields()]
    with pytest.raises(ConfigError, match="every term has weight 0") as info:
        load_config("demo", zero, check_paths=False)
    assert all(f in str(info.value) for f in term_weight_fields())


# ----------------------------------------------------------------------------------------------
# docs/architecture.md, "Adding a loss term", followed to the letter on a copy of olivine_train.

TOY_TERM = '''

class ToyTerm(_Term):
    """Toy term (test of the docs' recipe): squared distance between the 3D and 2D pp features
    of the first 8 pairs.
    """

    heads = (Head.PP,)
    image_head = Head.PP

    def __init__(self, ctx: TermContext) -> None:
        self.scale = ctx.cfg.loss.temperature / ctx.cfg.loss.temperature  # built from the context

    def draw(self, p: PairBatch) -> Tensor:
        return torch.arange(min(8, p.num_pairs), device=p.pair_voxels.device)

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        idx = _drawn(idx, "toy")
        k = p.outputs.point(Head.PP)[p.pair_voxels[idx]]
        q = _image(q, "toy")
        return TermResult(self.scale * (k - q).pow(2).sum(dim=1).mean(), indices=idx)
'''

RUN = """
import json, sys
import olivine_train
from olivine_train.cli import main
args = json.loads(sys.argv[1])
print("PACKAGE " + olivine_train.__file__)
codes = [main(a) for a in args]
print("CODES " + json.dumps(codes))
"""


def _add_toy_term(src: Path) -> None:
    """The three steps of the page: a class, a TERMS entry, a ``toy_weight`` field."""
    terms = src / "recipes" / "pretrain_terms.py"
    text = terms.read_text()
    anchor = "\n\nTERMS: dict[str, type[_Term]] = {\n"
    assert anchor in text
    text = text.replace(anchor, TOY_TERM + anchor)
    text = text.replace(
        '    "superpixel": SuperpixelTerm,\n',
        '    "superpixel": SuperpixelTerm,\n    "toy": ToyTerm,\n',
    )
    assert '"toy": ToyTerm' in text
    terms.write_text(text)
    schema = src / "config" / "schema.py"
    text = schema.read_text()
    line = "    superpixel_weight: float = 0.0"
    assert line in text
    schema.write_text(text.replace(line, "    toy_weight: float = 0.0\n" + line))


def test_a_term_added_as_the_architecture_page_says_trains(
    tiny_world: Path, tmp_path: Path, overrides_for: Any
) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    assert "1. A class in `recipes/pretrain_terms.py`" in page
    assert "2. An entry in `TERMS`" in page
    assert "3. A `<name>_weight: float = 0.0` field in `LossConfig`" in page
    src = tmp_path / "src" / "olivine_train"
    shutil.copytree(Path(olivine_train.__file__).parent, src)
    _add_toy_term(src)

    base = overrides_for(tiny_world, tmp_path / "runs", "toy")
    only_toy = [f"loss.{n}_weight=0" for n in NAMES] + ["loss.toy_weight=0.25"]
    args = [
        ["pretrain", "demo", *base, *only_toy, "optim.max_steps=2"],
        ["validate-config", "--no-check-paths", "demo", "loss.toy_weight=-1"],
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = proc.stdout.splitlines()
    assert any(ln == f"PACKAGE {src / '__init__.py'}" for ln in lines), proc.stdout + proc.stderr
    codes = json.loads(next(ln for ln in lines if ln.startswith("CODES "))[len("CODES ") :])
    assert codes[0] == 0, proc.stdout + proc.stderr
    assert codes[1] != 0 and "loss.toy_weight: must be >= 0" in proc.stderr  # validated

    records = [
        json.loads(ln)
        for ln in (tmp_path / "runs" / "toy" / "metrics.jsonl").read_text().splitlines()
        if ln.strip()
    ]
    train = [r for r in records if r.get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert math.isfinite(r["loss/toy"]) and r["loss/toy"] > 0
        assert r["loss/total"] == pytest.approx(0.25 * r["loss/toy"], rel=1e-6)
        assert not any(f"loss/{n}" in r for n in NAMES)  # only the new term is on
    assert train[1]["loss/toy"] != train[0]["loss/toy"]  # it trained
