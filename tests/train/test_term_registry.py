"""The loss-term registry is the one source: heads, labels, the DDP flag and the config checks
follow from it, and a term registered from outside as docs/architecture.md says (the public
``olivine_train.register_term``, no source edit) trains through the real recipe.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import olivine_train
from olivine_train import (
    Head as PublicHead,
)
from olivine_train import (
    LossTerm,
    PairBatch,
    TermContext,
    TermResult,
    register_term,
    unregister_term,
)
from olivine_train.cli import main
from olivine_train.config import (
    Config,
    ConfigError,
    config_to_dict,
    load_config,
    save_config,
    term_weight_fields,
    validate,
)
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
# docs/architecture.md, "Adding a loss term", followed to the letter: a term defined here, in a
# module outside the toolkit, registered with the public decorator. Nothing is patched.


class ToyTerm(LossTerm):
    """Toy term (test of the docs' recipe): squared distance between the 3D and 2D pp features
    of the first 8 pairs.
    """

    heads = (PublicHead.PP,)
    image_head = PublicHead.PP

    def __init__(self, ctx: TermContext) -> None:
        self.scale = ctx.cfg.loss.temperature / ctx.cfg.loss.temperature  # built from the context

    def draw(self, p: PairBatch) -> Tensor:
        return torch.arange(min(8, p.num_pairs), device=p.pair_voxels.device)

    def __call__(self, p: PairBatch, idx: Tensor | None, q: Tensor | None) -> TermResult:
        if idx is None or q is None:
            raise ValueError("toy: called without its pairs' indices or 2D features")
        k = p.outputs.point(PublicHead.PP)[p.pair_voxels[idx]]
        return TermResult(self.scale * (k - q).pow(2).sum(dim=1).mean(), indices=idx)


@pytest.fixture
def toy() -> Iterator[type[LossTerm]]:
    """``ToyTerm`` registered as ``toy`` for one test (unregistered after, whatever happens)."""
    cls = register_term("toy", weight=0.0)(ToyTerm)
    try:
        yield cls
    finally:
        unregister_term("toy")


def test_the_page_names_the_public_api() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    section = page[page.index("## Adding a loss term") :].split("\n## ")[0]
    for name in ("LossTerm", "register_term", "unregister_term", "TermContext", "TermResult"):
        assert name in section and name in olivine_train.__all__, name
    assert "@register_term(" in section


def test_the_pages_code_block_registers_its_term() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    section = page[page.index("## Adding a loss term") :].split("\n## ")[0]
    code = section.split("```python\n")[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/architecture.md", "exec"), namespace)  # the page, as a user runs it
    try:
        assert pretrain_terms.TERMS["toy"] is namespace["ToyTerm"]
        cfg = load_config("demo", ["loss.toy_weight=0.25"], check_paths=False)
        assert ActiveTerms.of(cfg).weights["toy"] == 0.25
    finally:
        unregister_term("toy")


def test_a_term_registered_as_the_architecture_page_says_trains(
    toy: type[LossTerm], tiny_world: Path, tmp_path: Path, overrides_for: Any, capsys: Any
) -> None:
    base = overrides_for(tiny_world, tmp_path / "runs", "toy")
    only_toy = [f"loss.{n}_weight=0" for n in NAMES] + ["loss.toy_weight=0.25"]
    assert main(["pretrain", "demo", *base, *only_toy, "optim.max_steps=2"]) == 0
    capsys.readouterr()
    assert main(["validate-config", "--no-check-paths", "demo", "loss.toy_weight=-1"]) != 0
    assert "loss.toy_weight: must be >= 0" in capsys.readouterr().err  # validated

    run = tmp_path / "runs" / "toy"
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln]
    train = [r for r in records if r.get("kind") == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert math.isfinite(r["loss/toy"]) and r["loss/toy"] > 0
        assert r["loss/total"] == pytest.approx(0.25 * r["loss/toy"], rel=1e-6)
        assert not any(f"loss/{n}" in r for n in NAMES)  # only the new term is on
    assert train[1]["loss/toy"] != train[0]["loss/toy"]  # it trained
    # the run's saved config records the weight under its documented name and reloads
    saved = load_config(str(run / "config.yaml"), check_paths=False)
    assert saved.loss.toy_weight == 0.25 and saved.loss.weight("toy") == 0.25


def test_registration_adds_the_weight_field_and_its_checks(toy: type[LossTerm]) -> None:
    assert list(weight_fields()) == [*NAMES, "toy"]
    assert term_weight_fields()[-1] == "toy_weight"
    cfg = load_config("demo", ["loss.toy_weight=0.5"], check_paths=False)
    assert cfg.loss.toy_weight == 0.5 and cfg.loss.extra_weights == {"toy": 0.5}
    assert config_to_dict(cfg)["loss"]["toy_weight"] == 0.5
    assert "extra_weights" not in config_to_dict(cfg)["loss"]
    assert Config().loss.weight("toy") == 0.0  # the registered default
    assert "toy" in ActiveTerms.of(cfg).weights and ActiveTerms.of(cfg).heads >= {Head.PP}
    with pytest.raises(ConfigError, match=r"loss\.toy_weight: expected float"):
        load_config("demo", ["loss.toy_weight=abc"], check_paths=False)
    with pytest.raises(ConfigError, match=r"loss\.toy_weight: expected a finite number"):
        load_config("demo", ["loss.toy_weight=.nan"], check_paths=False)
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.toi_weight'"):
        load_config("demo", ["loss.toi_weight=1"], check_paths=False)  # still rejected
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.extra_weights'"):
        load_config("demo", ["loss.extra_weights={toy: 1}"], check_paths=False)


def test_unknown_weight_key_is_rejected_and_unregistering_removes_the_field(
    tmp_path: Path,
) -> None:
    register_term("toy", weight=0.0)(ToyTerm)
    try:
        cfg = load_config("demo", ["loss.toy_weight=0.5"], check_paths=False)
        path = save_config(cfg, tmp_path / "c.yaml")
    finally:
        unregister_term("toy")
    assert "toy" not in pretrain_terms.TERMS and "toy_weight" not in term_weight_fields()
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.toy_weight'"):
        load_config(str(path), check_paths=False)  # a config naming an unregistered term
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.toy_weight'"):
        load_config("demo", ["loss.toy_weight=1"], check_paths=False)
    validate(config_to_dict(Config()), check_paths=False)  # nothing of the toy term is left


def test_duplicate_and_bad_registrations_are_refused(toy: type[LossTerm]) -> None:
    with pytest.raises(ValueError, match=r"'toy' is already registered \(.*ToyTerm\)"):
        register_term("toy")(ToyTerm)
    with pytest.raises(ValueError, match=r"'sup' is already registered"):
        register_term("sup")(ToyTerm)  # a built-in name
    with pytest.raises(ValueError, match="lower-case letters"):
        register_term("Bad-Name")(ToyTerm)
    with pytest.raises(ValueError, match="expected a subclass of olivine_train.LossTerm"):
        register_term("other")(dict)  # type: ignore[type-var]
    with pytest.raises(ValueError, match=r"does not implement \['__call__'\]"):
        register_term("other")(type("Abstract", (LossTerm,), {}))
    with pytest.raises(ValueError, match="finite and >= 0"):
        register_term("other", weight=-1.0)(ToyTerm)
    with pytest.raises(ValueError, match="built-in loss term"):
        unregister_term("vmf")
    with pytest.raises(ValueError, match=r"no registered loss term 'nope' \(registered: toy\)"):
        unregister_term("nope")
    assert "other" not in pretrain_terms.TERMS  # refused registrations leave nothing behind
    assert pretrain_terms._Term is LossTerm  # the former private name still works


def test_resuming_without_the_registered_term_that_trained_the_run_is_refused() -> None:
    from olivine_train.config import ResumeConfigError, check_resume_config

    register_term("toy", weight=0.0)(ToyTerm)
    try:
        trained = config_to_dict(load_config("demo", ["loss.toy_weight=0.5"], check_paths=False))
        # same process, term still registered: the run continues unchanged
        assert check_resume_config(trained, validate(trained, check_paths=False), "last.pt") == []
    finally:
        unregister_term("toy")
    now = load_config("demo", check_paths=False)
    with pytest.raises(ResumeConfigError, match=r"loss\.toy_weight: 0\.5 \(stored\) -> '<term not"):
        check_resume_config(trained, now, "last.pt")
    off = config_to_dict(now)
    off["loss"]["toy_weight"] = 0.0  # a term that was off changes nothing when it is gone
    assert check_resume_config(off, now, "last.pt") == []
