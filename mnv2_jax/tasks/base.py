"""What a task tells the one training loop: its model, loss, metrics and examples.

Classification, detection and segmentation share everything in
`mnv2_jax.train.loop` (checkpoints, resume, data parallelism, logging, the
refusal of bad input) and differ only in what a `Task` answers:

  validate_config()              the task's own config fields, one ValueError line
  check_dataset(builder)         the dataset has the features the task reads
  num_classes(builder)           classes the model predicts
  create_model(num_classes, batch_norm_axis_name)
                                 the Flax module (images -> outputs)
  counts(num_classes)            exact params and MAdds for run_info.json
  init_from_target()             which classifier config.init_from must hold
                                 and where its weights go (None: refused)
  predictor(model)               what evaluation runs on (variables, images):
                                 by default the trained module in inference
                                 mode
  train_example / eval_example / padding_example
                                 one TFDS example -> the arrays of a batch (tf)
  loss(outputs, batch)           (scalar loss, scalar metrics) on one device
  evaluate(outputs, batch, mask) (sums, per-example arrays) on one device: sums
                                 add up over devices and batches, per-example
                                 arrays come back to the host (e.g. detections)
  eval_metrics(sums, examples)   the metrics of a whole eval split, on the host

Every key a task returns from `loss` is logged as 'train_<key>'; every key of
`eval_metrics` as 'eval_<key>' for the raw weights and 'eval_ema_<key>' for the
EMA. A task is made from the experiment config (`mnv2_jax.tasks.get_task`)
and reads its fields from `self.config`. `headline` names the metrics that end a run (final_metrics.json, its
summary and curves.png), the first one being the run's 'best'.
"""

import abc
import dataclasses
import functools
from typing import Any, Callable, Mapping, Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

Batch = Mapping[str, jax.Array]
TfExample = Mapping[str, tf.Tensor]


@dataclasses.dataclass(frozen=True)
class InitFromTarget:
  """The classifier a pretrained directory must hold to start a task, and where it goes.

  `scope` is the path of the task model's subtree that takes the classifier's
  weights: () for a classifier (all of it; a new classifier layer when the class
  count differs), ('backbone',) for a detector or segmenter, whose backbone takes
  the pretrained layers it has (the classifier's head and, for DeepLab, its last
  1x1 conv are left out) while its own heads start fresh. `expansion_ratio` None:
  the backbone has none (MobileNetV1).
  """
  name: str
  width_multiplier: float
  expansion_ratio: Optional[float]
  scope: tuple[str, ...] = ()

  @classmethod
  def backbone(cls, name: str, width_multiplier: float) -> 'InitFromTarget':
    """A task model's 'backbone' subtree; its MobileNetV2 has the default expansion ratio 6."""
    return cls(name, width_multiplier, 6 if name == 'mobilenet_v2' else None, ('backbone',))


class Task(abc.ABC):
  """The interface; see the module docstring. Subclasses set `name` and `headline`."""

  name: str = ''
  # (metric key, label) pairs: the metrics that summarise a run, the first one ranks it.
  headline: tuple[tuple[str, str], ...] = ()
  # The model ends in a top-level 'classifier' layer, whose rate
  # optimizer.classifier_learning_rate_multiplier scales.
  has_classifier: bool = False

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  # --- config and data (host, before anything compiles) ---------------------

  @abc.abstractmethod
  def validate_config(self) -> None:
    ...

  @abc.abstractmethod
  def check_dataset(self, builder: tfds.core.DatasetBuilder) -> None:
    ...

  @abc.abstractmethod
  def num_classes(self, builder: tfds.core.DatasetBuilder) -> int:
    ...

  # --- the network --------------------------------------------------------

  @abc.abstractmethod
  def create_model(self, num_classes: int, batch_norm_axis_name: str) -> nn.Module:
    ...

  @abc.abstractmethod
  def counts(self, num_classes: int) -> dict[str, Any]:
    """At least 'params' and 'madds' (exact integers); the rest goes into run_info.json."""
    ...

  def init_from_target(self) -> Optional[InitFromTarget]:
    """What config.init_from (a classifier's pretrained directory) starts; None: refused."""
    return None

  def predictor(self, model: nn.Module) -> Callable[[Any, jax.Array], Any]:
    """(variables, images) -> the outputs `evaluate` scores, with the trained variables.

    By default the trained module in inference mode. A task may evaluate another
    computation on the same variables (segmentation: another output stride,
    multi-scale + flip inference).
    """
    return functools.partial(model.apply, train=False)

  # --- examples (tf.data, on the host) ---------------------------------------

  @abc.abstractmethod
  def train_example(self, example: TfExample, seed: tf.Tensor) -> dict[str, tf.Tensor]:
    ...

  @abc.abstractmethod
  def eval_example(self, example: TfExample) -> dict[str, tf.Tensor]:
    ...

  @abc.abstractmethod
  def padding_example(self) -> dict[str, tf.Tensor]:
    """An example shaped like `eval_example`'s (without 'mask'), for padding eval batches."""
    ...

  # --- on the devices ---------------------------------------------------------

  @abc.abstractmethod
  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    ...

  @abc.abstractmethod
  def evaluate(self, outputs: Any, batch: Batch, mask: jax.Array
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    ...

  # --- on the host ------------------------------------------------------------

  @abc.abstractmethod
  def eval_metrics(self, sums: Mapping[str, float],
                   examples: Mapping[str, np.ndarray]) -> dict[str, float]:
    ...
