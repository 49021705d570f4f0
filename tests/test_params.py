import dataclasses
from pathlib import Path

import pytest
import yaml

from cxr.params import Params, ParamsError, flatten, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_loads_and_matches_design_keys():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "phantoms"
    assert params.sample.patient_fraction == 0.5
    assert params.split.by_patient is True
    assert params.split.fractions.as_tuple() == (0.7, 0.1, 0.2)


def test_defaults_equal_an_empty_file():
    assert params_from_dict({}) == Params()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sample": {"patient_fracton": 0.5}}, "unknown key sample.patient_fracton"),
        ({"datta": {}}, "unknown key datta"),
        ({"sample": {"patient_fraction": 1.5}}, "sample.patient_fraction = 1.5"),
        ({"sample": {"patient_fraction": "half"}}, "expected a number"),
        ({"split": {"by_patient": "yes"}}, "split.by_patient = 'yes'; expected true or false"),
        ({"data": {"source": "chexpert"}}, "data.source = 'chexpert'; allowed: 'phantoms', 'nih'"),
        ({"split": {"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}}, "train + val + test = 1"),
        ({"split": {"fractions": {"train": 0.0, "val": 0.5, "test": 0.5}}}, "a positive fraction"),
        ({"split": {"method": "official", "official_test_list": ""}}, "split.official_test_list"),
        ({"pipeline": {"image_size": 16}}, "pipeline.image_size = 16"),
        ({"pipeline": {"batch_size": 1.5}}, "pipeline.batch_size = 1.5; expected an integer"),
        ({"seed": True}, "seed = True; expected an integer"),
        ({"models": {"fusion": {"head_epoch": 2}}}, "unknown key models.fusion.head_epoch"),
        ({"models": {"fusion": {"patience": 0}}}, "models.fusion.patience = 0"),
        ({"models": {"fusion": {"weight_decay": -0.1}}}, "models.fusion.weight_decay = -0.1"),
        ({"models": {"fusion": {"weight_decay": 1.0}}}, "models.fusion.weight_decay = 1.0"),
        ({"models": {"fusion": {"weight_decay": float("nan")}}}, "models.fusion.weight_decay = nan"),
        ({"loss": {"name": "mse"}}, "loss.name = .mse.; allowed"),
        ({"train": {"strategy": "tpu"}}, "train.strategy = .tpu."),
        ({"train": {"precision_policy": "float16"}}, "train.precision_policy = .float16."),
        ({"mc_dropout": {"passes": 1}}, "mc_dropout.passes = 1"),
        ({"prepare": {"processes": 0}}, "prepare.processes = 0; expected at least 1"),
        ({"mc_dropout": {"layers": "backbone"}}, "mc_dropout.layers = .backbone.; allowed"),
        ({"evaluate": {"n_bootstrap": 10}}, "unknown key evaluate.n_bootstrap"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        params_from_dict(raw)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_localize_block_is_typed_and_flattens():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["localize"] = {"max_images": 40, "examples_per_finding": 2}
    raw["loss"] = {"name": "focal", "gamma": 2.0}
    params = params_from_dict(raw)
    assert params.localize.max_images == 40 and params.localize.iou_threshold == 0.5
    flat = flatten(params)
    assert flat["loss.gamma"] == 2.0
    assert flat["split.fractions.test"] == 0.2
    assert flat["seed"] == 42
    assert flat["localize.examples_per_finding"] == 2
    raw["localize"] = {"examples": 4}
    with pytest.raises(ParamsError, match="unknown key localize.examples"):
        params_from_dict(raw)
    raw["localize"] = {"iou_threshold": 0}
    with pytest.raises(ParamsError, match=r"localize.iou_threshold = 0\.0"):
        params_from_dict(raw)


def test_nih_paper_config_loads_with_the_study_settings():
    params = load_params(REPO / "configs" / "nih-paper.yaml")
    assert params.data.source == "nih"
    assert params.pipeline.image_size == 224 and params.pipeline.batch_size == 32
    assert params.train.weights == "imagenet"
    assert set(params.models) == {"simple_cnn", "densenet121", "efficientnetb0", "fusion"}
    fusion = params.models["fusion"]
    assert fusion.head_epochs + fusion.finetune_epochs == 25
    assert (fusion.head_learning_rate, fusion.finetune_learning_rate) == (1e-3, 1e-5)
    assert params.loss.alpha == 0.25 and params.loss.gamma == 2.0


def _flatten_yaml(node, prefix=""):
    if not isinstance(node, dict) or not node:
        return {prefix.rstrip("."): node}
    flat = {}
    for key, value in node.items():
        flat.update(_flatten_yaml(value, f"{prefix}{key}."))
    return flat


def test_every_value_in_params_yaml_is_the_schema_default_and_every_default_is_in_the_file():
    """params.yaml is the truth; params.py must say the same thing, key by key."""
    in_file = _flatten_yaml(yaml.safe_load((REPO / "params.yaml").read_text()))
    in_schema = flatten(Params())
    assert sorted(set(in_schema) - set(in_file)) == [], "schema keys missing from params.yaml"
    assert sorted(set(in_file) - set(in_schema)) == [], "params.yaml keys unknown to the schema"
    disagreements = {key: (in_file[key], in_schema[key]) for key in in_file
                     if in_file[key] != in_schema[key]
                     or isinstance(in_file[key], bool) != isinstance(in_schema[key], bool)}
    assert disagreements == {}, "params.yaml value vs params.py default"


def test_train_config_defaults_are_the_model_params_defaults():
    from cxr.params import ModelParams
    from cxr.training.fit import TrainConfig

    schema = {f.name: f.default for f in dataclasses.fields(ModelParams) if f.name != "options"}
    train = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in schema}
    assert train == schema
