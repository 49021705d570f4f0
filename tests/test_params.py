import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from cxr.params import ParamsError, flatten, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def with_overrides(override: dict) -> dict:
    """params.yaml's mapping with ``override`` merged in, key by key."""
    return _merge(DEFAULT, override)


def test_repo_params_yaml_loads_and_matches_design_keys():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "phantoms"
    assert params.sample.patient_fraction == 0.5
    assert params.split.by_patient is True
    assert params.split.fractions.as_tuple() == (0.7, 0.1, 0.2)


@pytest.mark.parametrize("key", ["seed", "split.stratifier", "prepare", "baseline.thumbnail",
                                 "models.fusion.options", "data.bbox_frame.height"])
def test_a_missing_key_is_named_and_nothing_has_a_default(key):
    raw = copy.deepcopy(DEFAULT)
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(ParamsError, match=f"missing key {key.replace('.', '[.]')};"):
        params_from_dict(raw)


def test_no_schema_field_has_a_default():
    from cxr import params as schema
    from cxr.training.fit import TrainConfig

    classes = [TrainConfig] + [value for value in vars(schema).values()
                               if dataclasses.is_dataclass(value) and isinstance(value, type)
                               and value.__module__ == schema.__name__ and value is not schema.Rule]
    with_defaults = [f"{cls.__name__}.{f.name}" for cls in classes
                     for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING]
    assert with_defaults == []


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
        ({"split": {"method": "official", "official_test_list": ""}}, "split.official_train_val_list"),
        ({"split": {"method": "official", "official_train_val_list": "a.txt"}},
         "split.official_test_list = 'configs/no_official_list.txt'; expected .*test_list.txt.*nihcc"),
        ({"data": {"bbox_frame": {"width": 0, "height": 1024}}}, "data.bbox_frame.width = 0"),
        ({"models": {"fusion": {"schedule": "step"}}}, "models.fusion.schedule = .step.; allowed"),
        ({"models": {"fusion": {"head_epochs": 0, "finetune_epochs": 0}}}, "a model must train"),
        ({"baseline": {"thumbnail": 24}}, "baseline.thumbnail = 24; expected a divisor"),
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
        ({"prepare": {"processes": 0}}, "prepare.processes = 0; expected a positive integer"),
        ({"mc_dropout": {"layers": "backbone"}}, "mc_dropout.layers = .backbone.; allowed"),
        ({"evaluate": {"n_bootstrap": 10}}, "unknown key evaluate.n_bootstrap"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        params_from_dict(with_overrides(raw))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_localize_block_is_typed_and_flattens():
    raw = with_overrides({"localize": {"max_images": 40, "examples_per_finding": 2},
                          "loss": {"gamma": 2}})
    params = params_from_dict(raw)
    assert params.localize.max_images == 40 and params.localize.iou_threshold == 0.5
    flat = flatten(params)
    assert flat["loss.gamma"] == 2.0
    assert flat["split.fractions.test"] == 0.2
    assert flat["seed"] == 42
    assert flat["localize.examples_per_finding"] == 2
    raw["localize"]["examples"] = 4
    with pytest.raises(ParamsError, match="unknown key localize.examples"):
        params_from_dict(raw)
    del raw["localize"]["examples"]
    raw["localize"]["iou_threshold"] = 0
    with pytest.raises(ParamsError, match=r"localize.iou_threshold = 0\.0"):
        params_from_dict(raw)


def test_flatten_names_every_key_of_params_yaml():
    def leaves(node, prefix=""):
        if not isinstance(node, dict):
            return {prefix.rstrip(".")}
        return set().union(set(), *(leaves(v, f"{prefix}{k}.") for k, v in node.items()))

    assert set(flatten(load_params(REPO / "params.yaml"))) == leaves(DEFAULT)
