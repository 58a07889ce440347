"""Semantic segmentation (paper Section 6.3): Mobile DeepLabv3, per-pixel labels, mIOU.

The network is `models.deeplab.DeepLabV3` (logits at the input's size); a
batch is {'image': float32 [B, R, R, 3] in [-1, 1], 'label': int32 [B, R, R]},
R = data.resolution, with `ignore_label` (255, as PASCAL VOC's object
boundaries) on the pixels that count nowhere: the padding of small or
down-scaled images and of padded eval batches.

Config (besides the shared data/optimizer/train sections):
  config.model         `model_section()`: name 'deeplabv3', backbone,
                       width_multiplier, output_stride, aspp, aspp_convolution,
                       dropout_rate, batch_norm_momentum, depthwise_impl, dtype,
                       kernel_init, zero_init_residual, num_classes.
  config.segmentation  `segmentation_section()`: ignore_label, the random
                       scale of the training examples, and how evaluation
                       runs (output stride, multi-scale + flip).

Decisions where the issue is silent (docs/segmentation.md says more):
  - Classes. The built-in 'procedural_shapes_segmentation' has 1 + the shape
    classes of its shapes version (21 for 2.0.0: background and 20 shapes),
    read from the builder config; model.num_classes may be left None or must
    agree. Any other dataset has no such metadata (TFDS keeps masks as plain
    images), so model.num_classes must be set (background included, 21 for
    PASCAL VOC).
  - Training examples are DeepLab's (`input_preprocess.preprocess_image_and_label`):
    a random scale from min_scale_factor to max_scale_factor in steps of
    scale_factor_step_size (0.5-2.0 by 0.25; 0 draws it uniformly), image
    bilinear and mask nearest-neighbour; padded at the bottom and the right up
    to the crop size (image with 0, the mean grey of [-1, 1] as DeepLab's mean
    pixel; mask with ignore_label); a random R x R crop and a random left-right
    flip of both together. No colour jitter (DeepLab has none;
    data.color_jitter and data.min_crop_area are classification's and not read).
    The randomness is stateless from the example's seed, so a resumed run sees
    the same examples.
  - Eval examples: scaled so that the longer side is R (aspect kept; image
    bilinear, mask nearest), then padded at the bottom and the right to R x R
    (0 / ignore_label), as DeepLab pads its eval crop. The built-in images are
    R x R when rendered at data.resolution, and then pass unchanged; mIOU of an
    image of another size is measured on its resized mask, not its original one.
  - Loss: softmax cross-entropy averaged over the device's non-ignored pixels
    (label smoothing if config.optimizer.label_smoothing says so; DeepLab has
    none); the train step averages it over the devices. Metrics 'loss' and
    'pixel_accuracy' (non-ignored pixels).
  - Evaluation: one confusion matrix [C, C] (rows ground truth, columns
    prediction) of the non-ignored pixels of real examples, summed over devices
    and batches. By default the trained network at its own output stride, one
    scale; `segmentation.eval_output_stride` evaluates the same weights at
    another stride (DeepLab: train at 16, evaluate at 8) and
    `segmentation.eval_multi_scale_flip` averages Table 7's 6 scales x 2
    mirrors (`mnv2_jax.segmentation.inference`); the loss is then the cross-
    entropy of the averaged probabilities. mIOU is the mean IoU over the classes
    that occur in the ground truth or the predictions (tf.metrics.mean_iou's
    and DeepLab's rule: a class absent from both has no IoU).
"""

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from ml_collections import config_dict

from mnv2_jax import config_sections
from mnv2_jax.data import datasets
from mnv2_jax.data import scenes
from mnv2_jax.models import deeplab_architecture
from mnv2_jax.models.deeplab import DeepLabV3
from mnv2_jax.models.layers import KERNEL_INITS
from mnv2_jax.segmentation import inference
from mnv2_jax.stats import segmentation as segmentation_stats
from mnv2_jax.tasks import base
from mnv2_jax.tasks.classification import check, check_common_model_fields, is_number
from mnv2_jax.train import state as state_lib
from mnv2_jax.train.step import cross_entropy_loss

MODEL_NAME = 'deeplabv3'
IGNORE_LABEL = 255
# DeepLab's train.py flags: scales 0.5, 0.75, ..., 2.0.
MIN_SCALE_FACTOR, MAX_SCALE_FACTOR, SCALE_FACTOR_STEP_SIZE = 0.5, 2.0, 0.25
OUTPUT_STRIDES = (8, 16, 32)
IMAGE_FEATURE, MASK_FEATURE = 'image', 'segmentation_mask'


def model_section(**changes: Any) -> ml_collections.ConfigDict:
  """config.model of Table 7's MobileNetV2* DeepLabv3 (OS 16, ASPP) with `changes`."""
  section = ml_collections.ConfigDict()
  section.name = MODEL_NAME
  section.backbone = 'mobilenet_v2'  # or 'mobilenet_v1'
  section.width_multiplier = 1.0
  section.output_stride = 16  # 8, 16 or 32
  section.aspp = True  # False: image pooling + 1x1 conv only
  section.aspp_convolution = 'regular'  # Table 7's counts; or 'separable'
  section.dropout_rate = 0.1  # DeepLab's keep_prob 0.9
  section.batch_norm_momentum = 0.9997  # DeepLab's BN decay
  section.depthwise_impl = 'auto'
  section.dtype = 'float32'
  section.kernel_init = 'truncated_normal'  # the backbone's; the head keeps DeepLab's
  section.zero_init_residual = False  # MobileNetV2's residual branches start at 0
  # Classes with background; None: from the built-in dataset (required for others).
  section.num_classes = config_dict.placeholder(int)
  return config_sections.with_changes(section, 'model', changes)


def segmentation_section(**changes: Any) -> ml_collections.ConfigDict:
  """config.segmentation: the ignored label, the training examples' random scale and
  how evaluation runs."""
  section = ml_collections.ConfigDict()
  section.ignore_label = IGNORE_LABEL  # mask value that counts nowhere (uint8: <= 255)
  section.min_scale_factor = MIN_SCALE_FACTOR
  section.max_scale_factor = MAX_SCALE_FACTOR
  section.scale_factor_step_size = SCALE_FACTOR_STEP_SIZE  # 0: uniform in the range
  # Evaluation: None = model.output_stride (DeepLab trains at 16, evaluates at 8 too).
  section.eval_output_stride = config_dict.placeholder(int)
  section.eval_multi_scale_flip = False  # Table 7's MF: 6 scales x 2 mirrors, 12x the cost
  return config_sections.with_changes(section, 'segmentation', changes)


# --- examples (tf) -------------------------------------------------------------


def _decode_image(image: tf.Tensor) -> tf.Tensor:
  """float32 [H, W, 3] in [-1, 1] from an encoded string or a uint8 image."""
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return tf.cast(image, tf.float32) / 127.5 - 1.0


def _decode_mask(mask: tf.Tensor) -> tf.Tensor:
  """int32 [H, W, 1] from an encoded PNG string or a uint8 [H, W(, 1)] mask."""
  if mask.dtype == tf.string:
    mask = tf.io.decode_png(mask, channels=1)
  elif mask.shape.rank == 2:
    mask = mask[..., None]
  mask.set_shape([None, None, 1])
  return tf.cast(mask, tf.int32)


def _resize(image: tf.Tensor, mask: tf.Tensor, size: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Image bilinear, mask nearest-neighbour, both with the same (half-pixel) geometry."""
  return (tf.image.resize(image, size, method='bilinear'),
          tf.image.resize(mask, size, method='nearest'))


def _pad_bottom_right(image: tf.Tensor, mask: tf.Tensor, height: tf.Tensor, width: tf.Tensor,
                      ignore_label: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Pads to at least height x width: the image with 0 (mean grey), the mask ignored."""
  shape = tf.shape(mask)
  paddings = [[0, tf.maximum(height - shape[0], 0)], [0, tf.maximum(width - shape[1], 0)],
              [0, 0]]
  return (tf.pad(image, paddings, constant_values=0.0),
          tf.pad(mask, paddings, constant_values=ignore_label))


def random_scale(seed: tf.Tensor, min_scale: float, max_scale: float, step_size: float
                 ) -> tf.Tensor:
  """DeepLab's `get_random_scale`: one of min, min + step, ..., max (uniform if step is 0)."""
  if min_scale == max_scale:
    return tf.constant(min_scale, tf.float32)
  if not step_size:
    return tf.random.stateless_uniform([], seed, min_scale, max_scale)
  num_steps = int((max_scale - min_scale) / step_size + 1)
  index = tf.random.stateless_uniform([], seed, 0, num_steps, dtype=tf.int32)
  return min_scale + tf.cast(index, tf.float32) * step_size


def train_example(image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, resolution: int,
                  section: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
  """DeepLab's training example: random scale, pad, random crop, random flip (module doc)."""
  scale_seed, crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=3))
  image, mask = _decode_image(image), _decode_mask(mask)
  scale = random_scale(scale_seed, section.min_scale_factor, section.max_scale_factor,
                       section.scale_factor_step_size)
  size = tf.cast(tf.round(tf.cast(tf.shape(mask)[:2], tf.float32) * scale), tf.int32)
  image, mask = _resize(image, mask, tf.maximum(size, 1))
  image, mask = _pad_bottom_right(image, mask, resolution, resolution, section.ignore_label)
  # One crop and one flip of image and mask stacked, so they stay aligned.
  both = tf.concat([image, tf.cast(mask, tf.float32)], axis=-1)
  both = tf.image.stateless_random_crop(both, [resolution, resolution, 4], crop_seed)
  both = tf.image.stateless_random_flip_left_right(both, flip_seed)
  return {'image': both[..., :3], 'label': tf.cast(tf.round(both[..., 3]), tf.int32)}


def eval_example(image: tf.Tensor, mask: tf.Tensor, resolution: int,
                 ignore_label: int) -> dict[str, tf.Tensor]:
  """The longer side scaled to `resolution`, padded at the bottom/right to a square."""
  image, mask = _decode_image(image), _decode_mask(mask)
  shape = tf.cast(tf.shape(mask)[:2], tf.float32)
  size = tf.cast(tf.round(shape * resolution / tf.reduce_max(shape)), tf.int32)
  image, mask = _resize(image, mask, tf.clip_by_value(size, 1, resolution))
  image, mask = _pad_bottom_right(image, mask, resolution, resolution, ignore_label)
  image.set_shape([resolution, resolution, 3])
  mask.set_shape([resolution, resolution, 1])
  return {'image': image, 'label': mask[..., 0]}


def padding_example(resolution: int, ignore_label: int) -> dict[str, tf.Tensor]:
  return {'image': tf.zeros([resolution, resolution, 3], tf.float32),
          'label': tf.fill([resolution, resolution], tf.constant(ignore_label, tf.int32))}


# --- on the devices ---------------------------------------------------------------


def _valid_pixels(labels: jax.Array, num_classes: int, ignore_label: int) -> jax.Array:
  # Labels outside [0, num_classes) would have no logit: they count nowhere either.
  return (labels != ignore_label) & (labels >= 0) & (labels < num_classes)


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int = IGNORE_LABEL,
                        label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(per-pixel cross-entropy [...], valid [...]); 0 on ignored pixels."""
  valid = _valid_pixels(labels, logits.shape[-1], ignore_label)
  losses = cross_entropy_loss(logits, jnp.where(valid, labels, 0), label_smoothing)
  return jnp.where(valid, losses, 0.0), valid


def segmentation_loss(logits: jax.Array, batch: base.Batch, ignore_label: int = IGNORE_LABEL,
                      label_smoothing: float = 0.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy averaged over the non-ignored pixels, and their pixel accuracy."""
  labels = batch['label']
  losses, valid = pixel_cross_entropy(logits, labels, ignore_label, label_smoothing)
  num_valid = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
  loss = jnp.sum(losses) / num_valid
  correct = (jnp.argmax(logits, -1) == labels) & valid
  return loss, {'loss': loss, 'pixel_accuracy': jnp.sum(correct) / num_valid}


def confusion_matrix(labels: jax.Array, predictions: jax.Array, weights: jax.Array,
                     num_classes: int) -> jax.Array:
  """int32 [C, C]: pixels of ground-truth class i predicted as j, where `weights` is True."""
  index = jnp.where(weights, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(index.reshape(-1), length=num_classes * num_classes + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


def evaluate_logits(logits: jax.Array, batch: base.Batch, mask: jax.Array,
                    ignore_label: int = IGNORE_LABEL
                    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Sums over the real examples' non-ignored pixels: confusion matrix, loss, pixels."""
  labels = batch['label']
  losses, valid = pixel_cross_entropy(logits, labels, ignore_label)
  valid = valid & (mask[:, None, None] > 0)
  predictions = jnp.argmax(logits, -1)
  return {
      'confusion_matrix': confusion_matrix(labels, predictions, valid, logits.shape[-1]),
      'loss_sum': jnp.sum(jnp.where(valid, losses, 0.0)),
      'pixels': jnp.sum(valid).astype(jnp.float32),
  }, {}


# --- on the host ------------------------------------------------------------------


def mean_iou(confusion: np.ndarray) -> float:
  """Mean IoU over the classes present in the ground truth or the predictions (NaN if none)."""
  confusion = np.asarray(confusion, np.float64)
  true_positives = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positives
  present = union > 0
  if not present.any():
    return float('nan')
  return float(np.mean(true_positives[present] / union[present]))


def pixel_accuracy(confusion: np.ndarray) -> float:
  confusion = np.asarray(confusion, np.float64)
  total = confusion.sum()
  return float(np.trace(confusion) / total) if total else float('nan')


def is_built_in(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.name == datasets.BUILT_IN_SEGMENTATION_DATASET


class Segmentation(base.Task):
  """A class for every pixel; DeepLabv3's per-pixel logits against it."""

  name = 'segmentation'
  headline = (('miou', 'mIOU'), ('pixel_accuracy', 'pixel accuracy'))

  def validate_config(self) -> None:
    model = self.config.model
    check(model.get('name') == MODEL_NAME, 'model.name',
          f'{MODEL_NAME!r} for config.task=\'segmentation\'', model.get('name'))
    check(model.backbone in deeplab_architecture.BACKBONES, 'model.backbone',
          f'one of {list(deeplab_architecture.BACKBONES)}', model.backbone)
    check_common_model_fields(model)
    check(model.output_stride in OUTPUT_STRIDES and not isinstance(model.output_stride, bool),
          'model.output_stride', f'one of {list(OUTPUT_STRIDES)} (the paper: 16 or 8)',
          model.output_stride)
    check(isinstance(model.aspp, bool), 'model.aspp', 'True or False', model.aspp)
    check(model.aspp_convolution in deeplab_architecture.ASPP_CONVOLUTIONS,
          'model.aspp_convolution', f'one of {list(deeplab_architecture.ASPP_CONVOLUTIONS)}',
          model.aspp_convolution)
    check(is_number(model.dropout_rate) and 0 <= model.dropout_rate < 1, 'model.dropout_rate',
          'a number in [0, 1)', model.dropout_rate)
    check(model.kernel_init in KERNEL_INITS, 'model.kernel_init', f'one of {list(KERNEL_INITS)}',
          model.kernel_init)
    check(isinstance(model.zero_init_residual, bool), 'model.zero_init_residual',
          'True or False', model.zero_init_residual)
    check(not model.zero_init_residual or model.backbone == 'mobilenet_v2',
          'model.zero_init_residual', 'False with the mobilenet_v1 backbone (no residual '
          'branches)', model.zero_init_residual)
    num_classes = model.get('num_classes')
    check(num_classes is None or (isinstance(num_classes, int) and
                                  not isinstance(num_classes, bool) and num_classes >= 2),
          'model.num_classes', 'None (from the built-in dataset) or an integer >= 2 '
          '(background included)', num_classes)
    section = self.config.get('segmentation')
    check(isinstance(section, ml_collections.ConfigDict), 'segmentation',
          'a ConfigDict section (mnv2_jax.tasks.segmentation.segmentation_section())', section)
    ignore_label = section.get('ignore_label')
    check(isinstance(ignore_label, int) and not isinstance(ignore_label, bool) and
          0 <= ignore_label <= 255, 'segmentation.ignore_label',
          'an integer in [0, 255] (masks are uint8; PASCAL VOC: 255)', ignore_label)
    low, high = section.get('min_scale_factor'), section.get('max_scale_factor')
    check(is_number(low) and low > 0, 'segmentation.min_scale_factor', 'a number > 0', low)
    check(is_number(high) and high >= low, 'segmentation.max_scale_factor',
          f'a number >= min_scale_factor ({low})', high)
    step = section.get('scale_factor_step_size')
    check(is_number(step) and step >= 0, 'segmentation.scale_factor_step_size',
          'a number >= 0 (0: any scale in the range)', step)
    eval_stride = section.get('eval_output_stride')
    check(eval_stride is None or (eval_stride in OUTPUT_STRIDES and
                                  not isinstance(eval_stride, bool)),
          'segmentation.eval_output_stride',
          f'None (model.output_stride) or one of {list(OUTPUT_STRIDES)}', eval_stride)
    check(isinstance(section.get('eval_multi_scale_flip', False), bool),
          'segmentation.eval_multi_scale_flip', 'True or False',
          section.get('eval_multi_scale_flip'))

  def check_dataset(self, builder: tfds.core.DatasetBuilder) -> None:
    features = builder.info.features
    names = sorted(getattr(features, 'keys', lambda: ())())
    missing = [name for name in (IMAGE_FEATURE, MASK_FEATURE) if name not in names]
    if missing:
      raise ValueError(
          f'Dataset {self.config.data.dataset!r} has no {" or ".join(map(repr, missing))} '
          f'feature (it has {names}); config.task=\'segmentation\' needs an image and a '
          f'per-pixel class mask (e.g. {datasets.BUILT_IN_SEGMENTATION_DATASET!r}).')

  def num_classes(self, builder: tfds.core.DatasetBuilder) -> int:
    configured = self.config.model.get('num_classes')
    if is_built_in(builder):
      count = 1 + len(scenes.class_names(builder.builder_config.shapes_version))
      check(configured in (None, count), 'model.num_classes',
            f'None or {count} for {builder.name} (background and its '
            f'{count - 1} shape classes)', configured)
    else:
      check(configured is not None, 'model.num_classes',
            f'the number of classes of {self.config.data.dataset!r}, background included '
            f'(21 for PASCAL VOC)', configured)
      count = configured
    ignore_label = self.config.segmentation.ignore_label
    check(ignore_label >= count, 'segmentation.ignore_label',
          f'>= the number of classes ({count}), or a class would be ignored', ignore_label)
    return count

  # --- the network --------------------------------------------------------------

  def create_model(self, num_classes: int, batch_norm_axis_name: str) -> nn.Module:
    model = self.config.model
    kwargs = dict(num_classes=num_classes, backbone=model.backbone,
                  output_stride=model.output_stride, aspp=model.aspp,
                  aspp_convolution=model.aspp_convolution,
                  width_multiplier=model.width_multiplier, dropout_rate=model.dropout_rate,
                  depthwise_impl=model.depthwise_impl,
                  batch_norm_momentum=model.batch_norm_momentum,
                  dtype=state_lib.DTYPES[model.dtype], kernel_init=model.kernel_init,
                  zero_init_residual=model.zero_init_residual)
    if self.config.train.get('sync_batch_norm', False):
      kwargs['batch_norm_axis_name'] = batch_norm_axis_name
    return DeepLabV3(**kwargs)

  def init_from_target(self) -> base.InitFromTarget:
    return base.InitFromTarget.backbone(self.config.model.backbone,
                                        self.config.model.width_multiplier)

  def _evaluation(self) -> tuple[int, bool]:
    """(output stride, multi-scale + flip) of evaluation; runs configured before these
    fields existed evaluated at the training stride, one scale."""
    section = self.config.segmentation
    stride = section.get('eval_output_stride') or self.config.model.output_stride
    return stride, section.get('eval_multi_scale_flip', False)

  def predictor(self, model: DeepLabV3):
    """The trained variables at the evaluation's output stride (the weights do not
    depend on it: only dilations and ASPP rates change), optionally multi-scale +
    flip; MF's averaged probabilities p come out as log p, logits whose softmax is p."""
    stride, multi_scale_flip = self._evaluation()
    evaluated = model if stride == model.output_stride else model.clone(output_stride=stride)
    if not multi_scale_flip:
      return functools.partial(evaluated.apply, train=False)

    def multi_scale_flip_logits(variables, images):
      probabilities = inference.predict_multi_scale_flip(evaluated, variables, images)
      return jnp.log(jnp.maximum(probabilities, jnp.finfo(probabilities.dtype).tiny))

    return multi_scale_flip_logits

  def counts(self, num_classes: int) -> dict[str, Any]:
    """Params and MAdds of one single-scale pass at data.resolution and the training
    output stride, and eval_madds of the evaluation as configured, as run here
    (`count_deeplab_model`'s 'exact' convention)."""
    model = self.config.model
    counts = segmentation_stats.count_deeplab_model(
        f'{MODEL_NAME}_{model.backbone}', self.config.data.resolution, model.output_stride,
        model.aspp, num_classes=num_classes, width_multiplier=model.width_multiplier,
        aspp_convolution=model.aspp_convolution, convention='exact')
    return {'model': counts['model'], 'backbone': model.backbone,
            'width_multiplier': model.width_multiplier,
            'resolution': self.config.data.resolution, 'output_stride': model.output_stride,
            'aspp': model.aspp, 'aspp_convolution': model.aspp_convolution,
            'params': counts['params'], 'params_no_bn': counts['params_no_bn'],
            'madds': counts['madds'], **self._evaluation_counts(num_classes)}

  def _evaluation_counts(self, num_classes: int) -> dict[str, Any]:
    """MAdds of evaluating one image as configured (all 12 evaluations with MF)."""
    model = self.config.model
    stride, multi_scale_flip = self._evaluation()
    counts = segmentation_stats.count_deeplab_model(
        f'{MODEL_NAME}_{model.backbone}', self.config.data.resolution, stride, model.aspp,
        multi_scale_flip, num_classes=num_classes, width_multiplier=model.width_multiplier,
        aspp_convolution=model.aspp_convolution, convention='exact')
    return {'eval_output_stride': stride, 'eval_multi_scale_flip': multi_scale_flip,
            'eval_madds': counts['madds']}

  # --- examples ------------------------------------------------------------------

  def train_example(self, example, seed):
    return train_example(example[IMAGE_FEATURE], example[MASK_FEATURE], seed,
                         self.config.data.resolution, self.config.segmentation)

  def eval_example(self, example):
    return eval_example(example[IMAGE_FEATURE], example[MASK_FEATURE],
                        self.config.data.resolution, self.config.segmentation.ignore_label)

  def padding_example(self):
    return padding_example(self.config.data.resolution, self.config.segmentation.ignore_label)

  # --- on the devices -------------------------------------------------------------

  def loss(self, logits, batch):
    return segmentation_loss(logits, batch, self.config.segmentation.ignore_label,
                             self.config.optimizer.label_smoothing)

  def evaluate(self, logits, batch, mask):
    return evaluate_logits(logits, batch, mask, self.config.segmentation.ignore_label)

  def eval_metrics(self, sums: Mapping[str, Any], examples: Mapping[str, np.ndarray]):
    confusion = sums['confusion_matrix']
    return {'miou': mean_iou(confusion), 'pixel_accuracy': pixel_accuracy(confusion),
            'loss': float(sums['loss_sum'] / max(sums['pixels'], 1.0))}
