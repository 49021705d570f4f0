"""Every params file is complete and valid, and every param dvc.yaml names resolves in it.

params.yaml and each file in configs/ are whole params files: the schema (cxr.params) holds no
values, so a file that leaves a key out fails here, not halfway through `dvc repro`.
"""

import re
from pathlib import Path

import pytest
import yaml

from cxr.params import ParamsError, load_params, params_from_dict, resolve_key

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILES = [REPO / "params.yaml", *sorted((REPO / "configs").glob("*.yaml"))]
# Keys in which the laptop trial may differ from the study: sizes, not method.
LAPTOP_SIZES = {
    "sample.patient_fraction", "pipeline.image_size", "pipeline.parallel_calls",
    "pipeline.prefetch", "prepare.processes", "train.weights", "train.deterministic",
    "mlflow.experiment", "evaluate.n_boot", "localize.max_images",
    *(f"models.{name}.{key}" for name in ("simple_cnn", "densenet121", "efficientnetb0", "fusion")
      for key in ("head_epochs", "finetune_epochs")),
}


def dvc_param_keys(dvc_yaml: dict, models) -> set[str]:
    """Every dotted param key dvc.yaml depends on: the stages' `params:` entries and the
    `${...}` interpolations in its commands and paths, `foreach: ${models}` expanded."""
    keys: set[str] = set()
    for stage in dvc_yaml["stages"].values():
        body = stage.get("do", stage)
        names = list(models) if "foreach" in stage else [None]
        for name in names:
            for entry in body.get("params", []):
                for key in ([entry] if isinstance(entry, str) else list(entry)):
                    keys.add(key.replace("${key}", name) if name else key)
            for found in re.findall(r"\$\{([^}]+)\}", yaml.safe_dump(body)):
                if found not in ("key", "item"):
                    keys.add(found)
    return keys


def _flat_keys(node, prefix=""):
    if not isinstance(node, dict) or not node:
        return {prefix.rstrip(".")}
    return set().union(*(_flat_keys(v, f"{prefix}{k}.") for k, v in node.items()))


def problems(raw: dict, dvc_yaml: dict) -> list[str]:
    """What stops `dvc repro` on this params mapping: schema errors, then unresolved keys."""
    try:
        params_from_dict(raw)
    except ParamsError as error:
        return [str(error)]
    missing = []
    for key in sorted(dvc_param_keys(dvc_yaml, raw["models"])):
        try:
            resolve_key(raw, key)
        except KeyError as error:
            missing.append(f"{key}: {error.args[0]} missing")
    return missing


@pytest.fixture(scope="module")
def dvc_yaml():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.mark.parametrize("path", PARAMS_FILES, ids=lambda p: p.name)
def test_every_params_file_validates_and_resolves_every_dvc_param(path, dvc_yaml):
    raw = yaml.safe_load(path.read_text())
    assert problems(raw, dvc_yaml) == []
    load_params(path)


@pytest.mark.parametrize("path", PARAMS_FILES[1:], ids=lambda p: p.name)
def test_every_config_has_exactly_the_keys_of_params_yaml(path):
    default = _flat_keys(yaml.safe_load((REPO / "params.yaml").read_text()))
    config = _flat_keys(yaml.safe_load(path.read_text()))
    # Model options are per-architecture keyword arguments: their keys may differ.
    def general(keys):
        return {k for k in keys if ".options." not in k}
    assert sorted(general(default) ^ general(config)) == []


def test_a_config_that_leans_on_defaults_is_refused(dvc_yaml):
    """The style of config that used to be accepted: only the keys that differ, the rest
    taken from code. It must fail, naming the first key it lacks."""
    partial = {"seed": 42, "data": {"source": "nih", "csv": "a.csv", "images_dir": "imgs",
                                    "bbox_csv": "b.csv", "check_images": True},
               "split": {"method": "iterative", "by_patient": True}}
    found = problems(partial, dvc_yaml)
    assert len(found) == 1 and "missing key phantoms;" in found[0]
    partial.update({key: value for key, value in
                    yaml.safe_load((REPO / "params.yaml").read_text()).items()
                    if key not in partial})
    found = problems(partial, dvc_yaml)
    assert len(found) == 1 and "missing key data.bbox_frame;" in found[0]


def test_dvc_param_keys_sees_params_entries_and_interpolations(dvc_yaml):
    keys = dvc_param_keys(dvc_yaml, ["simple_cnn", "fusion"])
    assert {"split.stratifier", "models.fusion", "data.csv", "data.images_dir",
            "split.official_test_list", "data.bbox_csv", "prepare"} <= keys
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    del raw["split"]["stratifier"]
    with pytest.raises(KeyError, match="split.stratifier"):
        resolve_key(raw, "split.stratifier")


def test_the_study_config_holds_the_study():
    params = load_params(REPO / "configs" / "nih-paper.yaml")
    assert params.data.source == "nih"
    assert (params.pipeline.image_size, params.pipeline.batch_size) == (224, 32)
    assert params.train.weights == "imagenet"
    augment = params.pipeline.augment
    assert (augment.flip, augment.rotation, augment.zoom, augment.brightness) == (True, 0.1, 0.1, 0.1)
    assert (params.loss.name, params.loss.alpha, params.loss.gamma) == ("focal", 0.25, 2.0)
    assert (params.mc_dropout.passes, params.mc_dropout.threshold) == (25, 0.1)
    assert set(params.models) == {"simple_cnn", "densenet121", "efficientnetb0", "fusion"}
    for name, model in params.models.items():
        assert model.head_epochs + model.finetune_epochs == 25, name
        assert model.head_learning_rate == 1e-3 and model.min_learning_rate == 1e-5, name
        assert model.weight_decay == 0.0 and model.schedule == "plateau", name  # Adam
        if name != "simple_cnn":
            assert model.finetune_learning_rate == 1e-5, name
            assert model.options.get("batchnorm_momentum") == 0.99, name  # Keras' own
    assert not params.models["efficientnetb0"].options["zero_init_residual"]
    # With split.method iterative no stage depends on NIH's list files.
    assert params.split.method == "iterative"
    assert params.split.official_train_val_list == params.split.official_test_list \
        == "configs/no_official_list.txt"


def test_the_laptop_trial_is_the_study_but_for_its_sizes():
    def flat(path):
        raw = yaml.safe_load(path.read_text())
        return {key: resolve_key(raw, key) for key in _flat_keys(raw)}

    paper, laptop = flat(REPO / "configs/nih-paper.yaml"), flat(REPO / "configs/nih-laptop.yaml")
    differ = {key for key in paper if paper[key] != laptop[key]}
    assert differ <= LAPTOP_SIZES, sorted(differ - LAPTOP_SIZES)


def test_the_inputs_check_names_what_a_real_data_run_lacks(tmp_path, monkeypatch):
    from cxr.params import main, missing_inputs

    monkeypatch.chdir(tmp_path)
    params = load_params(REPO / "configs" / "nih-paper.yaml")
    found = missing_inputs(params)
    assert [line.split(" = ")[0] for line in found] == ["data.csv", "data.images_dir",
                                                       "data.bbox_csv"]
    nih = tmp_path / "data/raw/nih"
    nih.mkdir(parents=True)
    for name in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv"):
        (nih / name).write_text("")
    assert missing_inputs(params) == []
    raw = yaml.safe_load((REPO / "configs" / "nih-paper.yaml").read_text())
    raw["split"].update(method="official", official_train_val_list=str(nih / "train_val_list.txt"),
                        official_test_list=str(nih / "test_list.txt"))
    (nih / "test_list.txt").write_text("")
    (found,) = missing_inputs(params_from_dict(raw))
    assert "train_val_list.txt" in found and "test_list.txt" in found
    assert "nihcc.app.box.com" in found and "not found: " + str(nih / "train_val_list.txt") in found
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["params.yaml"]) == 1
    (nih / "train_val_list.txt").write_text("")
    assert main(["params.yaml"]) == 0
    # The phantom default writes its own data: nothing to find first.
    assert missing_inputs(load_params(REPO / "params.yaml")) == []
