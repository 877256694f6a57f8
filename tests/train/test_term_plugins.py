"""Plugins: the ``olivine-train`` command imports the modules that register loss terms
(``OLIVINE_PLUGINS``, entry points) before it reads its config.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from olivine_train import registered_terms, unregister_term
from olivine_train.cli import main

PLUGIN = textwrap.dedent(
    """
    import torch
    from olivine_train import Head, LossTerm, TermResult, register_term

    @register_term("plugtoy", weight=0.0)
    class PlugToy(LossTerm):
        heads = (Head.PP,)
        image_head = Head.PP

        def __init__(self, ctx):
            pass

        def draw(self, p):
            return torch.arange(min(4, p.num_pairs), device=p.pair_voxels.device)

        def __call__(self, p, idx, q):
            k = p.outputs.point(Head.PP)[p.pair_voxels[idx]]
            return TermResult((k - q).pow(2).sum(dim=1).mean(), indices=idx)
    """
)


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "my_olivine_terms.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("OLIVINE_PLUGINS", "my_olivine_terms")
    yield tmp_path
    if "plugtoy" in registered_terms():
        unregister_term("plugtoy")
    sys.modules.pop("my_olivine_terms", None)


def test_cli_loads_a_plugin_and_validates_its_weight(
    plugin_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "plugtoy" not in registered_terms()
    code = main(["validate-config", "demo", "loss.plugtoy_weight=0.25", "--no-check-paths"])
    assert code == 0, capsys.readouterr().err
    assert "plugtoy_weight: 0.25" in capsys.readouterr().out
    assert "plugtoy" in registered_terms()
    # a negative weight of the plugin's field is refused like a built-in one
    assert main(["validate-config", "demo", "loss.plugtoy_weight=-1", "--no-check-paths"]) == 2
    assert "plugtoy_weight" in capsys.readouterr().err


def test_without_the_plugin_its_weight_is_an_unknown_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OLIVINE_PLUGINS", raising=False)
    assert main(["validate-config", "demo", "loss.plugtoy_weight=0.25", "--no-check-paths"]) == 2
    assert "plugtoy_weight" in capsys.readouterr().err


def test_a_plugin_that_cannot_be_imported_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLIVINE_PLUGINS", "no_such_olivine_plugin_xyz")
    assert main(["ls"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "plugin module 'no_such_olivine_plugin_xyz' (named by $OLIVINE_PLUGINS)" in err[0]
