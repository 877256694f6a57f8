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
