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
        return _MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy = {name!r}; allowed: {', '.join(STRATEGIES)}")


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
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
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def one(leaf):
            parts = leaf.values if isinstance(leaf, tf.distribute.DistributedValues) else [leaf]
            scalar = all(tf.convert_to_tensor(part).shape.rank == 0 for part in parts)
            return parent.reduce(reduce_op, leaf, None if scalar else axis)

        return tf.nest.map_structure(one, value)
