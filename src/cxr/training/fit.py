"""Two-phase training: the head on a frozen backbone, then the whole network.

Phase 1 ("head") freezes every backbone layer (so its BatchNorm layers keep their moving
statistics even though the model is called with training=True) and trains the rest with Adam
at a high rate. Phase 2 ("finetune") unfreezes everything at a low rate. Models without a
backbone (simple_cnn) train in phase 1 only, all layers trainable. With a `weight_decay` the
optimizer is AdamW (decoupled decay of the kernels; `build_optimizer`).

Each phase monitors the validation macro AUC over the findings that have positives and
negatives there (`cxr.training.metrics.MacroAUC`, the evaluate stage's rule): the best weights are checkpointed, training stops after `patience` epochs without improvement,
the best weights are restored at the end of the phase. The learning rate follows the
phase's `schedule`: "plateau" halves it (by `reduce_lr_factor`) after `reduce_lr_patience`
epochs without a gain; "cosine" warms up linearly over `warmup_epochs` from 1% of the phase's
rate, then decays along a cosine to `min_learning_rate` at the phase's last planned step (a
per-step schedule held by the optimizer, so a resumed run continues it where it stopped).

Resume: every epoch writes the model + optimizer state, the best weights and the epoch log
into `checkpoint_dir`. A run killed mid-phase continues from its last finished epoch with its
history, best score, patience and learning-rate plateau counters; a finished phase is not
trained again.

Bit-exact resume. A resumed run ends with the same weights as an uninterrupted one (on CPU,
with op determinism on), because no random stream carries over from one epoch to the next in
the process: each epoch is one `fit` call that starts from state derived from
``(seed, phase, epoch)`` alone -- the training data of that epoch (`train_data` as a function
of ``(phase index, epoch)``: its shuffle order and augmentation seeds), the Keras / NumPy /
Python global seeds (``runtime.reseed_host_streams``) and the state of every SeedGenerator in the
model (Dropout) -- and everything else that evolves (weights, optimizer moments and step, the
learning rate) is in the checkpoint. The plateau counters are replayed from the epoch log.

Multi-worker (`tf.distribute.MultiWorkerMirroredStrategy`): every worker runs the same loop;
the chief writes `checkpoint_dir`, each other worker its own sibling folder
(``<checkpoint_dir>.worker-<id>``), so no two processes write one file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from cxr import backend
from cxr.models import backbone_layers, set_backbone_trainable
from cxr.training import runtime
from cxr.training.metrics import MacroAUC

MONITOR = "val_auc"
SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    learning_rate: float
    freeze_backbone: bool


@dataclass(frozen=True)
class TrainConfig:
    """One model's schedule (``models.<name>`` of the params, less ``options``) plus
    ``train.jit_compile``. No defaults: the values come from the params file."""

    head_epochs: int
    head_learning_rate: float
    finetune_epochs: int
    finetune_learning_rate: float
    patience: int
    reduce_lr_patience: int
    reduce_lr_factor: float
    min_learning_rate: float
    schedule: str
    warmup_epochs: int
    weight_decay: float
    jit_compile: bool

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule = {self.schedule!r}; allowed: {', '.join(SCHEDULES)}")

    def phases(self, has_backbone: bool) -> list[Phase]:
        if not has_backbone:
            return [Phase("head", self.head_epochs, self.head_learning_rate, False)]
        phases = [Phase("head", self.head_epochs, self.head_learning_rate, True)]
        if self.finetune_epochs > 0:
            phases.append(Phase("finetune", self.finetune_epochs, self.finetune_learning_rate,
                                False))
        return phases


class PhaseProgbar(keras.callbacks.ProgbarLogger):
    """Keras' per-epoch log line, headed "PHASE epoch k/N" with the phase's planned epochs.

    Every epoch is its own `fit` call (bit-exact resume), for which Keras' own header would
    read "Epoch k/k", and nothing at all for the first epoch."""

    def __init__(self, phase: Phase):
        super().__init__()
        self.phase = phase

    def on_epoch_begin(self, epoch, logs=None):
        if self.verbose:
            print(f"{self.phase.name} epoch {epoch + 1}/{self.phase.epochs}", flush=True)
        planned, self.epochs = self.epochs, 1  # Keras prints its header only when epochs > 1
        try:
            super().on_epoch_begin(epoch, logs)
        finally:
            self.epochs = planned


class NaNLossError(RuntimeError):
    """Training diverged."""


class StopOnNaN(keras.callbacks.Callback):
    """Fail loudly (Keras' TerminateOnNaN only stops quietly and the run looks finished)."""

    def __init__(self, phase: str):
        super().__init__()
        self.phase, self.epoch = phase, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NaNLossError(
                f"training diverged: loss is {loss} in phase {self.phase!r}, epoch "
                f"{self.epoch + 1}, batch {batch + 1}. Lower the learning rate "
                f"(params: models.<name>.*_learning_rate) or check the input images.")


class BestAndPatience(keras.callbacks.Callback):
    """Checkpoint the best weights by `val_auc`, count patience, record the epoch log.

    One resumable callback instead of ModelCheckpoint + EarlyStopping, whose counters
    restart from zero when a killed run resumes.
    """

    def __init__(self, directory: Path, phase: str, patience: int,
                 epochs_done: int | None = None):
        super().__init__()
        self.directory, self.phase, self.patience = directory, phase, patience
        self.best_path = directory / f"{phase}_best.weights.h5"
        self.log_path = directory / f"{phase}_log.jsonl"
        # Rows past the last checkpointed epoch (a kill between the log and the checkpoint)
        # are dropped: that epoch is trained again.
        self.history: list[dict] = [row for row in _read_log(self.log_path)
                                    if epochs_done is None or row["epoch"] <= epochs_done]
        scores = [row[MONITOR] for row in self.history]
        self.best = max(scores) if scores else -np.inf
        self.wait = len(scores) - 1 - int(np.argmax(scores)) if scores else 0

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        if "learning_rate" not in row:
            row["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
        self.history = [r for r in self.history if r["epoch"] < epoch + 1] + [row]
        score = row.get(MONITOR, -np.inf)
        if score > self.best:
            self.best, self.wait = score, 0
            self.model.save_weights(self.best_path)
        else:
            self.wait += 1
        _write_atomic(self.log_path, "".join(json.dumps(r) + "\n" for r in self.history))
        if self.wait >= self.patience:
            self.model.stop_training = True

    @property
    def exhausted(self) -> bool:
        """Patience ran out already (a resumed run that had stopped early)."""
        return self.wait >= self.patience


class PlateauLR(keras.callbacks.Callback):
    """Keras' ReduceLROnPlateau (mode max, min_delta 1e-4, no cooldown) with resumable counters.

    Keras' callback resets its best score and wait counter in `on_train_begin`, i.e. on every
    `fit` call and on every resume. Here they are replayed from the phase's epoch log
    (`rows()`, the rows of the epochs already trained) at the start of each `fit`; the learning
    rate itself lives in the optimizer, whose state is checkpointed.
    """

    def __init__(self, rows: Callable[[], list[dict]], factor: float, patience: int,
                 min_lr: float, min_delta: float = 1e-4):
        super().__init__()
        self.rows, self.factor, self.patience = rows, factor, patience
        self.min_lr, self.min_delta = min_lr, min_delta
        self.best: float | None = None
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best, self.wait = None, 0
        for row in self.rows():
            self._step(row.get(MONITOR), row["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self._step((logs or {}).get(MONITOR), lr):
            self.model.optimizer.learning_rate = max(lr * self.factor, self.min_lr)

    def _step(self, current: float | None, lr: float) -> bool:
        """Advance the counters by one epoch; True if the rate is to be reduced now."""
        if current is None:
            return False
        if self.best is None or current - self.min_delta > self.best:
            self.best, self.wait = current, 0
            return False
        self.wait += 1
        if self.wait >= self.patience and lr > np.float32(self.min_lr):
            self.wait = 0
            return True
        return False


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: model weights + optimizer state, then a pointer naming the epoch.

    The pointer (`PHASE_last.json`) is replaced atomically after its weights file is complete,
    so a kill at any moment leaves either the previous epoch's checkpoint or this one.
    """

    def __init__(self, directory: Path, phase: str):
        super().__init__()
        self.directory, self.phase = directory, phase
        self.pointer = directory / f"{phase}_last.json"

    def epochs_done(self) -> int:
        if not self.pointer.exists():
            return 0
        return int(json.loads(self.pointer.read_text())["epoch"])

    def restore(self, model: keras.Model) -> int:
        """Load the last checkpoint into `model` (compiled); the number of epochs it holds."""
        done = self.epochs_done()
        if done:
            if not model.optimizer.built:  # its variables must exist to be loaded
                model.optimizer.build(model.trainable_variables)
            model.load_weights(self.directory / json.loads(self.pointer.read_text())["weights"])
        return done

    def on_epoch_end(self, epoch, logs=None):
        name = f"{self.phase}_epoch{epoch + 1}.weights.h5"
        previous = self.directory / f"{self.phase}_epoch{epoch}.weights.h5"
        self.model.save_weights(self.directory / name)
        _write_atomic(self.pointer, json.dumps({"epoch": epoch + 1, "weights": name}))
        previous.unlink(missing_ok=True)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def reset_random_state(model: keras.Model, seed: int, phase_index: int, epoch: int) -> None:
    """Every random stream of one epoch's `fit`, from ``(seed, phase_index, epoch)`` alone.

    Global seeds (Python, NumPy, Keras' global SeedGenerator; not TensorFlow's, see
    :func:`cxr.training.runtime.reseed_host_streams`) and the state of each SeedGenerator the
    model holds (Dropout layers, in the order of ``model.variables``).
    """
    sequence = np.random.SeedSequence([seed, phase_index, epoch])
    generators = [v for v in model.variables if v.path.endswith("seed_generator_state")]
    states = sequence.generate_state(1 + len(generators), dtype=np.uint32) % (2**31 - 1)
    runtime.reseed_host_streams(int(states[0]))
    for variable, state in zip(generators, states[1:], strict=True):
        variable.assign(np.array([state, 0], dtype=variable.dtype))


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def history_rows(history: dict[str, list[dict]]) -> list[dict]:
    """{phase: [epoch rows]} -> one list, numbered by a `step` that runs across phases."""
    rows = [(phase, row) for phase, phase_rows in history.items() for row in phase_rows]
    return [{"step": i + 1, "phase": phase, **row} for i, (phase, row) in enumerate(rows)]


def compile_model(model: keras.Model, loss, learning_rate, jit_compile: bool,
                  weight_decay: float = 0.0) -> None:
    """Adam (AdamW if `weight_decay` > 0), the loss and the macro AUC; `learning_rate` is a
    number or a Keras schedule.

    `jit_compile=True` asks for XLA, and gets it or an XLAUnavailableError: Keras turns XLA
    off with only a warning when it cannot use it (TensorFlow's op determinism is on, or a
    layer does not support it), and a run meant to measure or use XLA would silently not.
    """
    n_labels = model.output_shape[-1]
    model.compile(
        optimizer=build_optimizer(model, learning_rate, weight_decay),
        loss=loss,
        metrics=[MacroAUC(num_labels=n_labels, name="auc")],
        # JAX without jit runs op by op (several times slower): it always compiles.
        jit_compile=jit_compile or keras.backend.backend() == "jax",
    )
    if jit_compile and not model.jit_compile:
        raise XLAUnavailableError(_why_no_xla(model))


def build_optimizer(model: keras.Model, learning_rate, weight_decay: float = 0.0):
    """Adam, or AdamW when `weight_decay` > 0 (decoupled: each step multiplies a decayed weight
    by ``1 - weight_decay * learning_rate``, apart from the gradient step).

    Only kernels decay: variables of rank 0 or 1 (biases, BatchNorm's scale and offset, the
    attention's scalars) are excluded, as usual for convolutional networks, so the decay
    regularises what the network computes rather than pulling normalisation layers to zero.
    """
    if weight_decay == 0:
        return keras.optimizers.Adam(learning_rate)
    optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.variables if len(v.shape) <= 1])
    return optimizer


class XLAUnavailableError(ValueError):
    """XLA (jit_compile) was asked for and Keras compiled the model without it."""


def _why_no_xla(model: keras.Model) -> str:
    asked = f"jit_compile = True (train.jit_compile), but Keras compiled model {model.name!r} " \
            "without XLA: "
    if backend.is_tensorflow():
        from tensorflow.python.framework.config import is_op_determinism_enabled

        if is_op_determinism_enabled():
            return asked + ("TensorFlow's op determinism is on (train.deterministic = true), "
                            "and Keras does not use XLA with it. Set train.deterministic: false "
                            "to train with XLA, or train.jit_compile: false.")
    unsupported = sorted({type(layer).__name__ for layer in model._flatten_layers()
                          if not getattr(layer, "supports_jit", True)})
    if unsupported:
        return asked + f"these layer types do not support it: {', '.join(unsupported)}."
    return asked + "Keras gave no reason here (see its warning). Set train.jit_compile: false."


def train_two_phase(
    model: keras.Model,
    train_data,
    val_data,
    loss,
    config: TrainConfig,
    checkpoint_dir: str | Path,
    on_epoch: Callable[[str, dict], None] | None = None,
    verbose: int = 2,
    fingerprint: dict | None = None,
    strategy=None,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Train `model` in place; returns {phase: [epoch rows]} with train and val loss/AUC.

    `train_data`: a function ``(phase_index, epoch) -> tf.data.Dataset`` giving one epoch's
    batches as a pure function of its arguments (e.g. ``make_dataset_from_store(...,
    epoch=(phase_index, epoch))``), which makes a resumed run bit-exact; or one dataset used
    for every epoch (then its own shuffling restarts when a killed run resumes).
    `seed`: the seed of the per-epoch random state (:func:`reset_random_state`).
    `on_epoch(phase, row)` is called after every epoch (MLflow logging hooks in here); `row`
    is the epoch's history row plus "step", its number over the whole run (as
    :func:`history_rows` counts), the same after a resume.
    `fingerprint`: everything else that defines the run (data, loss, seed...); checkpoints
    are resumed only when it and `config` equal those they were written with.
    `strategy`: the tf.distribute strategy the model was built under (optimizers must be
    created in its scope); None = the one the model was built under.
    """
    strategy = strategy or model.distribute_strategy
    checkpoint_dir = worker_checkpoint_dir(Path(checkpoint_dir), strategy)
    _prepare_checkpoints(checkpoint_dir, {"config": asdict(config), "seed": seed,
                                          "checkpoint_format": CHECKPOINT_FORMAT,
                                          **(fingerprint or {})})
    history: dict[str, list[dict]] = {}
    phases = config.phases(has_backbone=bool(backbone_layers(model)))
    for index, phase in enumerate(phases):
        steps_before = sum(len(rows) for rows in history.values())
        history[phase.name] = _run_phase(model, index, phase, train_data, val_data, loss,
                                         config, checkpoint_dir, on_epoch, verbose, strategy,
                                         seed, steps_before)
    return history


def _with_step(row: dict, steps_before: int) -> dict:
    """A copy of an epoch's row with "step": its place in the whole run (the epochs of the
    earlier phases, then this one's), as `history_rows` numbers it; the same in a resumed
    run as in an uninterrupted one."""
    return {**row, "step": steps_before + row["epoch"]}


# 2: per-epoch checkpoints (PHASE_last.json), not Keras' BackupAndRestore folders
CHECKPOINT_FORMAT = 2


def worker_checkpoint_dir(checkpoint_dir: Path, strategy) -> Path:
    """The chief (and any single-process run) writes `checkpoint_dir`; other workers of a
    multi-worker strategy a sibling of their own."""
    extended = getattr(strategy, "extended", None)
    if getattr(extended, "should_checkpoint", True):
        return checkpoint_dir
    resolver = strategy.cluster_resolver
    return checkpoint_dir.with_name(
        f"{checkpoint_dir.name}.{resolver.task_type}-{resolver.task_id}")


def cosine_schedule(phase: Phase, config: TrainConfig, steps_per_epoch: int):
    """Linear warm-up over `warmup_epochs` from 1% of the phase's rate to the rate, then a
    cosine decay to `min_learning_rate` at the end of the phase's planned epochs."""
    total = phase.epochs * steps_per_epoch
    warmup = min(config.warmup_epochs, phase.epochs) * steps_per_epoch
    floor = min(config.min_learning_rate, phase.learning_rate)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=phase.learning_rate / 100 if warmup else phase.learning_rate,
        decay_steps=max(total - warmup, 1), alpha=floor / phase.learning_rate,
        warmup_target=phase.learning_rate if warmup else None, warmup_steps=warmup)


def _steps_per_epoch(train_data) -> int:
    """Batches per epoch of a tf.data dataset or a Keras PyDataset / Sequence, or of the
    first epoch's dataset when `train_data` is a `(phase, epoch) -> dataset` function."""
    if callable(train_data) and not hasattr(train_data, "cardinality"):
        train_data = train_data(0, 0)
    sized = hasattr(train_data, "cardinality")
    steps = int(train_data.cardinality()) if sized else len(train_data)
    if steps <= 0:
        raise ValueError(f"schedule = cosine needs a training dataset of known length; got "
                         f"{steps} batches per epoch (infinite or unknown)")
    return steps


def _prepare_checkpoints(checkpoint_dir: Path, fingerprint: dict) -> None:
    """Resume only checkpoints written by an identical run; anything else starts over."""
    marker = checkpoint_dir / "run.json"
    current = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    if checkpoint_dir.exists() and any(checkpoint_dir.iterdir()):
        previous = json.loads(marker.read_text()) if marker.exists() else None
        if previous == current:
            print(f"training: resuming from the checkpoints in {checkpoint_dir}")
        else:
            print(f"training: {checkpoint_dir} holds checkpoints of another run; starting over")
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(marker, json.dumps(current, indent=2, sort_keys=True))


def _run_phase(model, index: int, phase: Phase, train_data, val_data, loss,
               config: TrainConfig, checkpoint_dir: Path, on_epoch, verbose: int, strategy,
               seed: int, steps_before: int) -> list[dict]:
    done_marker = checkpoint_dir / f"{phase.name}_done"
    if done_marker.exists():
        best = BestAndPatience(checkpoint_dir, phase.name, config.patience)
        model.load_weights(best.best_path)
        return best.history
    set_backbone_trainable(model, not phase.freeze_backbone)
    learning_rate = phase.learning_rate
    if config.schedule == "cosine" and phase.epochs > 0:
        learning_rate = cosine_schedule(phase, config, _steps_per_epoch(train_data))
    with strategy.scope():
        compile_model(model, loss, learning_rate, config.jit_compile, config.weight_decay)
    checkpoint = EpochCheckpoint(checkpoint_dir, phase.name)
    with strategy.scope():
        start = checkpoint.restore(model)
    best = BestAndPatience(checkpoint_dir, phase.name, config.patience, epochs_done=start)
    # Order matters: the log row (with the epoch's learning rate), then the plateau rule may
    # lower the rate, then the checkpoint holds the lowered rate, then the caller's hook.
    # A cosine schedule is a function of the optimizer's step count, which the checkpoint
    # holds: no plateau rule, nothing else to restore.
    callbacks = [PhaseProgbar(phase), StopOnNaN(phase.name), best]
    if config.schedule == "plateau":
        callbacks.append(PlateauLR(lambda: best.history, factor=config.reduce_lr_factor,
                                   patience=config.reduce_lr_patience,
                                   min_lr=min(config.min_learning_rate, phase.learning_rate)))
    callbacks.append(checkpoint)
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: on_epoch(phase.name, _with_step(
                best.history[-1], steps_before))))
    for epoch in range(start, phase.epochs):
        if best.exhausted:
            break
        reset_random_state(model, seed, index, epoch)
        data = train_data(index, epoch) if callable(train_data) else train_data
        model.fit(data, validation_data=val_data, initial_epoch=epoch, epochs=epoch + 1,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    if best.best_path.exists():
        model.load_weights(best.best_path)
    done_marker.write_text(json.dumps({"best_" + MONITOR: best.best}))
    return best.history
