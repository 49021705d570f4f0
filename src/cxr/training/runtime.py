"""Process-wide TensorFlow settings: seeds, determinism, mixed precision, distribution.

Called once at the start of a stage, before any model is built.
"""

from __future__ import annotations

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")
# float16 needs loss scaling (Keras adds it in compile) and has a small range; bfloat16 has
# float32's range (no loss scaling) but fewer mantissa bits, and needs Ampere+ GPUs or TPUs.
PRECISION_POLICIES = ("mixed_float16", "mixed_bfloat16")


def configure(
    seed: int,
    deterministic: bool = True,
    mixed_precision: bool = False,
    precision_policy: str = "mixed_float16",
) -> None:
    """Seed Python, NumPy and TF; make ops deterministic; pick the dtype policy.

    `precision_policy` (one of PRECISION_POLICIES) is the global policy when
    `mixed_precision` is true; otherwise everything is float32.
    """
    if precision_policy not in PRECISION_POLICIES:
        raise ValueError(f"precision_policy = {precision_policy!r}; allowed: "
                         f"{', '.join(PRECISION_POLICIES)}")
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(precision_policy if mixed_precision else "float32")


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """tf.distribute strategy by name. `multiworker` reads the cluster from TF_CONFIG."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy = {name!r}; allowed: {', '.join(STRATEGIES)}")
