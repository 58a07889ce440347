"""Parameter and multiply-add accounting of Mobile DeepLabv3 (paper Table 7).

Read from the same tables as the network: the atrous backbone
(`counts.mobilenet_v2_layers` / `mobilenet_v1_layers` with `output_stride`,
without the top) and the head (`deeplab_architecture.deeplab_head_spec`).
The conventions are the classifier's (`counts.py`): params = what
`model.init` puts in 'params' (kernels, BN scale and bias, the logits bias),
madds = the multiply-accumulates of every convolution; BN, activations,
residual adds, pooling and the bilinear upsampling are not counted. MF
('multi-scale + flip') sums the 12 evaluations at DeepLab's scaled input
sizes (`deeplab_architecture.evaluation_sizes`).

Two things decide the multiply-adds beyond the layer table, and each reading
of Table 7 is a choice of both:
  input_size       the side the network sees. Table 7 says 512x512; DeepLab
                   evaluates PASCAL (images of at most 500 pixels) on a 513
                   crop, since sides of the form k * output_stride + 1 keep the
                   feature maps' corners on input pixels.
  atrous_counting  'direct': a dilated conv computes exactly its n x n outputs
                   (XLA; this package's network). 'space_to_batch': as TF 1.x
                   runs it (`tf.nn.atrous_conv2d`, and `depthwise_conv2d` with
                   a rate), the padded input is cut into rate x rate
                   sub-images whose sides are rounded up to a multiple of the
                   rate, so the conv computes ceil(n / rate) * rate outputs per
                   side and crops the rest.
The conventions name two readings: 'deeplab' (513 crop, space-to-batch: the
graph DeepLab evaluates) and 'exact' (the resolution as given, direct: what
`DeepLabV3` runs, which the tests check against the traced program).
docs/segmentation.md compares every reading with Table 7:

  python -m mnv2_jax.stats.segmentation
"""

import argparse
import dataclasses
import itertools
import sys
from typing import Optional, Sequence

from mnv2_jax import reference
from mnv2_jax.models import architecture, deeplab_architecture
from mnv2_jax.stats import counts
from mnv2_jax.stats.counts import LayerCount

MODEL_NAMES = ('deeplabv3_mobilenet_v2', 'deeplabv3_mobilenet_v1')
ATROUS_COUNTINGS = ('direct', 'space_to_batch')


@dataclasses.dataclass(frozen=True)
class Convention:
  crop_padding: int  # input_size = resolution + crop_padding
  atrous_counting: str


CONVENTIONS = {
    'deeplab': Convention(crop_padding=1, atrous_counting='space_to_batch'),
    'exact': Convention(crop_padding=0, atrous_counting='direct'),
}
DEFAULT_CONVENTION = 'deeplab'


def backbone_name(model: str) -> str:
  architecture.validate_choice('model', model, MODEL_NAMES)
  return model[len('deeplabv3_'):]


def space_to_batch_size(output_size: int, dilation: int) -> int:
  """The side TF 1.x computes for a stride-1 conv dilated by `dilation` (see above)."""
  if dilation == 1:
    return output_size
  return -(-output_size // dilation) * dilation


COMPUTED_SIZES = {'direct': counts.exact_size, 'space_to_batch': space_to_batch_size}


def head_layer_counts(head: deeplab_architecture.DeepLabHeadSpec, feature_size: int,
                      computed_size: counts.ComputedSize = counts.exact_size
                      ) -> list[LayerCount]:
  """The head's convolutions on a feature map of side `feature_size`."""

  def layer_count(conv: deeplab_architecture.HeadConvSpec, output_size: int) -> LayerCount:
    if conv.depthwise:
      weights = conv.kernel_size**2 * conv.in_channels
    else:
      weights = conv.kernel_size**2 * conv.in_channels * conv.out_channels
    side = computed_size(output_size, conv.dilation)
    # The logits conv has a bias (a parameter, no multiply-add) instead of a BN.
    bias = 0 if conv.batch_norm else conv.out_channels
    return LayerCount(conv.name, 'depthwise' if conv.depthwise else 'conv', output_size,
                      weights + bias, weights * side**2,
                      conv.out_channels if conv.batch_norm else 0)

  # Image pooling runs on the 1x1 spatial mean; everything else on the feature map.
  return [layer_count(head.image_pooling, 1)] + [
      layer_count(conv, feature_size) for conv in head.convs[1:]]


def deeplab_layer_counts(model: str, input_size: int = 513, output_stride: int = 16,
                         aspp: bool = True, num_classes: int = 21,
                         width_multiplier: float = 1.0, aspp_convolution: str = 'regular',
                         atrous_counting: str = 'direct') -> list[LayerCount]:
  """Every weight layer of one evaluation on an input_size x input_size image.

  Backbone layers are named as in `params['backbone']`, head layers as in `params`.
  """
  architecture.validate_choice('atrous_counting', atrous_counting, ATROUS_COUNTINGS)
  backbone = backbone_name(model)
  spec, head = deeplab_architecture.resolve(backbone, num_classes, output_stride, aspp,
                                            width_multiplier, aspp_convolution)
  computed_size = COMPUTED_SIZES[atrous_counting]
  layer_function = (counts.mobilenet_v2_layers if backbone == 'mobilenet_v2'
                    else counts.mobilenet_v1_layers)
  backbone_layers = [
      dataclasses.replace(layer, name=f'backbone/{layer.name}')
      for layer in layer_function(width_multiplier, input_size, output_stride=output_stride,
                                  include_top=False, computed_size=computed_size)]
  feature_size = backbone_layers[-1].output_size
  return backbone_layers + head_layer_counts(head, feature_size, computed_size)


def _totals(layers: Sequence[LayerCount]) -> tuple[int, int]:
  """(params, madds) of `layers`: weights plus BN scale and bias, and multiply-adds."""
  return (sum(layer.weights + 2 * layer.batch_norm_channels for layer in layers),
          sum(layer.madds for layer in layers))


def count_deeplab_model(model: str, resolution: int = 512, output_stride: int = 16,
                        aspp: bool = True, multi_scale_flip: bool = False,
                        num_classes: int = 21, width_multiplier: float = 1.0,
                        aspp_convolution: str = 'regular',
                        convention: str = DEFAULT_CONVENTION,
                        input_size: Optional[int] = None,
                        atrous_counting: Optional[str] = None) -> dict:
  """Exact parameter and multiply-add counts of one Table 7 configuration.

  `convention` sets `input_size` (resolution + 1 for 'deeplab') and
  `atrous_counting`; either may be given to override it (docs/segmentation.md
  compares all four readings). With `multi_scale_flip`, madds is the sum over
  the 12 evaluations.

  Returns a dict with model, width, resolution, input_size, output_stride,
  aspp, aspp_convolution, multi_scale_flip, evaluations, num_classes,
  convention, atrous_counting, params, params_no_bn, batch_stats,
  backbone_params, head_params, madds, backbone_madds and head_madds.
  """
  architecture.validate_choice('convention', convention, tuple(CONVENTIONS))
  architecture.validate_resolution(resolution)
  chosen = CONVENTIONS[convention]
  input_size = resolution + chosen.crop_padding if input_size is None else input_size
  atrous_counting = chosen.atrous_counting if atrous_counting is None else atrous_counting
  sizes = deeplab_architecture.evaluation_sizes(input_size, multi_scale_flip)
  per_size = {size: deeplab_layer_counts(model, size, output_stride, aspp, num_classes,
                                         width_multiplier, aspp_convolution, atrous_counting)
              for size in set(sizes)}
  layers = per_size[input_size]  # Scale 1.0 is one of MF's evaluations too.
  is_backbone = lambda layer: layer.name.startswith('backbone/')
  backbone_params, _ = _totals([layer for layer in layers if is_backbone(layer)])
  head_params, _ = _totals([layer for layer in layers if not is_backbone(layer)])
  backbone_madds = sum(_totals([l for l in per_size[size] if is_backbone(l)])[1] for size in sizes)
  head_madds = sum(_totals([l for l in per_size[size] if not is_backbone(l)])[1] for size in sizes)
  batch_norm_channels = sum(layer.batch_norm_channels for layer in layers)
  return {
      'model': model,
      'width': width_multiplier,
      'resolution': resolution,
      'input_size': input_size,
      'output_stride': output_stride,
      'aspp': aspp,
      'aspp_convolution': aspp_convolution,
      'multi_scale_flip': multi_scale_flip,
      'evaluations': len(sizes),
      'num_classes': num_classes,
      'convention': convention,
      'atrous_counting': atrous_counting,
      'params': backbone_params + head_params,
      'params_no_bn': sum(layer.weights for layer in layers),
      'batch_stats': 2 * batch_norm_channels,
      'backbone_params': backbone_params,
      'head_params': head_params,
      'madds': backbone_madds + head_madds,
      'backbone_madds': backbone_madds,
      'head_madds': head_madds,
  }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = [header, ['---'] * len(header), *rows]
  return '\n'.join('| ' + ' | '.join(line) + ' |' for line in lines)


def format_records(records: Sequence[dict]) -> str:
  """One line per configuration: exact params, MAdds in billions, and their split."""
  header = ['model', 'resolution', 'input', 'OS', 'ASPP', 'MF', 'classes', 'convention',
            'params', 'MAdds (B)', 'backbone params / MAdds (B)', 'head params / MAdds (B)']
  return markdown_table(header, [
      [record['model'], str(record['resolution']), str(record['input_size']),
       str(record['output_stride']), 'yes' if record['aspp'] else 'no',
       'yes' if record['multi_scale_flip'] else 'no', str(record['num_classes']),
       record['convention'], f'{record["params"]:,}', f'{record["madds"] / 1e9:.4f}',
       f'{record["backbone_params"]:,} / {record["backbone_madds"] / 1e9:.4f}',
       f'{record["head_params"]:,} / {record["head_madds"] / 1e9:.4f}']
      for record in records])


# --- Table 7 --------------------------------------------------------------------

# Digits after the point of Table 7's MAdds column (billions): 387 is printed
# without decimals; its params are all printed to 0.01M.
TABLE7_MADDS_DECIMALS = {
    ('MobileNetV1', 16, True, False): 2, ('MobileNetV1', 8, True, True): 1,
    ('MobileNetV2*', 16, True, False): 1, ('MobileNetV2*', 8, True, True): 0,
    ('MobileNetV2*', 16, False, False): 2, ('MobileNetV2*', 8, False, True): 1,
}
TABLE7_PARAMS_DECIMALS = 2
TABLE7_RESOLUTION = 512
TABLE7_NUM_CLASSES = 21
TABLE7_MODELS = {'MobileNetV1': 'deeplabv3_mobilenet_v1', 'MobileNetV2*': 'deeplabv3_mobilenet_v2'}


@dataclasses.dataclass(frozen=True)
class Reading:
  """One way to read Table 7's multiply-adds: the input side and the atrous counting."""
  crop_padding: int
  atrous_counting: str

  @property
  def label(self) -> str:
    side = TABLE7_RESOLUTION + self.crop_padding
    return f'{side}, {self.atrous_counting.replace("_", "-")}'


READINGS = tuple(Reading(padding, counting)
                 for padding, counting in itertools.product((0, 1), ATROUS_COUNTINGS))


def table7_rows() -> list[dict]:
  """Table 7's six MobileNet rows, each with the counts under every reading.

  Each row: network, output_stride, aspp, multi_scale_flip, paper_params and
  paper_madds (millions, billions), madds_decimals, params (exact, the same
  under every reading), params_reached, and readings: a list of
  {reading, madds, madds_billions, reached, difference_billions}, plus
  'nearest' (the reading closest to the printed figure).
  """
  rows = []
  for paper in reference.paper_table(7):
    if paper['network'] not in TABLE7_MODELS:
      continue
    key = (paper['network'], paper['output_stride'], paper['aspp'], paper['multi_scale_flip'])
    decimals = TABLE7_MADDS_DECIMALS[key]
    readings = []
    for reading in READINGS:
      record = count_deeplab_model(
          TABLE7_MODELS[paper['network']], TABLE7_RESOLUTION, paper['output_stride'],
          paper['aspp'], paper['multi_scale_flip'], TABLE7_NUM_CLASSES,
          input_size=TABLE7_RESOLUTION + reading.crop_padding,
          atrous_counting=reading.atrous_counting)
      billions = record['madds'] / 1e9
      readings.append({
          'reading': reading, 'madds': record['madds'], 'madds_billions': billions,
          'reached': round(billions, decimals) == paper['madds_billions'],
          'difference_billions': billions - paper['madds_billions'],
          'params': record['params']})
    params = readings[0]['params']
    rows.append({
        'network': paper['network'], 'output_stride': paper['output_stride'],
        'aspp': paper['aspp'], 'multi_scale_flip': paper['multi_scale_flip'],
        'paper_params': paper['params_millions'], 'paper_madds': paper['madds_billions'],
        'madds_decimals': decimals, 'params': params,
        'params_reached': round(params / 1e6, TABLE7_PARAMS_DECIMALS) == paper['params_millions'],
        'readings': readings,
        'nearest': min(readings, key=lambda r: abs(r['difference_billions'])),
    })
  return rows


def format_table7(rows: Sequence[dict]) -> str:
  """A Markdown table: paper figures, the count under every reading, the nearest."""
  header = (['network', 'OS', 'ASPP', 'MF', 'params (paper)', 'params', 'MAdds (paper)'] +
            [f'MAdds {reading.label}' for reading in READINGS] + ['nearest - paper'])
  lines = []
  for row in rows:
    decimals = row['madds_decimals']
    cells = [row['network'], str(row['output_stride']), 'yes' if row['aspp'] else 'no',
             'yes' if row['multi_scale_flip'] else 'no', f'{row["paper_params"]:.2f}M',
             f'{row["params"] / 1e6:.4f}M' + ('' if row['params_reached'] else ' (not reached)'),
             f'{row["paper_madds"]:.{decimals}f}B']
    for reading in row['readings']:
      mark = ' ✓' if reading['reached'] else ''
      cells.append(f'{reading["madds_billions"]:.{decimals + 2}f}B{mark}')
    nearest = row['nearest']
    cells.append(f'{nearest["difference_billions"]:+.{decimals + 2}f}B ({nearest["reading"].label})')
    lines.append(cells)
  return markdown_table(header, lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argparse.ArgumentParser(
      prog='python -m mnv2_jax.stats.segmentation',
      description="Table 7's MobileNet rows against the accounting under every reading "
                  '(input 512 or 513, atrous convs counted directly or by space-to-batch); '
                  '✓ marks a figure reached to its printed precision.').parse_args(argv)
  print(format_table7(table7_rows()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
