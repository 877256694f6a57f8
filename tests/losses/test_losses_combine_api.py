"""WeightedSum, the public API snapshot and the torch-only import rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import olivine_losses
from olivine_losses import OLIVINE_WEIGHTS, WeightedSum

PUBLIC_API = [
    "OLIVINE_WEIGHTS",
    "InfoNCELoss",
    "SemanticContrastiveLoss",
    "SemanticVariant",
    "SuperpixelInfoNCELoss",
    "VMFClassPrior",
    "WeightedSum",
    "__version__",
    "banerjee_kappa",
    "direction_cosines",
    "effective_rank",
    "info_nce",
    "info_nce_chance",
    "log_bessel_iv",
    "most_collinear_pair",
    "pool_by_segment",
    "semantic_contrastive",
    "semantic_contrastive_chance",
    "superpixel_chance",
    "superpixel_info_nce",
    "vmf_log_normalizer",
    "vmf_nll",
]

FUNCTIONAL_API = [
    "banerjee_kappa",
    "info_nce",
    "log_bessel_iv",
    "pool_by_segment",
    "semantic_contrastive",
    "superpixel_info_nce",
    "vmf_log_normalizer",
    "vmf_nll",
]


def test_public_api_snapshot() -> None:
    # a change here is an API change: update the CHANGELOG and the version with it
    assert sorted(olivine_losses.__all__) == sorted(PUBLIC_API)
    for name in olivine_losses.__all__:
        assert hasattr(olivine_losses, name), name
    from olivine_losses import functional

    assert sorted(functional.__all__) == FUNCTIONAL_API
    for name in functional.__all__:
        assert getattr(functional, name) is getattr(olivine_losses, name)
    assert olivine_losses.__version__ == "0.1.0"


def test_package_imports_only_torch_and_the_standard_library() -> None:
    import sys

    root = Path(olivine_losses.__file__).parent
    allowed = {"torch", "olivine_losses", "__future__"} | set(sys.stdlib_module_names)
    seen = set()
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                seen.add(top)
                assert top in allowed, f"{path.name} imports {name}"
    assert "torch" in seen


def test_weighted_sum_olivine_weights() -> None:
    ppnce = torch.tensor(2.0, requires_grad=True)
    sup = torch.tensor(4.0, requires_grad=True)
    vmf = torch.tensor(-3.0, requires_grad=True)
    combine = WeightedSum.olivine()
    total, parts = combine(ppnce=ppnce, sup=sup, vmf=vmf)
    assert total.item() == pytest.approx(0.5 * 2 + 0.5 * 4 - 3.0)
    assert dict(OLIVINE_WEIGHTS) == {"ppnce": 0.5, "sup": 0.5, "vmf": 1.0}
    assert {k: v.item() for k, v in parts.items()} == {
        "ppnce": 2.0,
        "sup": 4.0,
        "vmf": -3.0,
        "total": 0.0,
    }
    assert all(not v.requires_grad for v in parts.values())
    total.backward()
    assert (ppnce.grad.item(), sup.grad.item(), vmf.grad.item()) == (0.5, 0.5, 1.0)
    # mapping form, zero weight: logged but not trained on
    total2, parts2 = WeightedSum({"a": 1.0, "b": 0.0})(
        {"a": torch.tensor(1.0)}, b=torch.tensor(9.0)
    )
    assert total2.item() == 1.0 and parts2["b"].item() == 9.0
    assert "ppnce=0.5" in repr(combine)


def test_weighted_sum_errors() -> None:
    combine = WeightedSum({"a": 1.0, "b": 2.0})
    with pytest.raises(ValueError, match=r"missing \['b'\], unknown \['c'\]"):
        combine(a=torch.tensor(1.0), c=torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"'a' given twice"):
        combine({"a": torch.tensor(1.0)}, a=torch.tensor(1.0), b=torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"'b' must be a scalar tensor, got \(3,\)"):
        combine(a=torch.tensor(1.0), b=torch.ones(3))
    with pytest.raises(ValueError, match="non-empty mapping"):
        WeightedSum({})
    with pytest.raises(ValueError, match="finite number"):
        WeightedSum({"a": float("nan")})
    with pytest.raises(ValueError, match="'total'"):
        WeightedSum({"total": 1.0})
