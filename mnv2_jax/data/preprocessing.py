"""Inception-style preprocessing as in the MobileNetV2 training recipe.

Train: a random crop covering 5%-100% of the image area with aspect ratio
3/4-4/3 (`sample_distorted_bounding_box`, min_object_covered 0.1, the whole
image as the "object"), resized bilinearly to the resolution, a random
horizontal flip, optionally brightness (max delta 32/255) and saturation
(0.5-1.5) jitter, scaled to [-1, 1]. Eval: the central 87.5% of each side,
resized bilinearly, scaled to [-1, 1] (TF-Slim's `central_crop(0.875)`).

Images arrive encoded (a scalar tf.string, read with `SkipDecoding`) or as
uint8 tensors. JPEGs are cropped while decoding (`decode_and_crop_jpeg` only
decodes the crop's blocks, which is what makes ImageNet at 224 fast); other
formats are decoded, then cropped.

All randomness is stateless and comes from a per-example `seed` (shape [2]),
so a given (seed, example) always gives the same crop, flip and colours,
whatever the order, the parallelism or a restart.
"""

import tensorflow as tf

AREA_RANGE = (0.05, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MIN_OBJECT_COVERED = 0.1
MAX_CROP_ATTEMPTS = 10
BRIGHTNESS_MAX_DELTA = 32 / 255
SATURATION_RANGE = (0.5, 1.5)
EVAL_CENTRAL_FRACTION = 0.875


def _decode(image: tf.Tensor) -> tf.Tensor:
  """uint8 [H, W, 3] from an encoded string or a decoded uint8 image."""
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
  if image.shape[-1] == 1:
    image = tf.image.grayscale_to_rgb(image)
  return image


def _slice(image: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
  offset_y, offset_x, height, width = tf.unstack(window)
  return image[offset_y:offset_y + height, offset_x:offset_x + width]


def _decode_and_crop(image: tf.Tensor, crop_window_fn) -> tf.Tensor:
  """Decodes `image` and crops the window `crop_window_fn([height, width])`.

  A JPEG string is decoded only inside the window (its size comes from the
  header); other encodings and decoded images are decoded whole, then sliced.
  """
  if image.dtype != tf.string:
    image = _decode(image)
    return _slice(image, crop_window_fn(tf.shape(image)[:2]))

  def crop_jpeg():
    window = crop_window_fn(tf.image.extract_jpeg_shape(image)[:2])
    cropped = tf.io.decode_and_crop_jpeg(image, window, channels=3)
    cropped.set_shape([None, None, 3])
    return cropped

  def crop_other():
    decoded = _decode(image)
    return _slice(decoded, crop_window_fn(tf.shape(decoded)[:2]))

  return tf.cond(tf.io.is_jpeg(image), crop_jpeg, crop_other)


def _to_unit_range(image: tf.Tensor, resolution: int) -> tf.Tensor:
  """Bilinear resize of a uint8 image to [resolution, resolution], in [0, 1]."""
  image = tf.image.resize(image, [resolution, resolution], method='bilinear')
  return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def _to_signed_range(image: tf.Tensor) -> tf.Tensor:
  """[0, 1] -> [-1, 1] (the network's input range; x / 127.5 - 1 on 0..255)."""
  return image * 2.0 - 1.0


def random_crop_window(image_shape: tf.Tensor, seed: tf.Tensor,
                       min_area: float = AREA_RANGE[0]) -> tf.Tensor:
  """Inception-style crop window [offset_y, offset_x, height, width]."""
  no_boxes = tf.zeros([1, 0, 4], tf.float32)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([image_shape, [3]], axis=0),
      bounding_boxes=no_boxes,
      seed=seed,
      min_object_covered=MIN_OBJECT_COVERED,
      aspect_ratio_range=ASPECT_RATIO_RANGE,
      area_range=(min_area, AREA_RANGE[1]),
      max_attempts=MAX_CROP_ATTEMPTS,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def central_crop_window(image_shape: tf.Tensor,
                        fraction: float = EVAL_CENTRAL_FRACTION) -> tf.Tensor:
  """The window `tf.image.central_crop(image, fraction)` keeps."""
  height, width = image_shape[0], image_shape[1]
  offset_y = tf.cast((tf.cast(height, tf.float64) -
                      tf.cast(height, tf.float64) * fraction) / 2, tf.int32)
  offset_x = tf.cast((tf.cast(width, tf.float64) -
                      tf.cast(width, tf.float64) * fraction) / 2, tf.int32)
  return tf.stack([offset_y, offset_x, height - 2 * offset_y,
                   width - 2 * offset_x])


def preprocess_for_train(image: tf.Tensor, seed: tf.Tensor, resolution: int,
                         color_jitter: bool,
                         min_crop_area: float = AREA_RANGE[0]) -> tf.Tensor:
  """float32 [resolution, resolution, 3] in [-1, 1] from one raw image.

  `min_crop_area` is the smallest fraction of the image a crop may cover (the
  recipe's 5%); small-resolution CPU runs use a larger one, since a 5% crop of
  a 32 px image leaves almost nothing of the object.
  """
  crop_seed, flip_seed, brightness_seed, saturation_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=4))
  image = _decode_and_crop(
      image, lambda shape: random_crop_window(shape, crop_seed, min_crop_area))
  image = _to_unit_range(image, resolution)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if color_jitter:
    image = tf.image.stateless_random_brightness(
        image, BRIGHTNESS_MAX_DELTA, brightness_seed)
    image = tf.image.stateless_random_saturation(
        image, *SATURATION_RANGE, saturation_seed)
    image = tf.clip_by_value(image, 0.0, 1.0)
  return _to_signed_range(image)


def preprocess_for_eval(image: tf.Tensor, resolution: int) -> tf.Tensor:
  """float32 [resolution, resolution, 3] in [-1, 1]: central crop + resize."""
  image = _decode_and_crop(image, central_crop_window)
  return _to_signed_range(_to_unit_range(image, resolution))


# The examples of a classification batch (what `mnv2_jax.tasks.Classification`
# feeds the loop, and the iterators' default for callers without a task).


def classification_train_example(example, seed: tf.Tensor, data_config) -> dict:
  return {
      'image': preprocess_for_train(example['image'], seed, data_config.resolution,
                                    data_config.color_jitter, data_config.min_crop_area),
      'label': tf.cast(example['label'], tf.int32),
  }


def classification_eval_example(example, data_config) -> dict:
  return {'image': preprocess_for_eval(example['image'], data_config.resolution),
          'label': tf.cast(example['label'], tf.int32)}


def classification_padding_example(data_config) -> dict:
  resolution = data_config.resolution
  return {'image': tf.zeros([resolution, resolution, 3], tf.float32),
          'label': tf.constant(0, tf.int32)}
