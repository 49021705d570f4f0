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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cxr.model_defaults import MODEL_DEFAULTS


class ParamsError(ValueError):
    """params.yaml (or an override) does not fit the schema."""


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class DataParams:
    source: Literal["phantoms", "nih"] = "phantoms"
    csv: str = "data/raw/phantoms/Data_Entry_2017.csv"
    # searched recursively: the download (and the phantoms) nest images_001/images/*.png
    images_dir: str = "data/raw/phantoms"
    bbox_csv: str = "data/raw/phantoms/BBox_List_2017.csv"
    # false = labels-only: ingest/sample/split read the CSV alone (plan splits before the
    # 45 GB download has finished). Training needs the images.
    check_images: bool = True


@dataclass(frozen=True)
class PhantomParams:
    n_patients: int = 4000
    image_size: int = 256
    label_noise: float = 0.02
    # Each sign's strength is drawn uniformly in [strength_min, strength_max]; low = subtle.
    strength_min: float = 0.15
    strength_max: float = 1.0
    processes: int = 2


@dataclass(frozen=True)
class BaselineParams:
    """The linear baseline stage (cxr.evaluation.baseline)."""

    thumbnail: int = 16           # side of the thumbnails; pipeline.image_size a multiple of it
    regularization: float = 0.05  # scikit-learn's C: inverse L2 strength


@dataclass(frozen=True)
class SampleParams:
    patient_fraction: float = 0.5


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


@dataclass(frozen=True)
class SplitParams:
    # iterative: iterative stratification (patient-level unless by_patient is false);
    # official: NIH's train_val_list.txt / test_list.txt, val carved from train_val by patient.
    method: Literal["iterative", "official"] = "iterative"
    by_patient: bool = True
    # weighted: our iterative stratification balancing images while assigning whole patients;
    # iterstrat: iterstrat's MultilabelStratifiedShuffleSplit on one row per patient.
    stratifier: Literal["weighted", "iterstrat"] = "weighted"
    fractions: SplitFractions = field(default_factory=SplitFractions)
    official_train_val_list: str = "configs/no_official_list.txt"
    official_test_list: str = "configs/no_official_list.txt"


@dataclass(frozen=True)
class AugmentParams:
    """Keras preprocessing-layer factors (rotation: a fraction of 2 pi). The study's rotation
    and zoom (0.1 each) are in configs/nih-paper.yaml; params.yaml says why they are off on the
    phantoms."""

    flip: bool = True
    rotation: float = 0.0
    zoom: float = 0.0
    brightness: float = 0.1


@dataclass(frozen=True)
class PipelineParams:
    image_size: int = 64
    batch_size: int = 32
    augment: AugmentParams = field(default_factory=AugmentParams)
    # Explicit parallelism instead of AUTOTUNE: autotuned pipelines were seen to stall for
    # seconds at the end of fit/predict on small CPUs.
    parallel_calls: int = 2
    prefetch: int = 2


@dataclass(frozen=True)
class PrepareParams:
    """The prepare stage: every image decoded and resized once (cxr.data.prepare)."""

    # Decoding threads; the store's bytes do not depend on it.
    processes: int = 2


@dataclass(frozen=True)
class TrainParams:
    """Settings shared by every model's training."""

    # Backbone weights: "none" (random init; the embedded default: no internet here),
    # "imagenet" (Keras download + cache), a path to a local weights file, or a path to a
    # directory holding the Keras ImageNet no-top files of the model's backbones under their
    # Keras names (offline ImageNet; fusion needs the DenseNet121 and EfficientNetB3 files).
    weights: str = "none"
    mixed_precision: bool = False     # GPUs: 16-bit compute, float32 variables and outputs
    # The policy used when mixed_precision is true: float16 (loss-scaled; V100 and later)
    # or bfloat16 (float32's range; Ampere GPUs and later, TPUs).
    precision_policy: Literal["mixed_float16", "mixed_bfloat16"] = "mixed_float16"
    jit_compile: bool = False         # GPUs: XLA
    strategy: Literal["default", "mirrored", "multiworker"] = "default"
    deterministic: bool = True        # op determinism (slower on GPU; free on CPU)
    verbose: int = 2
    # Start the output bias at each finding's log-odds in the training split (Lin et al.):
    # the first step already predicts "rare", so no feature has to learn the prior.
    prior_bias: bool = True


@dataclass(frozen=True)
class LossParams:
    name: Literal["focal", "bce", "weighted_bce"] = "focal"
    alpha: float = 0.25
    gamma: float = 2.0


@dataclass(frozen=True)
class ModelParams:
    """One model's training schedule and architecture options (models.<name>)."""

    head_epochs: int = 3
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 3
    finetune_learning_rate: float = 1e-5
    patience: int = 3
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    schedule: str = "plateau"         # plateau (ReduceLROnPlateau) | cosine (warm-up + cosine)
    warmup_epochs: int = 0            # cosine only: linear warm-up epochs
    # Decoupled weight decay (AdamW, Loshchilov & Hutter), per step: w -= weight_decay * lr * w,
    # on every kernel (not biases, not BatchNorm scales and offsets). 0 = Adam, the study's.
    weight_decay: float = 0.0
    # Keyword options of cxr.models.build (e.g. fusion: dense_cut, efficient_cut).
    options: dict[str, Any] = field(default_factory=dict)


# The embedded default's model blocks, kept in cxr.model_defaults (not a DVC dependency of any
# stage: that module says why).
DEFAULT_MODELS: dict[str, ModelParams] = {
    name: ModelParams(**block) for name, block in MODEL_DEFAULTS.items()
}


@dataclass(frozen=True)
class MlflowParams:
    tracking_uri: str = ""            # "" = SQLite mlflow.db in the project root
    experiment: str = "cxr"


@dataclass(frozen=True)
class McDropoutParams:
    passes: int = 25                  # T stochastic passes per image (the study also shows 100)
    threshold: float = 0.1            # refer a finding when its MC std exceeds this (study: 0.1)
    # Which Dropout layers are sampled: "head" (those after the `features` pool; backbone
    # runs once: fast) or "all" (every Dropout layer, EfficientNet's stochastic depth too:
    # T full forward passes). DenseNet121 and simple_cnn have no backbone dropout.
    layers: Literal["head", "all"] = "head"


@dataclass(frozen=True)
class EvaluateParams:
    n_boot: int = 1000                # bootstrap resamples of patients for every CI
    ci: float = 0.95
    calibration_bins: int = 10
    threshold_method: Literal["youden", "f1"] = "youden"   # operating point, chosen on val
    batch_size: int = 64


@dataclass(frozen=True)
class LocalizeParams:
    """Grad-CAM heatmaps scored against lesion boxes (the localize stage)."""

    max_images: int = 300             # test images with a box that are scored, drawn by seed
    iou_threshold: float = 0.5        # heatmap binarised at this fraction of its maximum
    pointing_tolerance: float = 0.0   # input pixels added around a box for the pointing game
    examples_per_finding: int = 4     # overlays per finding in the examples figure
    batch_size: int = 32              # images per Grad-CAM gradient computation


@dataclass(frozen=True)
class Params:
    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    phantoms: PhantomParams = field(default_factory=PhantomParams)
    sample: SampleParams = field(default_factory=SampleParams)
    split: SplitParams = field(default_factory=SplitParams)
    pipeline: PipelineParams = field(default_factory=PipelineParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    baseline: BaselineParams = field(default_factory=BaselineParams)
    train: TrainParams = field(default_factory=TrainParams)
    loss: LossParams = field(default_factory=LossParams)
    models: dict[str, ModelParams] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    mlflow: MlflowParams = field(default_factory=MlflowParams)
    mc_dropout: McDropoutParams = field(default_factory=McDropoutParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    localize: LocalizeParams = field(default_factory=LocalizeParams)


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
    hints = typing.get_type_hints(cls)
    values = {}
    for name in fields:
        if name not in raw:
            continue  # the dataclass default applies
        values[name] = _coerce(hints[name], raw[name], f"{prefix}{name}", source)
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
    raise NotImplementedError(f"no coercion for {key}: {hint}")


def validate(params: Params, source: str = "params") -> None:
    """Checks that span several keys or bound a value."""

    def fail(key: str, value, expected: str):
        raise ParamsError(f"{source}: {key} = {value!r}; expected {expected}")

    if not 0 < params.sample.patient_fraction <= 1:
        fail("sample.patient_fraction", params.sample.patient_fraction, "a number in (0, 1]")
    fractions = params.split.fractions
    for name, value in zip(("train", "val", "test"), fractions.as_tuple(), strict=True):
        if value < 0:
            fail(f"split.fractions.{name}", value, "a non-negative fraction")
    if fractions.train <= 0:
        fail("split.fractions.train", fractions.train, "a positive fraction")
    if abs(sum(fractions.as_tuple()) - 1) > 1e-6:
        fail("split.fractions", fractions.as_tuple(), "train + val + test = 1")
    if params.split.method == "official":
        for key in ("official_train_val_list", "official_test_list"):
            if not getattr(params.split, key):
                fail(f"split.{key}", "", "a path to NIH's list file when split.method is official")
        if not params.split.by_patient:
            fail("split.by_patient", False, "true with split.method official")
    if params.phantoms.n_patients < 1:
        fail("phantoms.n_patients", params.phantoms.n_patients, "a positive integer")
    if params.phantoms.image_size < 32:
        fail("phantoms.image_size", params.phantoms.image_size, "at least 32")
    if not 0 <= params.phantoms.label_noise < 0.5:
        fail("phantoms.label_noise", params.phantoms.label_noise, "a fraction in [0, 0.5)")
    if params.phantoms.processes < 1:
        fail("phantoms.processes", params.phantoms.processes, "at least 1")
    if params.pipeline.image_size < 32:
        fail("pipeline.image_size", params.pipeline.image_size, "at least 32")
    for key in ("batch_size", "parallel_calls", "prefetch"):
        if getattr(params.pipeline, key) < 1:
            fail(f"pipeline.{key}", getattr(params.pipeline, key), "a positive integer")
    if params.baseline.thumbnail < 1 or params.pipeline.image_size % params.baseline.thumbnail:
        fail("baseline.thumbnail", params.baseline.thumbnail,
             f"a divisor of pipeline.image_size ({params.pipeline.image_size})")
    if params.baseline.regularization <= 0:
        fail("baseline.regularization", params.baseline.regularization, "a positive number")
    if params.prepare.processes < 1:
        fail("prepare.processes", params.prepare.processes, "at least 1")
    if params.train.verbose not in (0, 1, 2):
        fail("train.verbose", params.train.verbose, "0, 1 or 2")
    if not 0 <= params.loss.alpha <= 1:
        fail("loss.alpha", params.loss.alpha, "a number in [0, 1]")
    if params.loss.gamma < 0:
        fail("loss.gamma", params.loss.gamma, "a non-negative number")
    for name, model in params.models.items():
        for key in ("head_epochs", "finetune_epochs"):
            if getattr(model, key) < 0:
                fail(f"models.{name}.{key}", getattr(model, key), "a non-negative integer")
        if model.patience < 1:
            fail(f"models.{name}.patience", model.patience, "a positive integer")
        for key in ("head_learning_rate", "finetune_learning_rate", "min_learning_rate"):
            if not getattr(model, key) > 0:
                fail(f"models.{name}.{key}", getattr(model, key), "a positive number")
        if model.schedule not in ("plateau", "cosine"):
            fail(f"models.{name}.schedule", model.schedule, "plateau or cosine")
        if model.warmup_epochs < 0:
            fail(f"models.{name}.warmup_epochs", model.warmup_epochs, "a non-negative integer")
        if not 0 <= model.weight_decay < 1:  # NaN fails too
            fail(f"models.{name}.weight_decay", model.weight_decay, "a number in [0, 1)")
        if not 0 < model.reduce_lr_factor < 1:
            fail(f"models.{name}.reduce_lr_factor", model.reduce_lr_factor, "a factor in (0, 1)")
    if params.mc_dropout.passes < 2:
        fail("mc_dropout.passes", params.mc_dropout.passes, "at least 2")
    if params.mc_dropout.threshold <= 0:
        fail("mc_dropout.threshold", params.mc_dropout.threshold, "a positive number")
    if params.evaluate.n_boot < 10:
        fail("evaluate.n_boot", params.evaluate.n_boot, "at least 10")
    if not 0 < params.evaluate.ci < 1:
        fail("evaluate.ci", params.evaluate.ci, "a level in (0, 1)")
    if params.evaluate.calibration_bins < 2:
        fail("evaluate.calibration_bins", params.evaluate.calibration_bins, "at least 2")
    if params.evaluate.batch_size < 1:
        fail("evaluate.batch_size", params.evaluate.batch_size, "a positive integer")
    localize = params.localize
    for key in ("max_images", "examples_per_finding", "batch_size"):
        if getattr(localize, key) < 1:
            fail(f"localize.{key}", getattr(localize, key), "a positive integer")
    if not 0 < localize.iou_threshold <= 1:
        fail("localize.iou_threshold", localize.iou_threshold,
             "a fraction of the heatmap's maximum in (0, 1]")
    if localize.pointing_tolerance < 0:
        fail("localize.pointing_tolerance", localize.pointing_tolerance,
             "a non-negative number of pixels")
    augment = params.pipeline.augment
    for key in ("rotation", "zoom", "brightness"):
        if not 0 <= getattr(augment, key) < 1:
            fail(f"pipeline.augment.{key}", getattr(augment, key), "a factor in [0, 1)")


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
