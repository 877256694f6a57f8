"""A state dict of another architecture must not "load" (issue 14, case 2).

Any two BatchNorm networks share the ``*.num_batches_tracked`` counters by name and shape ``()``;
the reference ``load_state_with_same_shape`` therefore reported "loaded 31 tensors" for a
``minkunet_tiny`` state dict put into a ``minkunet14`` — all 31 counters, a random network.
"""

from __future__ import annotations

import pytest
import torch

from olivine_models import create_point_encoder, load_matching_state


def test_foreign_state_dict_is_refused_and_model_untouched() -> None:
    torch.manual_seed(0)
    foreign = create_point_encoder("minkunet_tiny").state_dict()
    target = create_point_encoder("minkunet14")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    # what the reference-style loader would have matched: only the counters
    shared = [
        k for k, v in foreign.items() if k in before and tuple(before[k].shape) == tuple(v.shape)
    ]
    assert shared and all(k.endswith("num_batches_tracked") for k in shared)
    with pytest.raises(ValueError) as info:
        load_matching_state(target, foreign, source="weights/tiny.pt")
    first, *details = str(info.value).splitlines()
    assert first.startswith("weights/tiny.pt: no weight matches the ")
    assert f"(only {len(shared)} BatchNorm num_batches_tracked counters did)" in first
    assert "refusing to load" in first
    assert details[0].startswith(f"loaded {len(shared)} tensors (0 weights + {len(shared)} ")
    assert "unexpected" in details[0] and "shape mismatches" in details[0]
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key  # nothing was written
    # opting out returns the report instead
    report = load_matching_state(target, foreign, require_match=False)
    assert report.meaningful == () and len(report.loaded) == len(shared)
    assert report.unexpected or report.mismatched


def test_report_counts_weights_separately_from_counters() -> None:
    torch.manual_seed(1)
    source = create_point_encoder("minkunet_tiny")
    target = create_point_encoder("minkunet_tiny")
    state = dict(source.state_dict())
    extra = torch.zeros(3)
    state["vmf_mu"] = extra
    report = load_matching_state(target, state)
    counters = [k for k in target.state_dict() if k.endswith("num_batches_tracked")]
    assert len(report.meaningful) == len(report.loaded) - len(counters) > 0
    assert report.unexpected == ("vmf_mu",) and report.mismatched == ()
    head = report.summary().splitlines()[0]
    assert head.startswith(
        f"loaded {len(report.loaded)} tensors ({len(report.meaningful)} weights + "
        f"{len(counters)} BatchNorm num_batches_tracked counters)"
    )
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_load_state_strict_names_every_kind_of_problem_and_leaves_the_model() -> None:
    from olivine_models import StateMismatchError, load_state

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    state["module.0.weight"] = torch.zeros(5, 3)
    del state["module.1.bias"]
    state["module.extra"] = torch.zeros(1)
    with pytest.raises(StateMismatchError) as info:
        load_state(model, state, strip=("module.",), source="ckpt.pt")
    msg = str(info.value)
    assert msg.startswith("ckpt.pt: weights do not fit the Sequential: ")
    assert "1 missing key(s) (e.g. 1.bias)" in msg
    assert "1 unexpected key(s) (e.g. module.extra)" in msg
    assert "1 shape mismatch(es) (e.g. module.0.weight: checkpoint (5, 3) vs model (4, 3))" in msg
    assert info.value.report.wrong_shape == ("0.weight",)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_load_state_strips_prefixes_repeatedly_and_ignores_heads() -> None:
    from olivine_models import load_state

    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    target = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 7))
    head = target[1].weight.detach().clone()
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    report = load_state(target, state, strip=("backbone.", "module."), ignore=("1.",))
    assert report.exact and report.loaded == ("0.weight", "0.bias")
    assert torch.equal(target[0].weight, source[0].weight)
    assert torch.equal(target[1].weight, head)  # ignored: keeps its value
