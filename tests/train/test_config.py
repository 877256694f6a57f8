"""Config loading, overrides and aggregated validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from olivine_train.config import (
    ConfigError,
    list_configs,
    load_config,
    parse_overrides,
    save_config,
    validate,
)

REQUIRED = {
    "olivine_nuscenes",
    "ppkt_nuscenes",
    "slidr_nuscenes",
    "linear_probe_nuscenes",
    "finetune_nuscenes_1pct",
    "finetune_nuscenes_5pct",
    "finetune_nuscenes_10pct",
    "finetune_nuscenes_25pct",
    "finetune_nuscenes_100pct",
    "finetune_semantickitti_1pct",
    "olivine_kitti",
    "demo",
}


def test_shipped_configs_all_load() -> None:
    names = set(list_configs())
    assert REQUIRED <= names, REQUIRED - names
    for name in names:
        load_config(name, check_paths=False)


def test_paper_settings() -> None:
    cfg = load_config("olivine_nuscenes", check_paths=False)
    assert cfg.model.point_encoder == "minkunet34c"
    assert cfg.model.image_encoder == "resnet50_dilated"
    assert cfg.loss.num_pairs == 4096 and cfg.loss.temperature == 0.07
    assert (cfg.loss.ppnce_weight, cfg.loss.sup_weight, cfg.loss.vmf_weight) == (0.5, 0.5, 1.0)
    assert cfg.loss.vmf_decay == 0.9999 and cfg.loss.vmf_warmup_steps == 10001
    assert cfg.model.head_dim == 64 and cfg.loss.sup_sampling == "dcas"
    o = cfg.optim
    assert (o.lr, o.momentum, o.dampening, o.weight_decay) == (0.5, 0.9, 0.1, 1e-4)
    assert o.scheduler == "cosine" and o.epochs == 50 and cfg.data.batch_size == 16
    lp = load_config("linear_probe_nuscenes", check_paths=False)
    assert lp.data.skip == 1 and lp.downstream.mode == "linear_probe"
    ft = load_config("finetune_nuscenes_1pct", check_paths=False)
    assert ft.data.skip == 100 and (ft.optim.lr, ft.optim.lr_head) == (0.02, 2.0)
    kt = load_config("finetune_semantickitti_1pct", check_paths=False)
    assert (kt.optim.lr, kt.optim.lr_head, kt.downstream.num_classes) == (0.05, 2.0, 20)
    ppkt = load_config("ppkt_nuscenes", check_paths=False)
    assert ppkt.loss.sup_weight == 0 and ppkt.model.image_encoder == "resnet50"


def test_overrides_apply_and_parse_yaml_values() -> None:
    cfg = load_config(
        "olivine_nuscenes",
        [
            "optim.lr=0.1",
            "data.image_size=[112, 208]",
            "loss.vmf_weight=0",
            "run.resume=null",
            "optim.weight_decay=1e-5",  # YAML 1.1 reads this as a string; accepted as float
        ],
        check_paths=False,
    )
    assert cfg.optim.lr == 0.1 and cfg.data.image_size == [112, 208]
    assert cfg.loss.vmf_weight == 0.0 and cfg.run.resume is None
    assert cfg.optim.weight_decay == 1e-5
    assert parse_overrides(["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            "olivine_nuscenes",
            [
                "optim.lrr=0.1",  # unknown key with a near miss
                "loss.temperature=abc",  # wrong type
                "data.sampling=dcas",  # unknown key
                "loss.sup_sampling=dacs",  # bad choice
                "data.batch_size=0",  # bad value
                f"data.root={tmp_path / 'nope'}",  # missing path
            ],
        )
    err = info.value
    text = str(err)
    assert len(err.problems) >= 6, text
    assert "did you mean 'optim.lr'" in text
    assert "loss.temperature: expected float" in text
    assert "unknown key 'data.sampling'" in text
    assert "did you mean 'dcas'" in text
    assert "data.batch_size: must be > 0" in text
    assert "data.root: folder" in text and "does not exist" in text


def test_bad_override_syntax_and_unknown_config() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="did you mean 'olivine_nuscenes'"):
        load_config("olivine_nuscene")


def test_all_weights_zero_rejected() -> None:
    with pytest.raises(ConfigError, match="every term has weight 0"):
        load_config(
            "olivine_nuscenes",
            ["loss.ppnce_weight=0", "loss.sup_weight=0", "loss.vmf_weight=0"],
            check_paths=False,
        )


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("finetune_semantickitti_1pct", ["run.seed=7"], check_paths=False)
    path = save_config(cfg, tmp_path / "config.yaml")
    again = load_config(str(path), check_paths=False)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["run"]["seed"] == 7


def test_extends_chain(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("recipe: downstream\noptim: {lr: 0.3}\n")
    (tmp_path / "child.yaml").write_text("extends: base\noptim: {epochs: 3}\n")
    cfg = load_config(str(tmp_path / "child.yaml"), check_paths=False)
    assert cfg.recipe == "downstream" and cfg.optim.lr == 0.3 and cfg.optim.epochs == 3
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(str(tmp_path / "loop.yaml"), check_paths=False)


def test_validate_mapping_type_error() -> None:
    with pytest.raises(ConfigError, match="data: expected a mapping"):
        validate({"data": 3}, check_paths=False)


def test_component_superpixels_exclude_class_losses() -> None:
    with pytest.raises(ConfigError, match="'vfm_components' replaces the VFM class labels"):
        load_config("slidr_nuscenes", ["loss.sup_weight=0.5"], check_paths=False)


def test_unknown_model_reported_next_to_type_errors() -> None:
    # Model names are checked against the olivine-models registries even when another field
    # failed to parse, so one run of validate-config shows every problem.
    with pytest.raises(ConfigError) as info:
        load_config(
            "olivine_nuscenes",
            ["data.batch_size=abc", "model.point_encoder=minkunet35c"],
            check_paths=False,
        )
    text = str(info.value)
    assert "data.batch_size: expected int" in text
    assert "model.point_encoder: unknown 'minkunet35c'; did you mean 'minkunet34c'?" in text


def test_sparse_backend_defaults_to_auto_and_lists_the_allowed_values() -> None:
    from typing import get_args, get_type_hints

    from olivine_models.point.backends import SPARSE_BACKENDS
    from olivine_train.config.schema import ModelConfig

    assert load_config("olivine_nuscenes", check_paths=False).model.sparse_backend == "auto"
    allowed = get_args(get_type_hints(ModelConfig)["sparse_backend"])
    assert allowed == SPARSE_BACKENDS  # the schema and olivine_models agree
    cfg = load_config("demo", ["model.sparse_backend=torch"], check_paths=False)
    assert cfg.model.sparse_backend == "torch"
    with pytest.raises(ConfigError) as info:
        load_config("demo", ["model.sparse_backend=minkowski"], check_paths=False)
    assert (
        "model.sparse_backend: expected one of 'auto', 'spconv', 'torch', got 'minkowski'"
        in str(info.value)
    )


def test_sparse_backend_spconv_without_spconv_is_a_config_problem() -> None:
    import importlib.util

    if importlib.util.find_spec("spconv") is not None:
        assert load_config("demo", ["model.sparse_backend=spconv"], check_paths=False)
        return
    with pytest.raises(ConfigError, match="'spconv' but spconv is not installed here"):
        load_config("demo", ["model.sparse_backend=spconv"], check_paths=False)


def test_recipes_name_the_sparse_backend_they_run_on() -> None:
    from olivine_models import create_point_encoder
    from olivine_train.recipes.common import describe_student

    cfg = load_config("demo", ["model.sparse_backend=torch"], check_paths=False)
    backbone = create_point_encoder(cfg.model.point_encoder, backend=cfg.model.sparse_backend)
    assert describe_student(cfg, backbone) == "student: minkunet_tiny on the torch sparse backend"
    auto = load_config("demo", check_paths=False)
    line = describe_student(auto, create_point_encoder("minkunet_tiny", backend="torch"))
    assert line.endswith("on the torch sparse backend (auto)")
