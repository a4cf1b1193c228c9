"""params.yaml and its schema: validation, defaults, error messages."""

from pathlib import Path

import pytest
import yaml

from pipeline_steps.config import (
    REPO_ROOT,
    ParamsError,
    demo_settings,
    load_params,
    validate_params,
)


def repo_params() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repo_params_are_valid():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params["train_student"]["weights"]["mtpkdot"] == {
        "task": 0.8,
        "ot": 0.2,
        "centroid": 0.2,
    }


def test_defaults_are_filled_for_missing_sections():
    params = validate_params({"run": {}, "datasets": {"d": {"layout": "biovid", "root": "x"}}})
    assert params["train_fusion_teacher"]["fusion"] == "concat"
    assert params["datasets"]["d"]["classes"] == ["BL1", "PA4"]
    assert params["run"]["device"] == "auto"


def test_bad_enum_names_key_and_allowed_values():
    params = repo_params()
    params["train_fusion_teacher"]["fusion"] = "lstm"
    with pytest.raises(ParamsError) as err:
        validate_params(params)
    assert "train_fusion_teacher.fusion" in str(err.value)
    assert "concat, jca, jmt" in str(err.value)


def test_unknown_key_and_bad_type_are_refused():
    params = repo_params()
    params["train_student"]["epochz"] = 3
    params["index_dataset"]["n_folds"] = "four"
    with pytest.raises(ParamsError) as err:
        validate_params(params)
    assert "epochz" in str(err.value)
    assert "index_dataset.n_folds" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_cross_fit_of_one_part_is_refused():
    params = repo_params()
    params["align_teacher_pool"]["cross_fit"] = 1
    with pytest.raises(ParamsError, match="align_teacher_pool.cross_fit"):
        validate_params(params)
    params["align_teacher_pool"]["cross_fit"] = 0
    assert validate_params(params)["train_student"]["student"] == "finetune"


def test_demo_settings_override_make_demo_data_for_one_dataset():
    params = repo_params()
    params["datasets"]["biovid_label"] = {
        **params["datasets"]["biovid"],
        "root": "data/x",
        "demo_settings": {"scenario": "label", "n_subjects": 4},
    }
    params = validate_params(params)
    assert demo_settings(params, "biovid")["scenario"] == "latent"
    label = demo_settings(params, "biovid_label")
    assert (label["scenario"], label["n_subjects"]) == ("label", 4)
    assert label["seed"] == params["make_demo_data"]["seed"]


def test_bad_demo_settings_name_the_dataset_and_key():
    params = repo_params()
    params["datasets"]["biovid"]["demo_settings"] = {"scenario": "both", "colour": 1}
    with pytest.raises(ParamsError) as err:
        validate_params(params)
    assert "datasets.biovid.demo_settings.scenario" in str(err.value)
    assert "latent, label" in str(err.value)
    assert "colour" in str(err.value)
