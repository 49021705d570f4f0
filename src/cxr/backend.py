"""Which Keras backend runs, and TensorFlow imported only where it is the backend.

TensorFlow is the default backend (``KERAS_BACKEND`` unset) and keeps its own code paths:
tf.data input, ``tf.distribute`` strategies, ``tf.function`` graphs. With ``KERAS_BACKEND=jax``
(or ``torch``) the pipeline runs on backend-neutral code (a ``keras.utils.PyDataset`` input,
``keras.ops``, the backend's own gradient) and never imports TensorFlow, even where it is
installed: modules that need it on the TensorFlow path reach it through :data:`tf`, which
imports it on first use.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import keras

TENSORFLOW = "tensorflow"


class BackendError(RuntimeError):
    """A feature asked of a Keras backend that does not have it."""


def name() -> str:
    """The Keras backend in use: ``tensorflow``, ``jax``, ``torch`` or ``numpy``."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    return name() == TENSORFLOW


def require_tensorflow(what: str) -> None:
    """Raise BackendError naming ``what`` unless TensorFlow is the Keras backend."""
    if not is_tensorflow():
        raise BackendError(f"{what} needs the TensorFlow backend; Keras runs on {name()!r} "
                           f"(set KERAS_BACKEND=tensorflow, or leave it unset)")


def tensorflow_imported() -> bool:
    """Whether this process has imported TensorFlow (tests of the other backends check it)."""
    return sys.modules.get(TENSORFLOW) is not None


class _LazyModule:
    """A module imported on first attribute access (``tf.data`` imports TensorFlow then)."""

    def __init__(self, module: str):
        self._name = module
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}>"


# `from cxr.backend import tf`: TensorFlow for the TensorFlow-only code paths, imported there.
tf = _LazyModule(TENSORFLOW)
