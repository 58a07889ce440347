"""The SSD anchor grid exactly as the TF Object Detection API's `ssd_anchor_generator`.

One (scale, aspect ratio) list per feature map: layer k has scale
s_k = min_scale + (max_scale - min_scale) * k / (num_layers - 1), one anchor per
aspect ratio at s_k plus one square anchor at sqrt(s_k * s_{k+1}) (s_6 = 1);
the lowest, finest layer has only three small anchors (0.1 square, s_0 at 2 and
1/2: `reduce_boxes_in_lowest_layer`). Anchors sit at the centres of the
feature-map cells, stride 1/size, and are not clipped to the image.

They depend only on the feature-map sizes, so they are computed once with
NumPy and enter a jitted program as a constant.
"""

import dataclasses
import math
from typing import Sequence

import numpy as np

# `ssdlite_mobilenet_v2_coco.config` writes 1/3 as 0.3333; the released models
# use that value, so it is kept rather than the exact third.
OD_API_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
LOWEST_LAYER_SMALLEST_SCALE = 0.1


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
  """`ssd_anchor_generator` of the OD API config; the defaults are ssdlite_mobilenet_v2's."""
  num_layers: int = 6
  min_scale: float = 0.2
  max_scale: float = 0.95
  aspect_ratios: tuple[float, ...] = OD_API_ASPECT_RATIOS
  interpolated_scale_aspect_ratio: float = 1.0  # 0 leaves the interpolated anchor out.
  reduce_boxes_in_lowest_layer: bool = True

  def __post_init__(self):
    if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or (
        self.num_layers < 2):
      raise ValueError(f'num_layers must be an integer >= 2, got {self.num_layers!r}.')
    if not 0 < self.min_scale <= self.max_scale <= 1:
      raise ValueError(f'min_scale and max_scale must satisfy 0 < min_scale <= max_scale <= 1, '
                       f'got {self.min_scale!r} and {self.max_scale!r}.')
    if not self.aspect_ratios or not all(ratio > 0 for ratio in self.aspect_ratios):
      raise ValueError(f'aspect_ratios must be a non-empty tuple of numbers > 0, '
                       f'got {self.aspect_ratios!r}.')
    if self.interpolated_scale_aspect_ratio < 0:
      raise ValueError(f'interpolated_scale_aspect_ratio must be >= 0, '
                       f'got {self.interpolated_scale_aspect_ratio!r}.')

  def scales(self) -> list[float]:
    """s_0 .. s_{num_layers-1}, then 1.0 (the 'next' scale of the last layer)."""
    step = (self.max_scale - self.min_scale) / (self.num_layers - 1)
    return [self.min_scale + step * layer for layer in range(self.num_layers)] + [1.0]

  def box_specs(self) -> list[list[tuple[float, float]]]:
    """Per layer, the (scale, aspect ratio) of each anchor at one location, in output order."""
    scales = self.scales()
    specs = []
    for layer, (scale, next_scale) in enumerate(zip(scales[:-1], scales[1:])):
      if layer == 0 and self.reduce_boxes_in_lowest_layer:
        specs.append([(LOWEST_LAYER_SMALLEST_SCALE, 1.0), (scale, 2.0), (scale, 0.5)])
        continue
      layer_specs = [(scale, ratio) for ratio in self.aspect_ratios]
      if self.interpolated_scale_aspect_ratio > 0:
        layer_specs.append((math.sqrt(scale * next_scale), self.interpolated_scale_aspect_ratio))
      specs.append(layer_specs)
    return specs

  def anchors_per_location(self) -> tuple[int, ...]:
    return tuple(len(specs) for specs in self.box_specs())


def generate_anchors(feature_map_sizes: Sequence[tuple[int, int]],
                     image_size: tuple[int, int], config: AnchorConfig = AnchorConfig()
                     ) -> np.ndarray:
  """All anchors as a float32 [num_anchors, 4] array of normalised [ymin, xmin, ymax, xmax].

  Order: feature map, then row, then column, then the anchor's place in the
  layer's box specs (fastest) - the order in which the predictors' outputs are
  flattened. For a non-square image the unit anchor is square in pixels (its
  side normalised by the shorter image side), as in the OD API.
  """
  if len(feature_map_sizes) != config.num_layers:
    raise ValueError(f'feature_map_sizes must have one (height, width) per anchor layer '
                     f'({config.num_layers}), got {len(feature_map_sizes)}.')
  image_height, image_width = image_size
  shorter_side = min(image_height, image_width)
  unit_height, unit_width = shorter_side / image_height, shorter_side / image_width
  layers = []
  for (grid_height, grid_width), specs in zip(feature_map_sizes, config.box_specs()):
    scales, ratios = np.array(specs, dtype=np.float64).T
    heights = scales / np.sqrt(ratios) * unit_height
    widths = scales * np.sqrt(ratios) * unit_width
    y_centres = (np.arange(grid_height) + 0.5) / grid_height
    x_centres = (np.arange(grid_width) + 0.5) / grid_width
    # Broadcast to [rows, columns, anchors]: the anchor index varies fastest.
    y = np.broadcast_to(y_centres[:, None, None], (grid_height, grid_width, len(specs)))
    x = np.broadcast_to(x_centres[None, :, None], (grid_height, grid_width, len(specs)))
    h = np.broadcast_to(heights, (grid_height, grid_width, len(specs)))
    w = np.broadcast_to(widths, (grid_height, grid_width, len(specs)))
    layers.append(np.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], axis=-1).reshape(-1, 4))
  return np.concatenate(layers).astype(np.float32)
