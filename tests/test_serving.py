"""A trained model logged as an MLflow model answers `mlflow models predict` offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cxr import tracking
from cxr.labels import LABELS
from cxr.models import build

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_logged_model_predicts_through_the_mlflow_cli(tmp_path):
    import mlflow

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 2, (8, 14)).astype(np.float32)
    model = build("simple_cnn", image_size=32)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # a trained model, not a fresh one

    from cxr import serving

    uri = tracking.resolve_tracking_uri("", tmp_path)
    with tracking.start_run(uri, "serving", "train@simple_cnn", {}, {},
                            tmp_path / "artifacts") as run:
        info = serving.log_model(model, LABELS, x[:2])
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32, 32, 3)
    assert [column.name for column in info.signature.outputs.inputs] == list(LABELS)

    request = tmp_path / "input.json"
    request.write_text(json.dumps({"inputs": x[:3].tolist()}))
    out = tmp_path / "out.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlflow")), "models", "predict",
         "-m", f"runs:/{run.run_id}/model", "-i", str(request), "-o", str(out),
         "--env-manager", "local"],
        env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["predictions"]
    assert len(rows) == 3
    assert all(list(row) == list(LABELS) for row in rows)
    scores = np.array([[row[label] for label in LABELS] for row in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_allclose(scores, model.predict(x[:3], verbose=0), atol=1e-5)

    # The stored example is a valid request too (what the README points users to).
    example = mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model",
                                                  tracking_uri=uri, dst_path=str(tmp_path / "m"))
    assert (Path(example) / "serving_input_example.json").is_file()
    assert (Path(example) / "code" / "cxr" / "models" / "layers.py").is_file()


def test_wrapper_predict_has_a_type_hint_mlflow_accepts():
    """MLflow checks the hint when the class is defined (at import) and, without one, warns
    'Add type hints to the `predict` method' in every training log."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "PYTHONWARNINGS": "always"}
    done = subprocess.run([sys.executable, "-c", "import cxr.serving"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "type hints to the `predict`" not in done.stderr, done.stderr
