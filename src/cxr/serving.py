"""A trained cxr model as an MLflow model (pyfunc flavour), servable offline.

``log_model`` logs the Keras model file with a thin :class:`KerasImageModel` wrapper, the
``cxr`` package itself (``code_paths``: the custom layers must be registered before the
``.keras`` file loads), a signature and an input example, so that

    mlflow models predict -m runs:/RUN_ID/model -i input.json --env-manager local

answers one row of 14 probabilities (columns named by finding) per input image. The input is
what the Keras model takes: float32 raw 0-255 pixels, shape (N, size, size, 3), gray images
repeated over the 3 channels. Why pyfunc rather than ``mlflow.keras``: docs/DESIGN.md,
"MLflow runs".
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

MODEL_NAME = "model"  # runs:/RUN_ID/model
KERAS_ARTIFACT = "keras_model"


class KerasImageModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: images (N, H, W, 3) float32 0-255 -> DataFrame of N x labels."""

    def __init__(self, labels: Sequence[str]):
        self.labels = [str(label) for label in labels]
        self.model = None

    def load_context(self, context) -> None:
        import keras

        import cxr.models.layers  # noqa: F401  (registers the custom layers)

        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)

    # The np.ndarray hint is one MLflow infers no schema from: the logged TensorSpec
    # signature stays the contract, and MLflow stops asking for type hints at logging.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        images = np.asarray(model_input, dtype=np.float32)
        expected = tuple(self.model.input_shape[1:])
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"cxr model: input has shape {images.shape}; expected "
                             f"(N, {', '.join(map(str, expected))}) raw 0-255 pixels")
        scores = np.asarray(self.model.predict(images, verbose=0), dtype=np.float64)
        return pd.DataFrame(scores, columns=self.labels)


def log_model(model, labels: Sequence[str], example: np.ndarray, name: str = MODEL_NAME):
    """Log ``model`` (a Keras model taking raw pixels) to the active run; its ModelInfo.

    ``example``: one or a few input images (N, H, W, 3), stored as the input example (and
    checked against the model there).
    """
    from importlib.metadata import PackageNotFoundError, version

    import keras
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    import cxr
    from cxr.models.saving import save_model

    example = np.asarray(example, dtype=np.float32)
    if example.ndim != 4 or example.shape[1:] != tuple(model.input_shape[1:]):
        raise ValueError(f"log_model: example has shape {example.shape}; expected "
                         f"(N, {', '.join(map(str, model.input_shape[1:]))})")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([ColSpec("double", str(label)) for label in labels]))
    # The backend the model was trained on serves it (no TensorFlow import on JAX/torch).
    backend_package = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.backend.backend(), keras.backend.backend())
    requirements = [f"keras=={keras.__version__}", f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}", f"mlflow=={mlflow.__version__}"]
    for package in ([backend_package, "tensorflow-cpu"] if backend_package == "tensorflow"
                    else [backend_package]):
        try:
            requirements.append(f"{package}=={version(package)}")
            break
        except PackageNotFoundError:
            continue
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        save_model(model, path)
        return mlflow.pyfunc.log_model(
            name=name, python_model=KerasImageModel(labels),
            artifacts={KERAS_ARTIFACT: str(path)}, code_paths=[str(Path(cxr.__file__).parent)],
            signature=signature, input_example=example, pip_requirements=requirements)
