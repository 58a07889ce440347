"""Image classification (the paper's ImageNet experiments): MobileNetV2 / V1, top-1 and top-5."""

from typing import Any, Mapping

import math

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from jax import lax

from mnv2_jax import models
from mnv2_jax import stats
from mnv2_jax.data import datasets
from mnv2_jax.data import preprocessing
from mnv2_jax.models import architecture
from mnv2_jax.models.depthwise import DEPTHWISE_IMPLS
from mnv2_jax.models.layers import KERNEL_INITS
from mnv2_jax.tasks import base
from mnv2_jax.train import state as state_lib
from mnv2_jax.train.step import cross_entropy_loss


def check(condition: bool, field: str, allowed: str, value: Any) -> None:
  """One ValueError line naming the config field, what it must be and what it is."""
  if not condition:
    raise ValueError(f'config.{field} must be {allowed}, got {value!r}.')


def is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_common_model_fields(model) -> None:
  """The fields every task's network has: width, BN momentum, depthwise kernel and dtype."""
  for field, validator in (('width_multiplier', architecture.validate_width_multiplier),
                           ('batch_norm_momentum', architecture.validate_batch_norm_momentum)):
    try:
      validator(model[field])
    except ValueError as e:
      # The architecture validators word their messages with the bare field name.
      raise ValueError(f'config.model.{e}') from None
  check(model.depthwise_impl in DEPTHWISE_IMPLS, 'model.depthwise_impl',
        f'one of {list(DEPTHWISE_IMPLS)}', model.depthwise_impl)
  check(model.dtype in state_lib.DTYPES, 'model.dtype', f'one of {sorted(state_lib.DTYPES)}',
        model.dtype)


def _correct_top_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  k = min(k, logits.shape[-1])
  _, top = lax.top_k(logits, k)
  return jnp.any(top == labels[:, None], axis=-1)


def softmax_loss(logits: jax.Array, batch: base.Batch, label_smoothing: float = 0.0
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The smoothed cross-entropy (the L2 term lives in the optimiser) and training top-1."""
  loss = jnp.mean(cross_entropy_loss(logits, batch['label'], label_smoothing))
  top1 = jnp.mean(jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
  return loss, {'loss': loss, 'top1': top1}


def evaluate_logits(logits: jax.Array, batch: base.Batch, mask: jax.Array
                    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Summed plain cross-entropy (no smoothing) and top-1/top-5 hits; nothing per example."""
  labels = batch['label']
  return {
      'loss_sum': jnp.sum(cross_entropy_loss(logits, labels) * mask),
      'top1_correct': jnp.sum(_correct_top_k(logits, labels, 1) * mask),
      'top5_correct': jnp.sum(_correct_top_k(logits, labels, 5) * mask),
  }, {}


class Classification(base.Task):
  """One label per image; the network's logits against it."""

  name = 'classification'
  headline = (('top1', 'top-1'), ('top5', 'top-5'))
  has_classifier = True

  def validate_config(self) -> None:
    model = self.config.model
    check(model.name in models.MODELS, 'model.name', f'one of {sorted(models.MODELS)}',
          model.name)
    check_common_model_fields(model)
    try:
      architecture.validate_expansion_ratio(model.expansion_ratio)
    except ValueError as e:
      raise ValueError(f'config.model.{e}') from None
    check(model.bottleneck_activation in architecture.BOTTLENECK_ACTIVATIONS,
          'model.bottleneck_activation', f'one of {list(architecture.BOTTLENECK_ACTIVATIONS)}',
          model.bottleneck_activation)
    check(model.shortcut in architecture.SHORTCUTS, 'model.shortcut',
          f'one of {list(architecture.SHORTCUTS)}', model.shortcut)
    check(is_number(model.dropout_rate) and 0 <= model.dropout_rate < 1, 'model.dropout_rate',
          'a number in [0, 1)', model.dropout_rate)
    check(model.kernel_init in KERNEL_INITS, 'model.kernel_init', f'one of {list(KERNEL_INITS)}',
          model.kernel_init)
    for field in ('zero_init_residual', 'zero_init_classifier'):
      check(isinstance(model[field], bool), f'model.{field}', 'True or False', model[field])

  def check_dataset(self, builder: tfds.core.DatasetBuilder) -> None:
    datasets.check_classification_features(self.config.data, builder)

  def num_classes(self, builder: tfds.core.DatasetBuilder) -> int:
    return builder.info.features['label'].num_classes

  def create_model(self, num_classes: int, batch_norm_axis_name: str):
    return state_lib.create_model(self.config, num_classes, batch_norm_axis_name)

  def counts(self, num_classes: int) -> dict[str, Any]:
    model = self.config.model
    counts = stats.count_model(
        model.name, model.width_multiplier, self.config.data.resolution, num_classes,
        model.expansion_ratio if model.name == 'mobilenet_v2' else None)
    return {'model': model.name, 'width_multiplier': model.width_multiplier,
            'resolution': self.config.data.resolution,
            'expansion_ratio': counts['expansion_ratio'], 'params': counts['params'],
            'params_no_bn': counts['params_no_bn'], 'madds': counts['madds']}

  def init_from_target(self) -> base.InitFromTarget:
    model = self.config.model
    return base.InitFromTarget(
        model.name, model.width_multiplier,
        model.expansion_ratio if model.name == 'mobilenet_v2' else None)

  # --- examples ---------------------------------------------------------------

  def train_example(self, example, seed):
    return preprocessing.classification_train_example(example, seed, self.config.data)

  def eval_example(self, example):
    return preprocessing.classification_eval_example(example, self.config.data)

  def padding_example(self):
    return preprocessing.classification_padding_example(self.config.data)

  # --- on the devices -----------------------------------------------------------

  def loss(self, logits, batch):
    return softmax_loss(logits, batch, self.config.optimizer.label_smoothing)

  def evaluate(self, logits, batch, mask):
    return evaluate_logits(logits, batch, mask)

  def eval_metrics(self, sums: Mapping[str, float], examples: Mapping[str, np.ndarray]):
    count = sums['count']
    return {'loss': sums['loss_sum'] / count, 'top1': sums['top1_correct'] / count,
            'top5': sums['top5_correct'] / count}
