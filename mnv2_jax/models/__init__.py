"""Networks: MobileNetV2 (the paper) and MobileNetV1 (its Figure 5 baseline)."""

from mnv2_jax.models.architecture import make_divisible, mobilenet_v1_spec, mobilenet_v2_spec
from mnv2_jax.models.mobilenet_v1 import MobileNetV1
from mnv2_jax.models.mobilenet_v2 import InvertedResidual, MobileNetV2

MODELS = {'mobilenet_v2': MobileNetV2, 'mobilenet_v1': MobileNetV1}
