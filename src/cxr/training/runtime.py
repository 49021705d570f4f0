"""Process-wide settings: seeds, determinism, mixed precision, distribution.

Called once at the start of a stage, before any model is built. TensorFlow (the default
Keras backend) keeps its own calls (op determinism, ``tf.distribute``); on the other backends
TensorFlow is never imported (:mod:`cxr.backend`).
"""

from __future__ import annotations

import contextlib
import os
import random
import sys

import keras
import numpy as np

from cxr import backend
from cxr.backend import BackendError, tf

STRATEGIES = ("default", "mirrored", "multiworker")
# float16 needs loss scaling (Keras adds it in compile) and has a small range; bfloat16 has
# float32's range (no loss scaling) but fewer mantissa bits, and needs Ampere+ GPUs or TPUs.
PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")
# XLA's switch for deterministic GPU kernels (scatter-adds, reductions); read when JAX starts.
XLA_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def configure(
    seed: int,
    deterministic: bool = True,
    mixed_precision: bool = False,
    precision_policy: str = "mixed_float16",
) -> None:
    """Seed Python, NumPy and the backend; make ops deterministic; pick the dtype policy.

    `precision_policy` (one of PRECISION_POLICIES) is the global policy when
    `mixed_precision` is true; otherwise everything is float32. `deterministic` is
    TensorFlow's op determinism, XLA's deterministic GPU ops for JAX (effective only before
    JAX has started its backend: call this first), and
    ``torch.use_deterministic_algorithms`` for PyTorch.
    """
    if precision_policy not in PRECISION_POLICIES:
        raise ValueError(f"precision_policy = {precision_policy!r}; allowed: "
                         f"{', '.join(PRECISION_POLICIES)}")
    set_random_seed(seed)
    if deterministic:
        _deterministic_ops()
    keras.mixed_precision.set_global_policy(precision_policy if mixed_precision else "float32")


def set_random_seed(seed: int) -> None:
    """``keras.utils.set_random_seed``, without importing TensorFlow on another backend.

    Keras seeds TensorFlow too whenever it is installed (for tf.data pipelines), which
    imports it; on the other backends nothing here uses TensorFlow, so it is hidden from
    that call (and Keras then treats it as absent for the rest of the process).
    """
    if backend.is_tensorflow() or backend.tensorflow_imported():
        keras.utils.set_random_seed(seed)
        return
    with _tensorflow_hidden():
        keras.utils.set_random_seed(seed)


def reseed_host_streams(seed: int) -> None:
    """Python's, NumPy's and Keras' global random streams from `seed`; on TensorFlow, not
    TensorFlow's global seed.

    What ``keras.utils.set_random_seed`` does, less ``tf.random.set_seed``: that call also
    clears TensorFlow's kernel cache (``TFE_ContextClearCaches``), so the next training step
    re-creates every kernel of the traced step. Reseeding before every epoch cost 9-10 s per
    epoch for EfficientNetB0 and 16-19 s for DenseNet121 at 64 px on 2 cores (the default
    pipeline went from 78 to 64 min). Nothing a training epoch runs draws from TensorFlow's global
    seed: the traced step took its op seeds when it was traced, Keras' random ops are
    stateless with seeds from SeedGenerators (Dropout's are reset from the checkpointed
    epoch), and the epoch's data is shuffled and augmented from explicit seeds. On the other
    backends this is :func:`set_random_seed` (TensorFlow is not computing there).
    """
    if not backend.is_tensorflow():
        set_random_seed(seed)
        return
    # keras.utils.set_random_seed's own two Keras steps: the global seed, and a fresh global
    # SeedGenerator (made from that seed when `keras.random` next draws without a seed).
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


@contextlib.contextmanager
def _tensorflow_hidden():
    """Within the block `import tensorflow` fails (a None entry in sys.modules)."""
    name = backend.TENSORFLOW
    had = name in sys.modules
    previous = sys.modules.get(name)
    sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if had:
            sys.modules[name] = previous  # type: ignore[assignment]
        else:
            del sys.modules[name]


def _deterministic_ops() -> None:
    kind = backend.name()
    if kind == backend.TENSORFLOW:
        tf.config.experimental.enable_op_determinism()
    elif kind == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        if XLA_DETERMINISM_FLAG.split("=")[0] not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISM_FLAG}".strip()
    elif kind == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)


class SingleDevice:
    """The strategy of a non-TensorFlow backend: one process, `scope()` does nothing."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def distribution_strategy(name: str):
    """tf.distribute strategy by name. `multiworker` reads the cluster from TF_CONFIG.

    On another Keras backend only `default` exists (a :class:`SingleDevice`); the others are
    a BackendError, as tf.distribute is TensorFlow's.
    """
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy = {name!r}; allowed: {', '.join(STRATEGIES)}")
    if not backend.is_tensorflow():
        if name == "default":
            return SingleDevice()
        raise BackendError(f"train.strategy = {name!r} is a tf.distribute strategy and needs "
                           f"the TensorFlow backend; Keras runs on {backend.name()!r}. Use "
                           f"train.strategy: default, or KERAS_BACKEND=tensorflow")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return _multiworker_strategy()


def _multiworker_strategy():
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3's `fit` expects of it.

    Keras 3 (TF backend) calls ``strategy.reduce`` in two ways that TF's collective
    (multi-worker) implementation rejects, while MirroredStrategy accepts them:

    * ``_maybe_symbolic_build`` reduces the first batch, an ``(images, labels)`` tuple of
      per-replica values, with ``reduce("MEAN", batch, axis=None)``: the collective path
      tries to turn the whole tuple into one tensor ("Attempt to convert a value
      (PerReplica:...) ... to a Tensor"). Here a structure is reduced leaf by leaf.
    * ``reduce_per_replica`` averages every log of a train step (loss, metric results:
      scalars) with ``reduce("MEAN", value, axis=0)``, and a scalar has no axis 0 ("Invalid
      reduction dimension 0 for input with 0 dimensions"). Here a scalar is averaged over
      the replicas (axis None), which is what the mean of a scalar log means.

    The class is made here, not at import: this module must import without TensorFlow.
    """

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            parent = super()

            def one(leaf):
                parts = (leaf.values if isinstance(leaf, tf.distribute.DistributedValues)
                         else [leaf])
                scalar = all(tf.convert_to_tensor(part).shape.rank == 0 for part in parts)
                return parent.reduce(reduce_op, leaf, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy()
