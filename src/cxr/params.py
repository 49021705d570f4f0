"""Load params.yaml into typed, validated objects.

Every knob of the pipeline lives in params.yaml; this module is the only one that knows its
shape. An unknown key, a missing key or a value of the wrong type is an error that names the
dotted key, what was given and what is allowed, so a typo in `dvc exp run -S` fails loudly
instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """params.yaml (or an override) does not fit the schema."""


# --------------------------------------------------------------------------- schema
# The schema holds types, ranges and allowed values; the values themselves live in params.yaml
# and in each complete file in configs/. No field has a default: a file that leaves a key out is
# an error naming it, so a config can never silently train with another config's value.


@dataclass(frozen=True)
class Rule:
    """A range check on one value: ``test(value)`` must hold, else "expected ``expected``"."""

    test: Callable[[Any], bool]
    expected: str


def rule(test: Callable[[Any], bool], expected: str):
    """A required dataclass field that carries its check (read by :func:`_build`)."""
    return field(metadata={"rule": Rule(test, expected)})


def at_least(minimum: int):
    return rule(lambda v: v >= minimum, "a positive integer" if minimum == 1
                else f"at least {minimum}")


def non_negative():
    return rule(lambda v: v >= 0, "a non-negative number")


def positive():
    return rule(lambda v: v > 0, "a positive number")


def fraction(low_open: bool = False, high_open: bool = True, what: str = "a fraction"):
    """A number in [0, 1), (0, 1], ... (NaN fails every comparison, so it is refused too)."""
    low, high = ("(" if low_open else "["), (")" if high_open else "]")
    return rule(lambda v: (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1),
                f"{what} in {low}0, 1{high}")


@dataclass(frozen=True)
class BoxFrame:
    """The pixel frame the box file's coordinates are written in (NIH: its 1024 x 1024 PNGs),
    whatever the size of the image files on disk."""

    width: int = at_least(1)
    height: int = at_least(1)


@dataclass(frozen=True)
class DataParams:
    source: Literal["phantoms", "nih"]
    csv: str
    # searched recursively: the download (and the phantoms) nest images_001/images/*.png
    images_dir: str
    bbox_csv: str
    bbox_frame: BoxFrame
    # false = labels-only: ingest/sample/split read the CSV alone (plan splits before the
    # 45 GB download has finished). Training needs the images.
    check_images: bool


@dataclass(frozen=True)
class PhantomParams:
    n_patients: int = at_least(1)
    image_size: int = at_least(32)
    label_noise: float = rule(lambda v: 0 <= v < 0.5, "a fraction in [0, 0.5)")
    # Each sign's strength is drawn uniformly in [strength_min, strength_max]; low = subtle.
    strength_min: float = fraction(high_open=False)
    strength_max: float = fraction(high_open=False)
    processes: int = at_least(1)


@dataclass(frozen=True)
class BaselineParams:
    """The linear baseline stage (cxr.evaluation.baseline)."""

    thumbnail: int = at_least(1)     # side of the thumbnails; pipeline.image_size a multiple
    regularization: float = positive()  # scikit-learn's C: inverse L2 strength


@dataclass(frozen=True)
class SampleParams:
    patient_fraction: float = fraction(low_open=True, high_open=False, what="a number")


@dataclass(frozen=True)
class SplitFractions:
    train: float = rule(lambda v: v > 0, "a positive fraction")
    val: float = rule(lambda v: v >= 0, "a non-negative fraction")
    test: float = rule(lambda v: v >= 0, "a non-negative fraction")

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


# Where NIH publishes ChestX-ray14 and its official lists (named in errors).
NIH_DOWNLOAD = "https://nihcc.app.box.com/v/ChestXray-NIHCC"


@dataclass(frozen=True)
class SplitParams:
    # iterative: iterative stratification (patient-level unless by_patient is false);
    # official: NIH's train_val_list.txt / test_list.txt, val carved from train_val by patient.
    method: Literal["iterative", "official"]
    by_patient: bool
    # weighted: our iterative stratification balancing images while assigning whole patients;
    # iterstrat: iterstrat's MultilabelStratifiedShuffleSplit on one row per patient.
    stratifier: Literal["weighted", "iterstrat"]
    fractions: SplitFractions
    # NIH's lists; with method iterative both name the empty placeholder below, so that no
    # stage depends on files a user need not have.
    official_train_val_list: str
    official_test_list: str


# The empty file the split stage depends on when it reads no official list (dvc.yaml needs a
# path either way).
NO_OFFICIAL_LIST = "configs/no_official_list.txt"


@dataclass(frozen=True)
class AugmentParams:
    """Keras preprocessing-layer factors (rotation: a fraction of 2 pi)."""

    flip: bool
    rotation: float = fraction(what="a factor")
    zoom: float = fraction(what="a factor")
    brightness: float = fraction(what="a factor")


@dataclass(frozen=True)
class PipelineParams:
    image_size: int = at_least(32)
    batch_size: int = at_least(1)
    augment: AugmentParams
    # Explicit parallelism instead of AUTOTUNE: autotuned pipelines were seen to stall for
    # seconds at the end of fit/predict on small CPUs.
    parallel_calls: int = at_least(1)
    prefetch: int = at_least(1)


@dataclass(frozen=True)
class PrepareParams:
    """The prepare stage: every image decoded and resized once (cxr.data.prepare)."""

    # Decoding threads; the store's bytes do not depend on it.
    processes: int = at_least(1)


@dataclass(frozen=True)
class TrainParams:
    """Settings shared by every model's training."""

    # Backbone weights: "none" (random init), "imagenet" (Keras download + cache), a path to a
    # local weights file, or a path to a directory holding the Keras ImageNet no-top files of
    # the model's backbones under their Keras names (offline ImageNet).
    weights: str
    mixed_precision: bool             # GPUs: 16-bit compute, float32 variables and outputs
    # The policy used when mixed_precision is true: float16 (loss-scaled; V100 and later)
    # or bfloat16 (float32's range; Ampere GPUs and later, TPUs).
    precision_policy: Literal["mixed_float16", "mixed_bfloat16"]
    jit_compile: bool                 # GPUs: XLA
    strategy: Literal["default", "mirrored", "multiworker"]
    deterministic: bool               # op determinism (slower on GPU; free on CPU)
    verbose: int = rule(lambda v: v in (0, 1, 2), "0, 1 or 2")
    # Start the output bias at each finding's log-odds in the training split (Lin et al.).
    prior_bias: bool


@dataclass(frozen=True)
class LossParams:
    name: Literal["focal", "bce", "weighted_bce"]
    alpha: float = fraction(high_open=False, what="a number")
    gamma: float = non_negative()


@dataclass(frozen=True)
class ModelParams:
    """One model's training schedule and architecture options (models.<name>)."""

    head_epochs: int = rule(lambda v: v >= 0, "a non-negative integer")
    head_learning_rate: float = positive()
    finetune_epochs: int = rule(lambda v: v >= 0, "a non-negative integer")
    finetune_learning_rate: float = positive()
    patience: int = at_least(1)
    reduce_lr_patience: int = at_least(1)
    reduce_lr_factor: float = fraction(low_open=True, what="a factor")
    min_learning_rate: float = positive()
    schedule: Literal["plateau", "cosine"]  # ReduceLROnPlateau | warm-up + cosine decay
    warmup_epochs: int = rule(lambda v: v >= 0, "a non-negative integer")  # cosine only
    # Decoupled weight decay (AdamW, Loshchilov & Hutter), per step: w -= weight_decay * lr * w,
    # on every kernel (not biases, not BatchNorm scales and offsets). 0 = Adam, the study's.
    weight_decay: float = fraction(what="a number")
    # Keyword options of cxr.models.build (e.g. fusion: dense_cut, efficient_cut); {} for none.
    options: dict[str, Any]


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str                 # "" = SQLite mlflow.db in the project root
    experiment: str


@dataclass(frozen=True)
class McDropoutParams:
    passes: int = at_least(2)         # T stochastic passes per image
    threshold: float = positive()     # refer a finding when its MC std exceeds this
    # Which Dropout layers are sampled: "head" (those after the `features` pool; backbone
    # runs once: fast) or "all" (every Dropout layer, EfficientNet's stochastic depth too).
    layers: Literal["head", "all"]


@dataclass(frozen=True)
class SubgroupParams:
    """The evaluate stage's subgroup audit by sex, view and age band (cxr.evaluation.subgroups)."""

    # Lower edges of the age bands in years; the last band is open ([0, 20, 40, 60, 80]:
    # 0-20, 20-40, 40-60, 60-80, 80+).
    age_edges: list[int] = rule(
        lambda v: bool(v) and v[0] >= 0 and all(b > a for a, b in zip(v, v[1:], strict=False)),
        "increasing non-negative ages in years, such as [0, 20, 40, 60, 80]")
    # A group with fewer images, or fewer images with a finding, is reported as too small.
    min_images: int = at_least(1)
    min_positives: int = at_least(1)


@dataclass(frozen=True)
class EvaluateParams:
    n_boot: int = at_least(10)        # bootstrap resamples of patients for every CI
    ci: float = fraction(low_open=True, what="a level")
    calibration_bins: int = at_least(2)
    threshold_method: Literal["youden", "f1"]   # operating point, chosen on val
    batch_size: int = at_least(1)
    subgroups: SubgroupParams


@dataclass(frozen=True)
class LocalizeParams:
    """Grad-CAM heatmaps scored against lesion boxes (the localize stage)."""

    max_images: int = at_least(1)     # test images with a box that are scored, drawn by seed
    # heatmap binarised at this fraction of its maximum
    iou_threshold: float = fraction(low_open=True, high_open=False,
                                    what="a fraction of the heatmap's maximum")
    # input pixels added around a box for the pointing game
    pointing_tolerance: float = rule(lambda v: v >= 0, "a non-negative number of pixels")
    examples_per_finding: int = at_least(1)  # overlays per finding in the examples figure
    batch_size: int = at_least(1)     # images per Grad-CAM gradient computation


@dataclass(frozen=True)
class Params:
    seed: int
    data: DataParams
    phantoms: PhantomParams
    sample: SampleParams
    split: SplitParams
    pipeline: PipelineParams
    prepare: PrepareParams
    baseline: BaselineParams
    train: TrainParams
    loss: LossParams
    models: dict[str, ModelParams]
    mlflow: MlflowParams
    mc_dropout: McDropoutParams
    evaluate: EvaluateParams
    localize: LocalizeParams


# --------------------------------------------------------------------------- loading


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return params_from_dict(raw or {}, source=str(path))


def params_from_dict(raw: dict, source: str = "params") -> Params:
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    params = _build(Params, raw, prefix="", source=source)
    validate(params, source)
    return params


def _build(cls, raw: Any, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, "
                          f"got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(
            f"{source}: unknown key {prefix}{unknown[0]!s}; allowed under "
            f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(fields))}"
        )
    missing = [name for name in fields if name not in raw]
    if missing:
        raise ParamsError(
            f"{source}: missing key {prefix}{missing[0]}; a params file names every key "
            f"(params.yaml and each file in configs/ are complete: copy the key from one of "
            f"them)")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        value = _coerce(hints[name], raw[name], key, source)
        check = spec.metadata.get("rule")
        if check is not None and not check.test(value):
            raise ParamsError(f"{source}: {key} = {value!r}; expected {check.expected}")
        values[name] = value
    return cls(**values)


def _coerce(hint, value, key: str, source: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=key + ".", source=source)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ParamsError(f"{source}: {key} = {value!r}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        raise NotImplementedError(key)  # not used in the schema
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{source}: {key} = {value!r}; expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{source}: {key} = {value!r}; expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{source}: {key} = {value!r}; expected a number")
        return float(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ParamsError(f"{source}: {key} = {value!r}; expected a string")
        return value
    if origin is dict:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ParamsError(f"{source}: {key} = {value!r}; expected a mapping")
        value_type = typing.get_args(hint)[1]
        if dataclasses.is_dataclass(value_type):
            return {name: _build(value_type, item or {}, prefix=f"{key}.{name}.", source=source)
                    for name, item in value.items()}
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{source}: {key} = {value!r}; expected a list")
        (item,) = typing.get_args(hint)
        return [_coerce(item, entry, f"{key}[{index}]", source)
                for index, entry in enumerate(value)]
    raise NotImplementedError(f"no coercion for {key}: {hint}")


def validate(params: Params, source: str = "params") -> None:
    """Checks that span several keys (each key's own range is its field's rule)."""

    def fail(key: str, value, expected: str):
        raise ParamsError(f"{source}: {key} = {value!r}; expected {expected}")

    fractions = params.split.fractions
    if abs(sum(fractions.as_tuple()) - 1) > 1e-6:
        fail("split.fractions", fractions.as_tuple(), "train + val + test = 1")
    if params.split.method == "official":
        lists = {key: getattr(params.split, key)
                 for key in ("official_train_val_list", "official_test_list")}
        placeholders = [key for key, path in lists.items() if path in ("", NO_OFFICIAL_LIST)]
        if placeholders:
            fail(f"split.{placeholders[0]}", lists[placeholders[0]],
                 "with split.method official, paths to both of NIH's lists: "
                 "split.official_train_val_list (train_val_list.txt) and "
                 f"split.official_test_list (test_list.txt), published at {NIH_DOWNLOAD}")
        if not params.split.by_patient:
            fail("split.by_patient", False, "true with split.method official")
    if params.phantoms.strength_min > params.phantoms.strength_max:
        fail("phantoms.strength_min", params.phantoms.strength_min,
             f"at most phantoms.strength_max ({params.phantoms.strength_max})")
    if params.pipeline.image_size % params.baseline.thumbnail:
        fail("baseline.thumbnail", params.baseline.thumbnail,
             f"a divisor of pipeline.image_size ({params.pipeline.image_size})")
    subgroups = params.evaluate.subgroups
    if subgroups.min_positives > subgroups.min_images:
        fail("evaluate.subgroups.min_positives", subgroups.min_positives,
             f"at most evaluate.subgroups.min_images ({subgroups.min_images})")
    for name, model in params.models.items():
        if model.head_epochs + model.finetune_epochs < 1:
            fail(f"models.{name}.head_epochs", model.head_epochs,
                 "head_epochs + finetune_epochs >= 1 (a model must train)")


def resolve_key(raw: dict, key: str) -> Any:
    """The value at a dotted ``key`` of a params mapping; KeyError names the first missing
    part (dvc.yaml's `params:` entries are such keys)."""
    node: Any = raw
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(".".join(key.split(".")[:depth + 1]))
        node = node[part]
    return node


def flatten(params: Params | dict, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': value} view, for MLflow and reports."""
    raw = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else params
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def missing_inputs(params: Params) -> list[str]:
    """The input files a params file names that are not there, each with what it is for.

    Only for ``data.source: nih`` (the phantoms stage writes its own data). NIH's official
    lists count only with ``split.method: official``; both are named when either is absent.
    """
    if params.data.source != "nih":
        return []
    data = params.data
    wanted = [(data.csv, "data.csv", "NIH's Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv)")]
    if data.check_images:
        wanted += [(data.images_dir, "data.images_dir", "the folder holding images_001 ... "
                    "images_012 (searched recursively)"),
                   (data.bbox_csv, "data.bbox_csv", "NIH's BBox_List_2017.csv")]
    problems = [f"{key} = {path!r}: not found; expected {what}"
                for path, key, what in wanted if not Path(path).exists()]
    if params.split.method == "official":
        lists = [params.split.official_train_val_list, params.split.official_test_list]
        absent = [path for path in lists if not Path(path).is_file()]
        if absent:
            problems.append(
                f"split.method is official, so the split needs NIH's two lists, "
                f"split.official_train_val_list = {lists[0]!r} (train_val_list.txt) and "
                f"split.official_test_list = {lists[1]!r} (test_list.txt); not found: "
                f"{', '.join(absent)}. NIH publishes both beside the images at {NIH_DOWNLOAD} "
                f"(or use split.method: iterative, which needs neither)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m cxr.params [PARAMS]``: validate a params file and the inputs it names, before
    `dvc repro` meets them (``make repro`` runs it first)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "params.yaml")
    try:
        params = load_params(path)
    except ParamsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    problems = missing_inputs(params)
    for problem in problems:
        print(f"error: {path}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
