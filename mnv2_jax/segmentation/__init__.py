"""Semantic segmentation machinery (paper Section 6.3) around the DeepLabv3 module.

The network (`mnv2_jax.models.deeplab`) maps images to per-pixel logits at the
input's size; what has no parameters lives here.

  inference.py   single-scale and multi-scale + left-right flip ('MF') predictions
"""
