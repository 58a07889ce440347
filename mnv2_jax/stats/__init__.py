"""Accounting: analytic parameter and multiply-add counts (`python -m mnv2_jax.stats`)."""

from mnv2_jax.stats.counts import LayerCount, MODEL_NAMES, count_model, layer_counts
