"""Layer names and sizes other modules rely on: the interface of every cxr model.

Like ``conv5_block16_concat`` in Keras' DenseNet121, these names are a contract: Grad-CAM,
Monte-Carlo dropout, the fusion cut and saved-model metadata find layers by them. Pure
Python (no Keras), so the report and the CLI can read them without TensorFlow.
"""

# Global average pool that ends the trunk; only Dropout/Dense layers follow it.
FEATURES_LAYER = "features"
# The 14-sigmoid output layer.
OUTPUT_LAYER = "predictions"
# Weightless identity on a nested keras.applications backbone's output (its last spatial map).
FEATURE_MAP_LAYER = "feature_map"
# Fusion: the concatenated, projected DenseNet + EfficientNet map, before self-attention.
FUSION_CONCAT_LAYER = "fusion_concat"
# Fusion: the SAGAN-style self-attention over the fused map.
FUSION_ATTENTION_LAYER = "attention"
# simple_cnn: the last of its three ``blockN_conv`` convolutions.
SIMPLE_CNN_LAST_CONV = "block3_conv"

# keras.applications refuse smaller inputs (ImageNet weights or not).
APPLICATION_MIN_IMAGE_SIZE = 32
# Three valid 3x3 convolutions, each followed by a 2x2 pool, leave a 1x1 map from 22 px.
SIMPLE_CNN_MIN_IMAGE_SIZE = 22
