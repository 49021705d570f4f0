"""Per-backbone input preprocessing, in one place, as layers inside the models.

Every model takes float32 images in the raw 0-255 pixel range (what the tf.data pipeline
yields) and carries its own preprocessing as its first layer. A saved model therefore takes
raw pixels everywhere (predict, Grad-CAM), and the fusion model can preprocess each of its
two branches differently.

| backbone          | expects                     | layer                          |
| ----------------- | --------------------------- | ------------------------------ |
| densenet121       | torch mode: x/255, -mean, /std | `ImageNetNormalization`     |
| efficientnetb0/b3 | 0-255 (normalizes inside)   | `Identity` (passes through)    |
| simple_cnn        | -1 to 1 (zero-centred)      | `Rescaling(1/127.5, offset=-1)` |

None of these layers has weights.
"""

from __future__ import annotations

from keras import layers

from cxr.models.layers import ImageNetNormalization

PREPROCESSING_BACKBONES: tuple[str, ...] = (
    "simple_cnn",
    "densenet121",
    "efficientnetb0",
    "efficientnetb3",
)


def preprocessing_layer(backbone_name: str, name: str | None = None) -> layers.Layer:
    """The layer that turns raw 0-255 pixels into what `backbone_name` expects.

    Args:
        backbone_name: one of `PREPROCESSING_BACKBONES`.
        name: the layer's name; defaults to `"<backbone_name>_preprocessing"`.
    """
    name = name or f"{backbone_name}_preprocessing"
    if backbone_name == "densenet121":
        return ImageNetNormalization(name=name)
    if backbone_name.startswith("efficientnet") and backbone_name in PREPROCESSING_BACKBONES:
        # Keras's EfficientNet rescales and normalizes inside itself; it wants 0-255.
        return layers.Identity(name=name)
    if backbone_name == "simple_cnn":
        # Zero-centred: the simple CNN has no BatchNorm, and on [0, 1] inputs it sat at chance
        # for its first ~6 epochs (docs/DESIGN.md).
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name)
    raise ValueError(
        f"preprocessing_layer: unknown backbone_name {backbone_name!r}; "
        f"allowed: {', '.join(PREPROCESSING_BACKBONES)}."
    )
