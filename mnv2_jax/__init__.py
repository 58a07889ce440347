"""MobileNetV2 in JAX/Flax: models, data, training and accounting."""
