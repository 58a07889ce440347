"""Object detection (paper Section 6.2): SSDLite on MobileNetV2 / V1, COCO mAP.

The network maps an image to per-anchor box codes and class logits
(`mnv2_jax.models.ssdlite`); everything between them and the data lives in
`mnv2_jax.detection` (anchors, matching, the loss with hard negatives, NMS) and
is reused here unchanged. Evaluation runs the network and the NMS on the
devices and sends the detections of every image back to the host, where
pycocotools computes COCO's mAP (IoU 0.50:0.95) and mAP at IoU 0.5 against the
same images' ground truth (the boxes the pipeline fed the network, so any
dataset in the TFDS detection layout works: 'objects' with 'bbox' and 'label').

Examples: the image resized to data.resolution x data.resolution (SSD's
fixed_shape_resizer, aspect ratio not kept), a random horizontal flip for
training, and the ground truth padded to `config.detection.max_boxes` rows with a
validity mask (static shapes). With `config.detection.random_crop='ssd'` (the
OD API's recipe, on by default) training examples are first cropped by SSD's
random crop (`mnv2_jax.detection.random_crop`).
"""

import contextlib
import io
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mnv2_jax import config_sections
from mnv2_jax.detection import loss as loss_lib
from mnv2_jax.detection import postprocess as postprocess_lib
from mnv2_jax.detection import random_crop as random_crop_lib
from mnv2_jax.detection import targets as targets_lib
from mnv2_jax.models import ssdlite_architecture
from mnv2_jax.models.ssdlite import SSDLite
from mnv2_jax.stats import detection as detection_stats
from mnv2_jax.tasks import base
from mnv2_jax.tasks.classification import check, check_common_model_fields
from mnv2_jax.train import state as state_lib


def detection_section(**changes: Any) -> ml_collections.ConfigDict:
  """config.detection: ground-truth padding and the evaluation's post-processing.

    max_boxes        ground-truth rows per image (COCO has up to 93; the built-in
                     scenes 4); extra boxes are dropped, with a warning in the docs.
    max_detections   detections kept per image after NMS (the OD API: 100).
    nms_iou_threshold, score_threshold
                     as the OD API's ssdlite post-processing (0.6, 1e-8).
    random_crop      'ssd': SSD's random crop of the training images before the
                     flip and resize (the OD API's ssd_random_crop, which the
                     paper's config uses); 'none': the whole image.
  """
  section = ml_collections.ConfigDict()
  section.random_crop = 'ssd'
  section.max_boxes = 100
  section.max_detections = postprocess_lib.MAX_DETECTIONS
  section.nms_iou_threshold = postprocess_lib.NMS_IOU_THRESHOLD
  section.score_threshold = postprocess_lib.SCORE_THRESHOLD
  return config_sections.with_changes(section, 'detection', changes)


RANDOM_CROPS = ('ssd', 'none')


def _random_crop(section: ml_collections.ConfigDict) -> str:
  # Runs configured before the field existed trained without the crop.
  return section.get('random_crop', 'none')


def network_input(image: tf.Tensor, resolution: int) -> tf.Tensor:
  """uint8 image -> float32 [resolution, resolution, 3] in [-1, 1] (bilinear resize, the
  aspect ratio not kept: SSD's fixed_shape_resizer)."""
  image = tf.image.resize(tf.image.convert_image_dtype(image, tf.float32),
                          [resolution, resolution], method='bilinear', antialias=True)
  return tf.clip_by_value(image, 0.0, 1.0) * 2.0 - 1.0


def _padded_ground_truth(boxes: tf.Tensor, labels: tf.Tensor, crowd: tf.Tensor,
                         max_boxes: int) -> dict:
  """boxes [n, 4], labels [n], crowd [n] -> fixed [max_boxes] rows and a validity mask."""
  count = tf.minimum(tf.shape(labels)[0], max_boxes)
  padding = max_boxes - count
  return {
      'boxes': tf.pad(tf.cast(boxes[:count], tf.float32), [[0, padding], [0, 0]]),
      'labels': tf.pad(tf.cast(labels[:count], tf.int32), [[0, padding]]),
      'boxes_valid': tf.sequence_mask(count, max_boxes),
      'boxes_crowd': tf.pad(crowd[:count], [[0, padding]]),
  }


def _flip_boxes_left_right(boxes: tf.Tensor) -> tf.Tensor:
  ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
  return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def coco_metrics(examples: Mapping[str, np.ndarray], resolution: int,
                 class_names: Sequence[str] = ()) -> dict[str, float]:
  """COCO box mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP of the detections (pycocotools).

  'map', 'map50', 'map75', and 'ap_<class>' (AP@[.5:.95] of each class that has
  ground truth in the split; <class> is its name from `class_names`, else its
  label) - the numbers of COCOeval's summary and of its precision array.

  `examples` holds, per image, 'boxes' [K, 4] / 'scores' [K] / 'classes' [K] /
  'valid' [K] (detections, normalised corners) and 'gt_boxes' [G, 4] /
  'gt_labels' [G] / 'gt_valid' [G] / optionally 'gt_crowd' [G]. Boxes are scaled to pixels of the network
  input, so COCO's area ranges (small < 32^2 px) refer to that size.
  """
  # pylint: disable=g-import-not-at-top
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval

  def to_xywh(box):
    ymin, xmin, ymax, xmax = (float(v) * resolution for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]

  num_images = len(examples['gt_boxes'])
  images = [{'id': i, 'width': resolution, 'height': resolution} for i in range(num_images)]
  annotations, detections = [], []
  crowds = examples.get('gt_crowd', np.zeros_like(examples['gt_valid']))
  for i in range(num_images):
    for box, label, valid, crowd in zip(examples['gt_boxes'][i], examples['gt_labels'][i],
                                        examples['gt_valid'][i], crowds[i]):
      if valid:
        xywh = to_xywh(box)
        annotations.append({'id': len(annotations) + 1, 'image_id': i,
                            'category_id': int(label), 'bbox': xywh,
                            'area': xywh[2] * xywh[3], 'iscrowd': int(crowd)})
    for box, score, label, valid in zip(examples['boxes'][i], examples['scores'][i],
                                        examples['classes'][i], examples['valid'][i]):
      if valid:
        detections.append({'image_id': i, 'category_id': int(label), 'bbox': to_xywh(box),
                           'score': float(score)})
  if not annotations:
    raise ValueError('The eval split has no ground-truth boxes: COCO mAP is undefined.')
  present = sorted({a['category_id'] for a in annotations if not a['iscrowd']})
  class_key = lambda label: 'ap_' + _metric_name(
      class_names[label] if label < len(class_names) else str(label))
  if not detections:
    return {'map': 0.0, 'map50': 0.0, 'map75': 0.0, **{class_key(c): 0.0 for c in present}}
  categories = sorted({a['category_id'] for a in annotations} |
                      {d['category_id'] for d in detections})
  quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints its progress
  with quiet:
    ground_truth = COCO()
    ground_truth.dataset = {'images': images, 'annotations': annotations,
                            'categories': [{'id': c} for c in categories]}
    ground_truth.createIndex()
    evaluation = COCOeval(ground_truth, ground_truth.loadRes(detections), 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
  # precision[iou threshold, recall, category, area range, max detections]; -1 where
  # undefined. Area 'all' and 100 detections are the summary's mAP.
  precision = evaluation.eval['precision'][:, :, :, 0, -1]
  per_class = {}
  for index, category in enumerate(evaluation.params.catIds):
    values = precision[:, :, index]
    if category in present:
      per_class[class_key(category)] = float(np.mean(values[values > -1])) if (
          values > -1).any() else 0.0
  return {'map': float(max(evaluation.stats[0], 0.0)),
          'map50': float(max(evaluation.stats[1], 0.0)),
          'map75': float(max(evaluation.stats[2], 0.0)), **per_class}


def _metric_name(name: str) -> str:
  """A class name as part of a metric key: lower case, runs of other characters as '_'."""
  return re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_') or 'class'


class Detection(base.Task):
  """Boxes and classes of every object; SSD's loss; COCO mAP."""

  name = 'detection'
  headline = (('map', 'mAP'), ('map50', 'mAP@0.5'))

  def validate_config(self) -> None:
    model = self.config.model
    check(model.name in detection_stats.MODEL_NAMES, 'model.name',
          f'one of {list(detection_stats.MODEL_NAMES)} for config.task=\'detection\'',
          model.name)
    check_common_model_fields(model)
    check(model.head in ssdlite_architecture.HEADS, 'model.head',
          f'one of {list(ssdlite_architecture.HEADS)}', model.head)
    resolution = self.config.data.resolution
    check(isinstance(resolution, int) and not isinstance(resolution, bool) and
          resolution >= ssdlite_architecture.MIN_IMAGE_SIZE, 'data.resolution',
          f'an integer >= {ssdlite_architecture.MIN_IMAGE_SIZE} for a detector (the paper: '
          f'320)', resolution)
    section = self.config.get('detection')
    check(isinstance(section, ml_collections.ConfigDict), 'detection',
          'a ConfigDict section (tasks.detection.detection_section())', section)
    for field in ('max_boxes', 'max_detections'):
      value = section.get(field)
      check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f'detection.{field}', 'an integer >= 1', value)
    check(_random_crop(section) in RANDOM_CROPS, 'detection.random_crop',
          f'one of {list(RANDOM_CROPS)}', _random_crop(section))
    for field in ('nms_iou_threshold', 'score_threshold'):
      value = section.get(field)
      check(isinstance(value, (int, float)) and 0 <= value < 1, f'detection.{field}',
            'a number in [0, 1)', value)

  def check_dataset(self, builder: tfds.core.DatasetBuilder) -> None:
    features = builder.info.features
    dataset = self.config.data.dataset
    objects = features['objects'] if 'objects' in features.keys() else None
    if ('image' not in features.keys() or objects is None or
        not {'bbox', 'label'} <= set(getattr(objects, 'keys', lambda: ())())):
      raise ValueError(
          f'Dataset {dataset!r} is not a detection dataset: it needs an "image" feature and '
          f'"objects" with "bbox" and "label" (as coco/2017 and procedural_shapes_detection); '
          f'it has {sorted(features.keys())}.')
    if not isinstance(objects['label'], tfds.features.ClassLabel):
      raise ValueError(f'Dataset {dataset!r}: objects/label is not a ClassLabel feature.')

  def num_classes(self, builder: tfds.core.DatasetBuilder) -> int:
    labels = builder.info.features['objects']['label']
    self.class_names = tuple(labels.names)  # for the per-class AP keys
    return labels.num_classes

  def _module(self, num_classes: int, batch_norm_axis_name=None) -> SSDLite:
    model = self.config.model
    return SSDLite(
        num_classes=num_classes, backbone=detection_stats.backbone_name(model.name),
        width_multiplier=model.width_multiplier, head=model.head,
        depthwise_impl=model.depthwise_impl, batch_norm_axis_name=batch_norm_axis_name,
        batch_norm_momentum=model.batch_norm_momentum, dtype=state_lib.DTYPES[model.dtype])

  def create_model(self, num_classes: int, batch_norm_axis_name: str) -> SSDLite:
    axis = batch_norm_axis_name if self.config.train.get('sync_batch_norm', False) else None
    return self._module(num_classes, axis)

  def counts(self, num_classes: int) -> dict[str, Any]:
    model = self.config.model
    counts = detection_stats.count_detection_model(
        model.name, model.width_multiplier, self.config.data.resolution, num_classes,
        model.head)
    return {'model': model.name, 'width_multiplier': model.width_multiplier,
            'resolution': self.config.data.resolution, 'head': model.head,
            'params': counts['params'], 'params_no_bn': counts['params_no_bn'],
            'madds': counts['madds'], 'parts': counts['parts']}

  def init_from_target(self) -> base.InitFromTarget:
    return base.InitFromTarget.backbone(detection_stats.backbone_name(self.config.model.name),
                                        self.config.model.width_multiplier)

  def anchors(self) -> np.ndarray:
    """[num_anchors, 4] of the network at data.resolution, a constant of the programs."""
    if not hasattr(self, '_anchors'):
      # The anchor grid does not depend on the class count.
      self._anchors = np.asarray(self._module(1).anchors(self.config.data.resolution))
    return self._anchors

  # --- examples -----------------------------------------------------------------

  def _decoded(self, example, keep_crowd: bool) -> tuple[tf.Tensor, ...]:
    """The decoded image and its ground truth: boxes [n, 4], labels [n], crowd [n].

    COCO's crowd regions ('is_crowd', one box over many objects) are no
    training targets (as the OD API drops them); in evaluation they stay, flagged,
    so that COCO's evaluation ignores detections inside them.
    """
    image = example['image']
    if image.dtype == tf.string:  # kept encoded by the pipeline's SkipDecoding
      image = tf.io.decode_image(image, channels=3, expand_animations=False)
    objects = example['objects']
    boxes, labels = tf.cast(objects['bbox'], tf.float32), objects['label']
    crowd = (tf.cast(objects['is_crowd'], tf.bool) if 'is_crowd' in objects
             else tf.zeros_like(labels, tf.bool))
    if not keep_crowd:
      boxes, labels, crowd = (tf.boolean_mask(x, ~crowd) for x in (boxes, labels, crowd))
    return image, boxes, labels, crowd

  def train_example(self, example, seed):
    image, boxes, labels, crowd = self._decoded(example, keep_crowd=False)
    if _random_crop(self.config.detection) == 'ssd':
      # Its own stream of the example's seed: the flip keeps drawing from `seed`.
      image, boxes, kept, _ = random_crop_lib.ssd_random_crop(
          image, boxes, tf.random.experimental.stateless_fold_in(seed, 1))
      labels, crowd = tf.gather(labels, kept), tf.gather(crowd, kept)
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.where(flip, _flip_boxes_left_right(boxes), boxes)
    ground_truth = _padded_ground_truth(boxes, labels, crowd, self.config.detection.max_boxes)
    del ground_truth['boxes_crowd']
    return dict(ground_truth, image=network_input(image, self.config.data.resolution))

  def eval_example(self, example):
    image, boxes, labels, crowd = self._decoded(example, keep_crowd=True)
    ground_truth = _padded_ground_truth(boxes, labels, crowd, self.config.detection.max_boxes)
    return dict(ground_truth, image=network_input(image, self.config.data.resolution))

  def padding_example(self):
    resolution, max_boxes = self.config.data.resolution, self.config.detection.max_boxes
    return {'image': tf.zeros([resolution, resolution, 3], tf.float32),
            'boxes': tf.zeros([max_boxes, 4], tf.float32),
            'labels': tf.zeros([max_boxes], tf.int32),
            'boxes_valid': tf.zeros([max_boxes], tf.bool),
            'boxes_crowd': tf.zeros([max_boxes], tf.bool)}

  # --- on the devices -----------------------------------------------------------

  def loss(self, outputs, batch):
    anchors = jnp.asarray(self.anchors())
    box_targets, class_targets, positive = jax.vmap(
        targets_lib.assign_targets, in_axes=(0, 0, 0, None))(
            batch['boxes'], batch['labels'], batch['boxes_valid'], anchors)
    losses = loss_lib.ssd_loss(outputs['box_encodings'], outputs['class_logits'], box_targets,
                               class_targets, positive)
    losses['num_positives'] = losses['num_positives'].astype(jnp.float32)
    return losses['loss'], losses

  def evaluate(self, outputs, batch, mask):
    section = self.config.detection
    detections = postprocess_lib.postprocess(
        outputs['box_encodings'], outputs['class_logits'], jnp.asarray(self.anchors()),
        max_detections=section.max_detections, iou_threshold=section.nms_iou_threshold,
        score_threshold=section.score_threshold)
    return {}, {'boxes': detections['boxes'], 'scores': detections['scores'],
                'classes': detections['classes'], 'valid': detections['valid'],
                'gt_boxes': batch['boxes'], 'gt_labels': batch['labels'],
                'gt_valid': batch['boxes_valid'], 'gt_crowd': batch['boxes_crowd']}

  # --- on the host --------------------------------------------------------------

  def eval_metrics(self, sums, examples):
    return coco_metrics(examples, self.config.data.resolution, getattr(self, 'class_names', ()))
