"""Two-phase training on tiny models (a small nested backbone stands in for DenseNet)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from train_configs import train_config

from cxr.models import build
from cxr.training.fit import NaNLossError, train_two_phase
from cxr.training.losses import build_loss

N_LABELS = 14


def tiny_backbone_model(seed: int = 0) -> keras.Model:
    """image -> nested 'densenet121' sub-model (conv + BN) -> features -> head."""
    keras.utils.set_random_seed(seed)
    inner_in = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inner_in)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    backbone = keras.Model(inner_in, x, name="densenet121")
    inputs = keras.Input((16, 16, 3), name="image")
    scaled = keras.layers.Rescaling(1 / 255, name="scale")(inputs)
    y = keras.layers.GlobalAveragePooling2D(name="features")(backbone(scaled))
    y = keras.layers.Dropout(0.2, name="features_dropout")(y)
    outputs = keras.layers.Dense(N_LABELS, activation="sigmoid", name="predictions")(y)
    return keras.Model(inputs, outputs, name="tiny")


def learnable_data(n: int = 64, seed: int = 0):
    """Brightness of the image's left half decides every label: easy to learn."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, 16, 16, 3)).astype(np.float32)
    signal = rng.integers(0, 2, n)
    x[signal == 1, :, :8] = np.clip(x[signal == 1, :, :8] * 0.2 + 200, 0, 255)
    y = np.repeat(signal[:, None], N_LABELS, axis=1).astype(np.float32)
    y[:, 1::2] = rng.integers(0, 2, (n, N_LABELS // 2))  # half the labels are noise
    return x, y


def datasets(n=64, batch=16):
    x, y = learnable_data(n)
    options = tf.data.Options()
    options.autotune.enabled = False
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).with_options(options)
    val = tf.data.Dataset.from_tensor_slices(learnable_data(32, seed=1)).batch(batch)
    return train, val.with_options(options)


def weights_of(layer):
    return [w.numpy().copy() for w in layer.weights]


def test_phase_one_freezes_backbone_and_bn_statistics_phase_two_trains_them(tmp_path):
    model = tiny_backbone_model()
    backbone = model.get_layer("densenet121")
    before = weights_of(backbone)
    head_before = weights_of(model.get_layer("predictions"))
    train, val = datasets()
    config = train_config(head_epochs=2, finetune_epochs=0, patience=5)
    history = train_two_phase(model, train, val, build_loss("bce"), config, tmp_path / "a",
                              verbose=0)
    assert list(history) == ["head"] and len(history["head"]) == 2
    after = weights_of(backbone)
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True)), \
        "phase 1 changed the frozen backbone (weights or BatchNorm moving statistics)"
    assert not np.array_equal(head_before[0], weights_of(model.get_layer("predictions"))[0])

    model2 = tiny_backbone_model()
    config2 = train_config(head_epochs=1, finetune_epochs=2, finetune_learning_rate=1e-2,
                          patience=5)
    history2 = train_two_phase(model2, train, val, build_loss("bce"), config2, tmp_path / "b",
                               verbose=0)
    assert [len(history2[p]) for p in ("head", "finetune")] == [1, 2]
    bn = model2.get_layer("densenet121").get_layer("bn")
    moving_mean = bn.moving_mean.numpy()
    assert not np.allclose(moving_mean, 0.0), "phase 2 must update BatchNorm statistics"
    assert not np.array_equal(before[0], model2.get_layer("densenet121").weights[0].numpy())


def test_history_rows_hold_train_and_val_loss_and_auc_and_learning(tmp_path):
    model = tiny_backbone_model()
    train, val = datasets(n=128)
    # 6 epochs: at 4 this tiny net sat near 0.6 or above it depending on the dropout stream
    config = train_config(head_epochs=6, finetune_epochs=0, head_learning_rate=1e-2, patience=5)
    history = train_two_phase(model, train, val, build_loss("bce"), config, tmp_path, verbose=0)
    rows = history["head"]
    assert {"loss", "auc", "val_loss", "val_auc", "learning_rate", "epoch"} <= set(rows[0])
    assert rows[-1]["val_auc"] > 0.6, rows


def test_resume_after_a_kill_continues_where_it_stopped(tmp_path):
    train, val = datasets()
    config = train_config(head_epochs=4, finetune_epochs=0, patience=10)

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("simulated kill")

    model = tiny_backbone_model()
    with pytest.raises(KeyboardInterrupt):
        train_two_phase(model, train, val, build_loss("bce"), config, tmp_path,
                        on_epoch=lambda phase, row: Kill().on_epoch_end(row["epoch"] - 1),
                        verbose=0, fingerprint={"run": 1})
    logged = [json.loads(line) for line in (tmp_path / "head_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2]

    epochs_seen, steps_seen = [], []
    resumed = tiny_backbone_model(seed=99)  # fresh weights: they must come from the backup
    history = train_two_phase(resumed, train, val, build_loss("bce"), config, tmp_path,
                              on_epoch=lambda phase, row: (epochs_seen.append(row["epoch"]),
                                                           steps_seen.append(row["step"])),
                              verbose=0, fingerprint={"run": 1})
    assert epochs_seen == [3, 4], "the resumed run must not train epochs 1-2 again"
    assert steps_seen == [3, 4], "the resumed run's MLflow steps must continue, not restart"
    assert [r["epoch"] for r in history["head"]] == [1, 2, 3, 4]

    # A finished phase is not trained again; another fingerprint starts over.
    again = []
    train_two_phase(tiny_backbone_model(), train, val, build_loss("bce"), config, tmp_path,
                    on_epoch=lambda phase, row: again.append(row["epoch"]), verbose=0,
                    fingerprint={"run": 1})
    assert again == []
    fresh = []
    train_two_phase(tiny_backbone_model(), train, val, build_loss("bce"), config, tmp_path,
                    on_epoch=lambda phase, row: fresh.append(row["epoch"]), verbose=0,
                    fingerprint={"run": 2})
    assert fresh == [1, 2, 3, 4]


def test_early_stopping_restores_best_weights(tmp_path):
    model = tiny_backbone_model()
    train, val = datasets()
    # A learning rate this large makes val AUC wander; patience 1 must stop early and
    # restore the weights of the best epoch, not keep the last.
    config = train_config(head_epochs=8, finetune_epochs=0, head_learning_rate=1.0, patience=1)
    history = train_two_phase(model, train, val, build_loss("bce"), config, tmp_path, verbose=0)
    best = max(r["val_auc"] for r in history["head"])
    model.compile(metrics=[keras.metrics.AUC(multi_label=True, num_labels=N_LABELS)],
                  loss="binary_crossentropy")
    restored = model.evaluate(val, verbose=0, return_dict=True)
    auc_key = next(k for k in restored if "auc" in k)
    assert restored[auc_key] == pytest.approx(best, abs=1e-6)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = tiny_backbone_model()
    x, y = learnable_data(32)
    y[0, 0] = np.nan
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    _, val = datasets()
    config = train_config(head_epochs=1, finetune_epochs=0)
    with pytest.raises(NaNLossError, match="loss is nan in phase 'head', epoch 1, batch 1"):
        train_two_phase(model, train, val, build_loss("bce"), config, tmp_path, verbose=0)


def test_two_cpu_runs_of_the_simple_cnn_give_identical_weights(tmp_path):
    from cxr.training import runtime

    finals = []
    for attempt in range(2):
        runtime.configure(seed=7)
        model = build("simple_cnn", image_size=32)
        x, y = learnable_data(32)
        x = np.concatenate([x, x], axis=1)[:, :32, :, :]
        x = np.concatenate([x, x], axis=2)[:, :, :32, :]
        train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=7).batch(8)
        config = train_config(head_epochs=2, finetune_epochs=0)
        train_two_phase(model, train, train, build_loss("focal"), config, tmp_path / str(attempt),
                        verbose=0)
        finals.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*finals, strict=True))


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """Logical devices must be set before TF starts: run in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import numpy as np
        from cxr.training import runtime
        from cxr.training.losses import build_loss
        from cxr.models import build
        from cxr.training.fit import train_two_phase
        import sys
        sys.path.insert(0, r"{Path(__file__).parent}")
        from train_configs import train_config
        runtime.configure(seed=1)
        strategy = runtime.distribution_strategy("mirrored")
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        with strategy.scope():
            model = build("simple_cnn", image_size=32)
        x = np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype("float32")
        y = (x[:, :, :16].mean(axis=(1, 2, 3)) > 127).astype("float32")[:, None].repeat(14, 1)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = train_two_phase(model, data, data, build_loss("focal"),
                                  train_config(head_epochs=1, finetune_epochs=0),
                                  r"{tmp_path}", verbose=0)
        print("REPLICAS", strategy.num_replicas_in_sync, "EPOCHS", len(history["head"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REPLICAS 2 EPOCHS 1" in result.stdout


def test_epoch_rows_carry_the_run_wide_step_and_the_log_names_each_phase_epoch(
        tmp_path, capsys):
    train, val = datasets()
    config = train_config(head_epochs=2, finetune_epochs=2, patience=10)
    seen = []
    train_two_phase(tiny_backbone_model(), train, val, build_loss("bce"), config, tmp_path,
                    on_epoch=lambda phase, row: seen.append((phase, row["epoch"], row["step"])),
                    verbose=2, fingerprint={"run": 1})
    assert seen == [("head", 1, 1), ("head", 2, 2), ("finetune", 1, 3), ("finetune", 2, 4)]
    out = capsys.readouterr().out
    for header in ("head epoch 1/2", "head epoch 2/2", "finetune epoch 1/2",
                   "finetune epoch 2/2"):
        assert header in out, out
    # each epoch is its own fit(): Keras' header would read "Epoch 2/2", "Epoch 3/3"...
    assert "Epoch " not in out, out
    history = json.loads((tmp_path / "head_log.jsonl").read_text().splitlines()[0])
    assert "step" not in history, "the step is added for the hook, not stored in the history"


def test_history_rows_number_epochs_across_phases():
    from cxr.training.fit import history_rows

    history = {"head": [{"epoch": 1, "loss": 0.5}],
               "finetune": [{"epoch": 1, "loss": 0.4}, {"epoch": 2, "loss": 0.3}]}
    assert history_rows(history) == [
        {"step": 1, "phase": "head", "epoch": 1, "loss": 0.5},
        {"step": 2, "phase": "finetune", "epoch": 1, "loss": 0.4},
        {"step": 3, "phase": "finetune", "epoch": 2, "loss": 0.3},
    ]


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from cxr.training import runtime
    runtime.configure(seed=5)
    from test_training import tiny_backbone_model
    from train_configs import train_config
    from cxr.data.loading import Augmentation, make_dataset_from_store
    from cxr.training.fit import train_two_phase
    from cxr.training.losses import build_loss
    mode, checkpoints = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 16, 16), dtype=np.uint8)
    labels = (rng.random((96, 14)) < 0.3).astype(np.float32)
    augmentation = Augmentation(flip=True, rotation=0.0, zoom=0.0, brightness=0.1)

    def train_data(phase, epoch):
        return make_dataset_from_store(images, np.arange(64), labels[:64], 16, training=True,
                                       augmentation=augmentation, seed=5, epoch=(phase, epoch))

    val = make_dataset_from_store(images, np.arange(64, 96), labels[64:], 16)
    schedule = sys.argv[4]
    config = train_config(head_epochs=1, finetune_epochs=3, finetune_learning_rate=1e-2,
                         patience=9, reduce_lr_patience=1, schedule=schedule,
                         warmup_epochs=int(schedule == "cosine"))

    def preempt(phase, row):  # SIGKILL once fine-tune epoch 1 is checkpointed
        if mode == "kill" and phase == "finetune" and row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    model = tiny_backbone_model(seed=int(mode == "resume"))  # resumed: weights from disk
    train_two_phase(model, train_data, val, build_loss("bce"), config, checkpoints,
                    on_epoch=preempt, verbose=0, seed=5)
    print("FINISHED")
""")


def _checkpoint_arrays(path) -> dict:
    import h5py

    arrays = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_a_preempted_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
        tmp_path, schedule):
    """Head epoch + 3 fine-tune epochs with shuffling, augmentation and dropout: once straight
    through, once SIGKILLed after fine-tune epoch 1 and started again in a new process. The
    last epoch's weights and optimizer state, and the best weights, must be bit-identical,
    under either learning-rate schedule (cosine: the rate comes from the restored step)."""
    from pathlib import Path

    tests = str(Path(__file__).parent)

    def run(mode, checkpoints):
        return subprocess.run([sys.executable, "-c", RESUME_SCRIPT, mode, str(checkpoints), tests,
                               schedule], capture_output=True, text=True, timeout=300)

    full = run("full", tmp_path / "full")
    assert full.returncode == 0 and "FINISHED" in full.stdout, full.stderr[-3000:]
    killed = run("kill", tmp_path / "cut")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])
    assert json.loads((tmp_path / "cut/finetune_last.json").read_text())["epoch"] == 1
    resumed = run("resume", tmp_path / "cut")
    assert resumed.returncode == 0 and "FINISHED" in resumed.stdout, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout

    def log(folder):
        return (folder / "finetune_log.jsonl").read_text().splitlines()

    assert log(tmp_path / "full") == log(tmp_path / "cut")  # losses, AUCs, learning rates
    for name in ("finetune_epoch3.weights.h5", "finetune_best.weights.h5"):
        expected = _checkpoint_arrays(tmp_path / "full" / name)
        got = _checkpoint_arrays(tmp_path / "cut" / name)
        assert sorted(expected) == sorted(got) and any("optimizer" in k for k in got)
        different = [k for k in expected if not np.array_equal(expected[k], got[k])]
        assert not different, f"{name}: resumed run differs in {different}"


def test_plateau_counters_replayed_from_the_log_match_an_uninterrupted_run():
    """PlateauLR lowers the rate where Keras' ReduceLROnPlateau does, and a copy started at
    any epoch with the log of the epochs before it (and the rate the checkpoint holds)
    continues exactly as the uninterrupted one."""
    from types import SimpleNamespace

    from cxr.training.fit import PlateauLR

    scores = [0.5, 0.6, 0.59, 0.58, 0.57, 0.56, 0.61, 0.6, 0.6, 0.6, 0.6, 0.6]

    def run(callback_for, start_lr, rows, epochs):
        optimizer = keras.optimizers.Adam(start_lr)
        callback = callback_for(rows)
        callback.set_model(SimpleNamespace(optimizer=optimizer))
        callback.on_train_begin()
        rates = []
        for epoch in epochs:
            rate = float(optimizer.learning_rate.numpy())
            rates.append(rate)
            callback.on_epoch_end(epoch, {"val_auc": scores[epoch]})
            rows.append({"val_auc": scores[epoch], "learning_rate": rate})
        return rates, float(optimizer.learning_rate.numpy())

    def ours(rows):
        return PlateauLR(lambda: rows, factor=0.5, patience=2, min_lr=0.2)

    def theirs(rows):
        return keras.callbacks.ReduceLROnPlateau("val_auc", mode="max", factor=0.5,
                                                 patience=2, min_lr=0.2)

    full, _ = run(ours, 1.0, [], range(len(scores)))
    assert full == run(theirs, 1.0, [], range(len(scores)))[0]
    assert full[-1] == pytest.approx(0.2) and len(set(full)) == 4, full  # 1, .5, .25, .2
    for cut in range(1, len(scores)):
        rows = []
        before, rate = run(ours, 1.0, rows, range(cut))
        after, _ = run(ours, rate, rows, range(cut, len(scores)))  # a new process: new callback
        assert before + after == full, cut


def test_per_epoch_reseeding_repeats_host_streams_and_leaves_tensorflow_s_seed(monkeypatch):
    """tf.random.set_seed clears TensorFlow's kernel cache (every kernel of the traced step is
    rebuilt on the next step: 9-19 s per epoch for the default's backbones), so the per-epoch
    reset must not call it; Python's, NumPy's and Keras' global draws still repeat."""
    import random

    from cxr.training.fit import reset_random_state

    def refuse(seed):
        raise AssertionError(f"tf.random.set_seed({seed}) called between epochs")

    model = tiny_backbone_model()
    monkeypatch.setattr(tf.random, "set_seed", refuse)

    def draws(epoch):
        reset_random_state(model, 42, 1, epoch)
        return (random.random(), float(np.random.rand()),
                float(keras.random.uniform(())), model.get_layer("features_dropout")
                .seed_generator.state.numpy().tolist())

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


@pytest.fixture
def op_determinism():
    """Sets TensorFlow's (process-wide) op determinism for a test, then restores it."""
    from tensorflow.python.framework import config

    before = config.is_op_determinism_enabled()

    def set_to(on: bool) -> None:
        (config.enable_op_determinism if on else config.disable_op_determinism)()

    yield set_to
    set_to(before)


def test_jit_compile_under_op_determinism_is_refused_naming_both_keys(op_determinism):
    """Keras drops XLA under op determinism with a warning only: compile_model refuses."""
    from cxr.training.fit import XLAUnavailableError, compile_model

    model = tiny_backbone_model()
    op_determinism(True)
    with pytest.raises(XLAUnavailableError, match=r"train\.deterministic.*train\.jit_compile"):
        compile_model(model, build_loss("focal"), 1e-3, jit_compile=True)
    compile_model(model, build_loss("focal"), 1e-3, jit_compile=False)  # no XLA asked: fine
    assert not model.jit_compile
    op_determinism(False)
    compile_model(model, build_loss("focal"), 1e-3, jit_compile=True)
    assert model.jit_compile


def test_jit_compile_names_the_layers_that_cannot_use_xla(op_determinism):
    from cxr.training.fit import XLAUnavailableError, compile_model

    class NoXLA(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.supports_jit = False  # Layer.__init__ sets it True

        def call(self, x):
            return x

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(N_LABELS)(NoXLA()(inputs)))
    op_determinism(False)
    with pytest.raises(XLAUnavailableError, match="do not support it: NoXLA"):
        compile_model(model, build_loss("focal"), 1e-3, jit_compile=True)


def test_weight_decay_shrinks_kernels_only_and_zero_means_adam():
    """AdamW's decoupled decay: with zero gradients (Adam's step is then 0) a kernel is
    multiplied by 1 - weight_decay * lr per step; biases and BatchNorm's scale and offset are
    excluded; weight_decay 0 is plain Adam."""
    from cxr.training.fit import build_optimizer

    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    assert type(build_optimizer(model, 1e-2)) is keras.optimizers.Adam

    optimizer = build_optimizer(model, 1e-2, weight_decay=0.5)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    model.get_layer("dense").bias.assign(np.ones(4, np.float32))
    model.get_layer("bn").beta.assign(np.ones(4, np.float32))
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    variables = model.trainable_variables
    for _ in range(3):
        optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    after = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    kernel = model.get_layer("dense").kernel.path
    np.testing.assert_allclose(after[kernel], before[kernel] * (1 - 0.5 * 1e-2) ** 3, rtol=1e-5)
    for path in set(before) - {kernel}:  # bias, BatchNorm gamma and beta
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)


def test_train_two_phase_uses_the_config_s_weight_decay_in_every_phase(tmp_path):
    """TrainConfig.weight_decay reaches the optimizer of both phases (AdamW); 0 keeps Adam."""
    train, val = datasets()
    model = tiny_backbone_model()
    config = train_config(head_epochs=1, finetune_epochs=1, finetune_learning_rate=1e-3,
                         weight_decay=0.1)
    seen = []
    train_two_phase(model, train, val, build_loss("bce"), config, tmp_path / "wd", verbose=0,
                    on_epoch=lambda phase, row: seen.append(
                        (phase, type(model.optimizer).__name__, model.optimizer.weight_decay)))
    assert seen == [("head", "AdamW", 0.1), ("finetune", "AdamW", 0.1)]
    model = tiny_backbone_model()
    train_two_phase(model, train, val, build_loss("bce"), train_config(head_epochs=1,
                    finetune_epochs=0), tmp_path / "adam", verbose=0)
    assert type(model.optimizer) is keras.optimizers.Adam
