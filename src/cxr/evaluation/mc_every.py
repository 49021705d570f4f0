"""Monte-Carlo dropout with ``layers="all"``: every Dropout layer of the model samples.

T full forward passes per batch in inference mode (BatchNorm uses, and never updates, its
moving statistics) with every ``keras.layers.Dropout`` forced on, backbone ones included
(EfficientNet's stochastic depth). Reproducible from the seed for the same batching. The fast
default, sampling only the head, is :mod:`cxr.evaluation.uncertainty`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
from keras import layers, ops

from cxr import backend
from cxr.backend import tf  # imported on first use: the TensorFlow backend only
from cxr.evaluation.mc_common import (
    DEFAULT_PASSES,
    MCResult,
    check_settings,
    collect,
    image_batches,
)


def dropout_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every Dropout layer of `model`, nested sub-models (backbones) included, in order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.Dropout):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(dropout_layers(layer))
    return found


@contextlib.contextmanager
def sampling_every_dropout(model: keras.Model, seed: int = 0):
    """Within the block, every Dropout layer of `model` drops, whatever `training` says.

    Call the model with `training=False` inside it: BatchNormalization then uses (and never
    updates) its moving statistics, and the dropout layers alone are random. Each Dropout
    layer draws its masks with Keras's stateless dropout from its own generator, seeded
    with `(seed, layer index)`. The layers' own `call` is restored on exit.

    Only plain `keras.layers.Dropout` layers are supported (EfficientNet's stochastic depth
    is one, with a per-sample `noise_shape`); a subclass (SpatialDropout...) is an error.
    """
    targets = dropout_layers(model)
    foreign = [layer.name for layer in targets if type(layer) is not layers.Dropout]
    if foreign:
        raise ValueError(f"sampling_every_dropout supports plain Dropout layers; model "
                         f"{model.name!r} has {foreign}.")
    patched = []
    try:
        for index, layer in enumerate(targets):
            generator = keras.random.SeedGenerator(
                int(np.random.SeedSequence((seed, index)).generate_state(1)[0]))
            layer.call = _always_dropping(layer, generator)
            patched.append(layer)
        yield targets
    finally:
        for layer in patched:
            del layer.call


def _always_dropping(layer: keras.layers.Layer, generator):
    """A Dropout `call` that ignores `training` (same rate and noise_shape as `layer`);
    its generator (None at rate 0: nothing is drawn) is the `call`'s `generator`."""

    def call(inputs, training=None):
        if layer.rate == 0.0:
            return inputs
        return keras.random.dropout(inputs, layer.rate, noise_shape=layer.noise_shape,
                                    seed=generator)

    call.generator = generator if layer.rate > 0.0 else None
    return call


def mc_every_dropout(
    model: keras.Model,
    data,
    passes: int = DEFAULT_PASSES,
    seed: int = 0,
    batch_size: int = 64,
    keep_samples: bool = False,
    progress: Callable[[int], None] | None = None,
) -> MCResult:
    """`layers="all"`: T full forward passes sampling every Dropout layer of the model.

    Backbone Dropout layers (EfficientNet's stochastic depth) included; BatchNorm and every
    other layer in inference mode, moving statistics untouched. Each batch runs T times
    through one traced graph. Same arguments and result as `mc_dropout_predict`.
    """
    passes, seed, batch_size = check_settings(passes, seed, batch_size)
    with sampling_every_dropout(model, seed) as targets:
        if backend.is_tensorflow():
            forward = tf.function(lambda x: ops.cast(model(x, training=False), "float32"),
                                  reduce_retracing=True)
        elif backend.name() == "jax":
            forward = _jax_sampling_forward(model, targets)
        else:  # eager: each call draws from the generators and advances them
            def forward(x):
                return ops.cast(model(x, training=False), "float32")

        def sampled_batches() -> Iterator[np.ndarray]:
            for images in image_batches(data, batch_size):
                if int(images.shape[0]) == 0:
                    continue
                yield np.stack([ops.convert_to_numpy(forward(images)) for _ in range(passes)])
                if progress is not None:
                    progress(int(images.shape[0]))

        return collect(sampled_batches(), keep_samples)


def _jax_sampling_forward(model: keras.Model, targets: Sequence[keras.layers.Layer]):
    """A jitted `x -> probabilities` with every Dropout of `targets` sampling.

    The model runs in a ``keras.StatelessScope`` with its variables and the dropout
    generators' states as arguments; each call returns the advanced states, which the next
    call passes in: the same masks, pass after pass, as the stateful eager call would draw.
    """
    import jax

    variables = list(model.variables)
    generators = [layer.call.generator.state for layer in targets
                  if layer.call.generator is not None]

    @jax.jit
    def sample(values, states, x):
        mapping = list(zip(variables + generators, list(values) + list(states), strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            y = ops.cast(model(x, training=False), "float32")
        return y, [scope.get_current_value(state) for state in generators]

    def forward(x):
        y, states = sample([v.value for v in variables], [s.value for s in generators],
                           ops.convert_to_tensor(x, "float32"))
        for state, value in zip(generators, states, strict=True):
            state.assign(value)
        return y

    return forward
