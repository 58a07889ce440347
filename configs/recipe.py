"""The config sections every experiment file shares, with the paper's values.

`configs/imagenet.py` uses them as they are; `configs/default.py` changes the
few values a few-hundred-step CPU run needs. Each function returns a fresh
ConfigDict; keyword arguments replace fields and must name existing ones, so a
typo fails here rather than becoming a silently ignored field.
"""

from typing import Any

import ml_collections
from ml_collections import config_dict

from mnv2_jax import config_sections


def model(**changes: Any) -> ml_collections.ConfigDict:
  """MobileNetV2 1.0, t=6, linear bottlenecks, shortcuts between bottlenecks."""
  section = ml_collections.ConfigDict()
  section.name = 'mobilenet_v2'
  section.width_multiplier = 1.0
  section.expansion_ratio = 6.0
  section.bottleneck_activation = 'linear'
  section.shortcut = 'bottleneck'
  section.dropout_rate = 0.2
  section.batch_norm_momentum = 0.997  # the official BN decay
  section.depthwise_impl = 'auto'  # or 'xla', 'shifted', 'ffi' (CPU kernel; docs/model.md)
  section.dtype = 'float32'
  # Initialisation: the official network's, unless a CPU-scale config says otherwise.
  section.kernel_init = 'truncated_normal'  # or 'fan_in' (He variance scaling)
  section.zero_init_residual = False  # last BN scale of each residual branch at 0
  section.zero_init_classifier = False  # classifier kernel at 0
  return config_sections.with_changes(section, 'model', changes)


def detection_model(**changes: Any) -> ml_collections.ConfigDict:
  """SSDLite on MobileNetV2 1.0 (the paper's detector; the OD API's BN decay 0.9997)."""
  section = ml_collections.ConfigDict()
  section.name = 'ssdlite_mobilenet_v2'  # or 'ssdlite_mobilenet_v1'
  section.width_multiplier = 1.0
  section.head = 'ssdlite'  # or 'ssd': regular 3x3 prediction layers (paper Table 5)
  section.batch_norm_momentum = 0.9997
  section.depthwise_impl = 'auto'
  section.dtype = 'float32'
  return config_sections.with_changes(section, 'model', changes)


def optimizer(**changes: Any) -> ml_collections.ConfigDict:
  """The released checkpoints' recipe: TF1 RMSProp, staircase decay, L2, smoothing, EMA.

  The paper (Section 6.1) gives RMSProp with decay and momentum 0.9, weight
  decay 4e-5, initial learning rate 0.045 and batch 96; the official TF-Slim
  README gives lr 0.045 per clone of 96 images, decay 0.98 every 2.5 epochs
  (staircase; the paper says every epoch), label smoothing 0.1 and an EMA of
  0.9999. TF1 RMSProp keeps eps=1.0 inside the square root and starts its
  accumulator at 1.0.
  """
  section = ml_collections.ConfigDict()
  section.name = 'rmsprop'  # or 'momentum' (SGD with momentum; DeepLab's)
  section.base_learning_rate = 0.045  # per base_batch_size images, scaled with the global batch
  section.base_batch_size = 96
  section.rmsprop_decay = 0.9
  section.momentum = 0.9
  section.epsilon = 1.0
  section.initial_scale = 1.0
  section.schedule = 'exponential'  # or 'cosine', or 'poly' (DeepLab's)
  section.poly_power = 0.9  # schedule 'poly' only: lr * (1 - step / total) ** power
  section.decay_rate = 0.98
  section.decay_epochs = 2.5
  section.staircase = True
  section.warmup_epochs = 0.0
  section.weight_decay = 4e-5
  section.label_smoothing = 0.1
  section.ema_decay = 0.9999
  # The classifier layer's rate relative to the rest (1.0 in the paper).
  section.classifier_learning_rate_multiplier = 1.0
  return config_sections.with_changes(section, 'optimizer', changes)


def train(**changes: Any) -> ml_collections.ConfigDict:
  """Loop lengths, evaluation/checkpoint cadence and the data-parallel strategy."""
  section = ml_collections.ConfigDict()
  section.num_epochs = 420
  section.num_steps = config_dict.placeholder(int)  # set to override num_epochs
  section.eval_every_steps = 10_000
  section.checkpoint_every_steps = 5_000
  section.log_every_steps = 500
  section.keep_checkpoints = 3
  section.parallel_strategy = 'shard_map'  # or 'pmap'
  section.sync_batch_norm = False  # the official recipe keeps BN per worker
  # > 0: every evaluation is also run with BN statistics recomputed on this many
  # training batches ('eval_precise_bn_*'); the paper evaluates with the moving averages.
  section.precise_batch_norm_batches = 0
  # JAX's precision for float32 matrix products and convolutions in every compiled step
  # (jax.default_matmul_precision). None keeps JAX's default, which on NVIDIA GPUs multiplies
  # float32 in TF32 (10-bit mantissa) and on TPUs in bfloat16 passes; 'highest' computes in
  # float32 there too. CPUs compute float32 either way. Measured on an H200
  # (benchmarks/README.md, "On a GPU"): at the default, MobileNetV2 1.0's loss at initialisation
  # is 0.19% off the float32 one.
  section.matmul_precision = config_dict.placeholder(str)
  return config_sections.with_changes(section, 'train', changes)


def distributed() -> ml_collections.ConfigDict:
  """Multi-host: `initialize=True` calls jax.distributed.initialize with these."""
  section = ml_collections.ConfigDict()
  section.initialize = False
  section.coordinator_address = config_dict.placeholder(str)
  section.num_processes = config_dict.placeholder(int)
  section.process_id = config_dict.placeholder(int)
  return section


def experiment(seed: int, model_section: ml_collections.ConfigDict,
               data_section: ml_collections.ConfigDict,
               optimizer_section: ml_collections.ConfigDict,
               train_section: ml_collections.ConfigDict,
               task: str = 'classification') -> ml_collections.ConfigDict:
  """The full config: the sections above plus the task, initialisation and mode fields."""
  config = ml_collections.ConfigDict()
  config.task = task  # what the model learns: mnv2_jax.tasks (classification, detection, ...)
  config.seed = seed
  config.model = model_section
  config.data = data_section
  config.optimizer = optimizer_section
  config.train = train_section
  config.init_from = config_dict.placeholder(str)  # a save_pretrained directory
  config.eval_only = False
  config.distributed = distributed()
  return config
