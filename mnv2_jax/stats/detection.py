"""Analytic parameter and multiply-add counts of SSD/SSDLite detectors (paper Tables 5 and 6).

Read from the same tables as the networks: the backbone's (`counts.layer_counts`,
without its classifier) and the head's (`ssdlite_architecture.ssd_spec`), with
the classifier's conventions (`counts.py`): params = what `model.init` puts in
'params' (kernels, biases, BN scale and bias), params_no_bn = kernels and
biases, madds = multiply-accumulates of every convolution.

Three disjoint parts sum to the total:
  backbone      MobileNetV2 (stem to the last 1x1 conv) or MobileNetV1 (stem to
                Conv2d_13_pointwise), without the ImageNet classifier;
  extra_layers  the four layers that make feature maps 2-5;
  predictors    the box and class predictors on all six maps.
The paper's "prediction layers" (Table 5) are extra_layers + predictors.

Which reading makes each printed figure. All are at 320x320 and width 1.0,
with 81 class slots: the OD API's class predictor always adds a background
slot, so the paper's "80 classes" (COCO) is 81 outputs per anchor. Params
print the same with or without the BN parameters.

  Table 6, MNetV2 + SSDLite, whole network: 4,286,261 params_no_bn (4,337,013
      with BN) -> 4.3M; 788,830,144 MAdds -> 0.8B.
  Table 6, MNetV1 + SSDLite, whole network: 5,063,413 (5,100,661) -> 5.1M;
      1,309,162,944 MAdds -> 1.3B.
  Table 5, SSDLite prediction layers (extra layers + predictors): 2,096,501
      (2,113,141) -> 2.1M. MAdds 177,617,344 = 0.18B, NOT the printed 0.35B,
      and no reading reaches 0.35B together with the other figures: counting
      a multiply and an add as two operations gives 0.355B, but the same
      convention doubles SSD's figure (2.52B) and Table 6's totals (1.58B,
      2.62B); and Table 6's 0.8B itself needs these 0.18B (0.611B backbone +
      0.35B would print 1.0B). Nearest consistent reading: 0.178B, 0.172B below
      the printed figure.
  Table 5, SSD prediction layers (regular 3x3 convs in the extra layers and in
      the predictors): 14,773,173 (14,776,629) -> 14.8M; MAdds 1,259,068,672,
      which prints 1.25B truncated to two decimals (as the official MobileNetV2
      table truncates its MACs) and 1.26B rounded: 0.009B (0.7%) off under the
      rounding that Table 6 needs (0.789B -> 0.8B).

Other class counts miss: with 80 slots (no background) SSD's params are
14.63M (14.6M) and V1 + SSDLite's 5.05M without BN; with 91 slots (the
config's `num_classes: 90` + background) V2 + SSDLite has 4.45M params and
SSDLite's prediction layers 2.26M.
"""

import dataclasses

from mnv2_jax.models import architecture, ssdlite_architecture
from mnv2_jax.stats import counts
from mnv2_jax.stats.counts import LayerCount

MODEL_NAMES = ('ssdlite_mobilenet_v2', 'ssdlite_mobilenet_v1')
PARTS = ('backbone', 'extra_layers', 'predictors')
DEFAULT_RESOLUTION = 320  # The paper's input size.
DEFAULT_NUM_CLASSES = 80  # COCO's object classes; the predictors add the background slot.


def backbone_name(model: str) -> str:
  architecture.validate_choice('model', model, MODEL_NAMES)
  return model.removeprefix('ssdlite_')


def _validate_resolution(resolution) -> None:
  if isinstance(resolution, bool) or not isinstance(resolution, int) or (
      resolution < ssdlite_architecture.MIN_IMAGE_SIZE):
    raise ValueError(f'resolution must be an integer >= {ssdlite_architecture.MIN_IMAGE_SIZE} '
                     f'for a detector (the paper: 320), got {resolution!r}.')


def _head_layer(layer: ssdlite_architecture.ConvLayer) -> LayerCount:
  """One head convolution: its kernel (and bias, for a prediction) and its multiply-adds."""
  per_output = layer.kernel_size**2 * (1 if layer.kind == 'depthwise' else layer.in_channels)
  kernel = per_output * layer.out_channels
  height, width = layer.output_size
  return LayerCount(layer.name, layer.kind, height,
                    kernel + (0 if layer.batch_norm else layer.out_channels),
                    kernel * height * width,
                    layer.out_channels if layer.batch_norm else 0)


def detection_layer_counts(model: str, width_multiplier: float = 1.0,
                           resolution: int = DEFAULT_RESOLUTION,
                           num_classes: int = DEFAULT_NUM_CLASSES,
                           head: str = 'ssdlite') -> dict[str, list[LayerCount]]:
  """Every weight layer per part, named as in the SSDLite module's parameter tree."""
  backbone = backbone_name(model)
  _validate_resolution(resolution)
  spec = ssdlite_architecture.ssd_spec(backbone, width_multiplier, resolution, num_classes, head)
  backbone_layers = [
      dataclasses.replace(layer, name=f'backbone/{layer.name}')
      for layer in counts.layer_counts(backbone, width_multiplier, resolution, num_classes=1)
      if layer.kind != 'dense']
  return {
      'backbone': backbone_layers,
      'extra_layers': [_head_layer(layer) for layers in spec.extra_layers for layer in layers],
      'predictors': [_head_layer(layer)
                     for layers in spec.box_predictors + spec.class_predictors
                     for layer in layers],
  }


def _totals(layers: list[LayerCount]) -> dict[str, int]:
  weights = sum(layer.weights for layer in layers)
  batch_norm_channels = sum(layer.batch_norm_channels for layer in layers)
  return {'params': weights + 2 * batch_norm_channels, 'params_no_bn': weights,
          'batch_stats': 2 * batch_norm_channels, 'madds': sum(layer.madds for layer in layers)}


def count_detection_model(model: str, width_multiplier: float = 1.0,
                          resolution: int = DEFAULT_RESOLUTION,
                          num_classes: int = DEFAULT_NUM_CLASSES,
                          head: str = 'ssdlite') -> dict:
  """Exact counts of one detector: the whole network, each part, and the prediction layers.

  Returns model, width, resolution, num_classes, class_slots, head, then
  params, params_no_bn, batch_stats and madds of the whole network (exact
  integers), 'parts' with the same four for each of PARTS, and
  'prediction_layers' (extra_layers + predictors, the quantity of Table 5).
  """
  parts = detection_layer_counts(model, width_multiplier, resolution, num_classes, head)
  return {
      'model': model,
      'width': width_multiplier,
      'resolution': resolution,
      'num_classes': num_classes,
      'class_slots': num_classes + 1,
      'head': head,
      **_totals([layer for layers in parts.values() for layer in layers]),
      'parts': {part: _totals(layers) for part, layers in parts.items()},
      'prediction_layers': _totals(parts['extra_layers'] + parts['predictors']),
  }


def format_table(rows: list[dict]) -> str:
  """One line per detector: params and MAdds of each part and of the whole, in millions."""
  header = ('model', 'width', 'resolution', 'head', 'classes',
            *(f'{part} params/MAdds (M)' for part in PARTS),
            'prediction_layers params/MAdds (M)', 'total params (M)', 'MAdds (M)')
  lines = [header]
  for row in rows:
    lines.append((row['model'], str(row['width']), str(row['resolution']), row['head'],
                  str(row['num_classes']),
                  *(f'{counts["params"] / 1e6:.3f} / {counts["madds"] / 1e6:.1f}'
                    for counts in [*(row['parts'][part] for part in PARTS),
                                   row['prediction_layers']]),
                  f'{row["params"] / 1e6:.3f}', f'{row["madds"] / 1e6:.1f}'))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return '\n'.join(
      '  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths)))
      for line in lines)
