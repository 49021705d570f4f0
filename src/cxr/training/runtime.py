"""Process-wide TensorFlow settings: seeds, determinism, mixed precision, distribution.

Called once at the start of a stage, before any model is built.
"""

from __future__ import annotations

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


def configure(seed: int, deterministic: bool = True, mixed_precision: bool = False) -> None:
    """Seed Python, NumPy and TF; make ops deterministic; pick the dtype policy."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """tf.distribute strategy by name. `multiworker` reads the cluster from TF_CONFIG."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy = {name!r}; allowed: {', '.join(STRATEGIES)}")
