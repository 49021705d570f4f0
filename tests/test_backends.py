"""Other Keras backends: the phantom pipeline on JAX without TensorFlow, and the same numbers.

Every run on JAX is a subprocess with KERAS_BACKEND=jax that fails if TensorFlow ended up in
``sys.modules``. The TensorFlow/JAX comparisons run each backend in its own interpreter on
the same saved weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxr.data.loading import Augmentation
from cxr.data.pydataset import StoreBatches
from cxr.labels import LABELS

REPO = Path(__file__).resolve().parents[1]
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="JAX is not installed (the cpu lock's jax extra)")
# Run a script, then fail if it imported TensorFlow.
WITHOUT_TF = textwrap.dedent("""
    import runpy, sys
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        if script.endswith(".py"):  # a stage script: its folder holds _common.py
            sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(script, run_name="__main__", alter_sys=True)
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    print("no TensorFlow imported")
""")


def run_python(args, backend: str, cwd: Path, timeout: int = 300) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend, "DVC_ROOT": str(cwd),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} on {backend} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def jax_stage(workdir: Path, name: str, *args) -> str:
    out = run_python(["-c", WITHOUT_TF, REPO / "stages" / f"{name}.py", *args], "jax", workdir)
    assert "no TensorFlow imported" in out
    return out


# --------------------------------------------------------------------------- the input


def store(count: int = 20, size: int = 16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, size, size), dtype=np.uint8)
    images[:, :, : size // 2] //= 4  # a dark left half: a flip is visible
    labels = (rng.random((count, len(LABELS))) < 0.3).astype(np.float32)
    return images, labels


def test_store_batches_keep_order_and_pixels_for_evaluation():
    images, labels = store()
    rows = np.array([5, 3, 19, 0, 7])
    data = StoreBatches(images, rows, labels[rows], batch_size=2)
    assert len(data) == 3
    x = np.concatenate([data[i][0] for i in range(len(data))])
    y = np.concatenate([data[i][1] for i in range(len(data))])
    assert x.dtype == np.float32 and x.shape == (5, 16, 16, 3)
    assert np.array_equal(x, np.repeat(images[rows, ..., None], 3, axis=-1).astype(np.float32))
    assert np.array_equal(y, labels[rows])
    data.on_epoch_end()  # evaluation data never reshuffles
    assert np.array_equal(np.concatenate([data[i][0] for i in range(3)]), x)
    only_images = StoreBatches(images, rows, None, batch_size=5)[0]
    assert np.array_equal(only_images, x)
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(ValueError, match="outside the store"):
        StoreBatches(images, [0, 20], None, 2)
    with pytest.raises(ValueError, match="augmentation needs labels"):
        StoreBatches(images, [0, 1], None, 2, training=True, augmentation=Augmentation())


def test_store_batches_shuffle_by_seed_and_epoch_and_augment_within_keras_ranges():
    images, labels = store()
    rows = np.arange(len(images))
    plain = np.repeat(images[..., None], 3, axis=-1).astype(np.float32)

    def epoch(data, number):
        data.set_epoch(number)
        return [data[i] for i in range(len(data))]

    shuffled = StoreBatches(images, rows, labels, 8, training=True, seed=4)
    first = shuffled.order()
    assert sorted(first) == list(range(20)) and list(first) != list(range(20))
    shuffled.on_epoch_end()
    assert shuffled.epoch == 1 and list(shuffled.order()) != list(first)
    again = StoreBatches(images, rows, labels, 8, training=True, seed=4)
    assert list(again.order()) == list(first)  # the seed and epoch alone decide
    batches = epoch(shuffled, 0)
    x = np.concatenate([b[0] for b in batches])
    assert np.array_equal(x, plain[first])  # no augmentation asked: pixels untouched
    assert np.array_equal(np.concatenate([b[1] for b in batches]), labels[first])

    brightness = Augmentation(flip=False, rotation=0.0, zoom=0.0, brightness=0.1)
    data = StoreBatches(images, rows, labels, 20, training=True, augmentation=brightness, seed=4)
    order = data.order()
    shift = data[0][0] - plain[order]
    inside = (plain[order] > 30) & (plain[order] < 220)
    per_image = [np.unique(np.round(s[m], 3)) for s, m in zip(shift, inside, strict=True)]
    assert all(len(u) == 1 for u in per_image), "brightness adds one delta per image"
    assert max(abs(u[0]) for u in per_image) <= 0.1 * 255 + 1e-3
    assert np.array_equal(data[0][0], data[0][0])  # a batch is a function of (seed, epoch)

    everything = StoreBatches(images, rows, labels, 10, training=True,
                              augmentation=Augmentation(rotation=0.05, zoom=0.1), seed=4)
    one, other = epoch(everything, 3), epoch(everything, 4)
    assert np.array_equal(one[1][0], epoch(everything, 3)[1][0])
    assert not np.array_equal(one[1][0], other[1][0])
    moved = np.concatenate([b[0] for b in one]) - plain[everything.order()]
    assert np.abs(moved).mean(axis=(1, 2, 3)).min() > 1.0  # every image was transformed
    # One image 10 times: the order cannot matter, yet every epoch augments it anew.
    same = StoreBatches(images, np.zeros(10, int), labels[:10], 10, training=True,
                        augmentation=Augmentation(rotation=0.05, zoom=0.1), seed=4)
    third, fourth = epoch(same, 3)[0][0], epoch(same, 4)[0][0]
    assert not np.array_equal(third, fourth)
    assert len({x.tobytes() for x in third}) == 10  # and each copy differently


# --------------------------------------------------------------------------- same numbers

COMPARE = textwrap.dedent("""
    import sys
    import numpy as np
    from cxr.evaluation.uncertainty import mc_dropout_predict
    from cxr.interpret.gradcam import GradCam, gradcam
    from cxr.models import build
    name, weights, out = sys.argv[1:]
    model = build(name, image_size=32)
    if not __import__("os").path.exists(weights):  # the first run draws and saves them
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(0, 0.1, w.shape).astype(w.dtype) if w.ndim > 1 else w
                           for w in model.get_weights()])
        model.save_weights(weights)
    model.load_weights(weights)
    x = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    classes = np.array([0, 3, 6, 9, 13])
    head = mc_dropout_predict(model, x, passes=6, seed=3)
    every = mc_dropout_predict(model, x, passes=6, seed=3, layers="all")
    again = mc_dropout_predict(model, x, passes=6, seed=3, layers="all")
    np.savez(out, maps=gradcam(model, x, classes), coarse=GradCam.of(model).coarse(x, classes),
             mean=head.mean, std=head.std, all_mean=every.mean, all_std=every.std,
             all_again=again.mean)
    if __import__("keras").backend.backend() == "jax":
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
""")


@needs_jax
@pytest.mark.slow
@pytest.mark.parametrize("name", ["simple_cnn", "fusion"])
def test_gradcam_and_mc_dropout_agree_between_tensorflow_and_jax(tmp_path, name):
    """The same weights give the same Grad-CAM maps (each backend's own gradient) and the
    same head-dropout Monte-Carlo samples (explicit masks) on TensorFlow and JAX. Fusion's
    concatenation places its two inputs' channels apart (per-group sums, `coarse` is
    (n, h, w, 2) before the ReLU)."""
    weights = tmp_path / f"{name}.weights.h5"
    results = {}
    for backend in ("tensorflow", "jax"):
        out = tmp_path / f"{backend}.npz"
        run_python(["-c", COMPARE, name, weights, out], backend, tmp_path)
        results[backend] = np.load(out)
    tf_run, jax_run = results["tensorflow"], results["jax"]
    assert tf_run["coarse"].ndim == (4 if name == "fusion" else 3)
    assert tf_run["coarse"].max() > 0 and (tf_run["maps"].max(axis=(1, 2)) > 0).any()
    scale = np.abs(tf_run["coarse"]).max()
    assert np.allclose(jax_run["coarse"], tf_run["coarse"], atol=1e-4 * scale, rtol=1e-4)
    assert np.allclose(jax_run["maps"], tf_run["maps"], atol=1e-4)
    assert tf_run["std"].max() > 0
    assert np.allclose(jax_run["mean"], tf_run["mean"], atol=1e-5)
    assert np.allclose(jax_run["std"], tf_run["std"], atol=1e-5)
    # `layers: all` draws its masks from the backend's RNG: seeded (the same twice), sampling.
    for run in (tf_run, jax_run):
        assert np.array_equal(run["all_mean"], run["all_again"])
        assert run["all_std"].max() > 0 and np.isfinite(run["all_mean"]).all()


# --------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def phantom_workdir(tmp_path_factory) -> Path:
    """The data stages (no Keras in them) on a tiny phantom set, simple_cnn at 32 px."""
    root = tmp_path_factory.mktemp("jax_pipeline")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantoms"].update(n_patients=150, image_size=64, processes=1)
    params["sample"]["patient_fraction"] = 1.0
    params["pipeline"].update(image_size=32, batch_size=32)
    params["models"] = {"simple_cnn": {**params["models"]["simple_cnn"], "head_epochs": 1}}
    params["mc_dropout"]["passes"] = 5
    params["evaluate"]["n_boot"] = 20
    params["localize"]["max_images"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    raw = Path("data/raw/phantoms")
    for name, *args in (
        ("phantoms", "--out", raw),
        ("ingest", "--csv", raw / "Data_Entry_2017.csv", "--images", raw,
         "--out", "data/interim/labels.csv"),
        ("sample", "--labels", "data/interim/labels.csv", "--out", "data/interim/sample.csv"),
        ("split", "--sample", "data/interim/sample.csv", "--out", "data/processed/split.csv",
         "--metrics", "metrics/split.json", "--train-val-list", raw / "train_val_list.txt",
         "--test-list", raw / "test_list.txt"),
        ("prepare", "--sample", "data/interim/sample.csv", "--out", "data/prepared",
         "--metrics", "metrics/prepare.json"),
        ("baseline", "--split", "data/processed/split.csv", "--store", "data/prepared",
         "--metrics", "metrics/baseline.json"),
    ):
        run_python([REPO / "stages" / f"{name}.py", *args], "jax", root)
    return root


@needs_jax
@pytest.mark.slow
def test_phantom_pipeline_runs_on_jax_without_tensorflow(phantom_workdir):
    work = phantom_workdir
    jax_stage(work, "train", "simple_cnn", "--split", "data/processed/split.csv",
              "--store", "data/prepared", "--out", "models/simple_cnn",
              "--metrics", "metrics/train/simple_cnn.json",
              "--history", "plots/simple_cnn/train_history.csv",
              "--checkpoints", ".checkpoints/simple_cnn")
    train = json.loads((work / "metrics/train/simple_cnn.json").read_text())
    assert train["epochs"] == {"head": 1} and np.isfinite(train["val_macro_auc"])
    jax_stage(work, "evaluate", "simple_cnn", "--split", "data/processed/split.csv",
              "--store", "data/prepared", "--model-dir", "models/simple_cnn",
              "--metrics", "metrics/eval/simple_cnn.json",
              "--predictions", "predictions/simple_cnn.csv", "--plots", "plots/simple_cnn",
              "--train-metrics", "metrics/train/simple_cnn.json",
              "--split-metrics", "metrics/split.json", "--card", "models/simple_cnn/MODEL_CARD.md")
    evaluation = json.loads((work / "metrics/eval/simple_cnn.json").read_text())
    assert 0.0 < evaluation["macro_auc"] < 1.0
    assert evaluation["mc_dropout"]["passes"] == 5
    predictions = (work / "predictions/simple_cnn.csv").read_text().splitlines()
    assert predictions[0].count("_mean") == len(LABELS)
    jax_stage(work, "localize", "simple_cnn", "--split", "data/processed/split.csv",
              "--store", "data/prepared", "--model-dir", "models/simple_cnn",
              "--bbox", "data/raw/phantoms/BBox_List_2017.csv",
              "--metrics", "metrics/localize/simple_cnn.json",
              "--examples", "plots/simple_cnn/localize_examples.png")
    localize = json.loads((work / "metrics/localize/simple_cnn.json").read_text())
    assert localize["heatmaps"] > 0 and localize["overall"]["pointing"] is not None
    # the simple CNN's chain of valid convolutions and pools: units at their centres
    assert localize["placement"] == "receptive-field centres"
    assert [len(axis) for axis in localize["unit_centres"][0]] == localize["grid"]
    jax_stage(work, "report", "--split", "data/processed/split.csv",
              "--split-metrics", "metrics/split.json", "--prepare-metrics", "metrics/prepare.json",
              "--train-metrics", "metrics/train",
              "--eval-metrics", "metrics/eval", "--localize-metrics", "metrics/localize",
              "--predictions", "predictions", "--baseline", "metrics/baseline.json",
              "--plots", "plots", "--out", "reports", "--summary", "metrics/summary.json",
              "--headline", "metrics/headline.json")
    headline = json.loads((work / "metrics/headline.json").read_text())
    assert np.isfinite(headline["simple_cnn"]["macro_auc"])

    image = next((work / "data/raw/phantoms").rglob("*.png"))
    out = run_python(["-c", WITHOUT_TF, "cxr.cli", "predict", image,
                      "--model", "models/simple_cnn/model.keras", "--passes", "3", "--json",
                      "--heatmap", "heatmaps"], "jax", work)
    rows = json.loads(out[: out.rindex("]") + 1])
    assert len(rows) == 1 and len(rows[0]["findings"]) == len(LABELS)
    assert all(0.0 <= f["mean"] <= 1.0 and f["std"] >= 0.0 for f in rows[0]["findings"])
    assert len(list((work / "heatmaps").glob("*.png"))) == 3  # the top 3 findings


@needs_jax
def test_tf_distribute_strategies_are_refused_on_jax(tmp_path):
    out = run_python(["-c", textwrap.dedent("""
        import sys
        from cxr.backend import BackendError
        from cxr.training import runtime
        runtime.configure(seed=0)
        assert runtime.distribution_strategy("default").num_replicas_in_sync == 1
        try:
            runtime.distribution_strategy("mirrored")
        except BackendError as error:
            print(error)
        assert "tensorflow" not in sys.modules, "TensorFlow was imported"
    """)], "jax", tmp_path)
    assert "train.strategy = 'mirrored' is a tf.distribute strategy" in out
    assert "KERAS_BACKEND=tensorflow" in out
