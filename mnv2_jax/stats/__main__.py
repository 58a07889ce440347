"""Prints the analytic parameter and multiply-add table for a sweep of models.

  python -m mnv2_jax.stats --model mobilenet_v2 \
      --width 0.35,0.5,0.75,1.0,1.4 --resolution 96,128,160,192,224 \
      [--num-classes 1001] [--expansion-ratio 6] [--json]

One row per (width, resolution) combination; `--json` prints a JSON list of
the `count_model` dicts (exact integers) instead of the table.

  python -m mnv2_jax.stats --model ssdlite_mobilenet_v2 --resolution 320 \
      --num-classes 80 [--head ssd|ssdlite] [--json]

The detectors (also `ssdlite_mobilenet_v1`; paper Tables 5 and 6): params and
MAdds of the backbone, the extra layers and the predictors, and in total
(`mnv2_jax/stats/detection.py`, which also says which reading makes each
printed figure).

  python -m mnv2_jax.stats --model deeplabv3_mobilenet_v2 --resolution 512 \
      --output-stride 16 [--no-aspp] [--multi-scale-flip] --num-classes 21 \
      [--convention deeplab|exact] [--json]

Mobile DeepLabv3 (also `deeplabv3_mobilenet_v1`; paper Table 7): params and
MAdds of the atrous backbone, the head and in total, summed over the 12
evaluations with `--multi-scale-flip` (`mnv2_jax/stats/segmentation.py`, which
also says what the conventions count; `python -m mnv2_jax.stats.segmentation`
compares every reading with Table 7).

  python -m mnv2_jax.stats --memory --width 1.0 --resolution 224 --split 1,2,4,8 \
      [--dtype float32|bfloat16] [--batch-size 1] [--latency-runs 20] [--json]

`--memory` reports peak activation memory of MobileNetV2 inference split in T
channel groups (paper Section 5.1, `mnv2_jax/stats/memory.py`): per T the
analytic eq. (2) peak, XLA's compiled temp memory and the latency, plus the
Table 3 reproduction; with `--json` a JSON list of rows.

  python -m mnv2_jax.stats --latency [--runtime litert,onnxruntime,jax] [--threads 1] \
      [--width 1.0,1.4] [--resolution 224] [--latency-runs 50] [--split 1,4] [--json]

`--latency` times batch-1 inference of MobileNetV1 1.0 and MobileNetV2 1.0, 1.4 (and
any --width) as exported files in LiteRT and ONNX Runtime (float32 and int8) and in JAX,
the paper's Table 4 way (`mnv2_jax/stats/latency.py`; needs `pip install -e .[export]`
for the first two): median and 90th percentile, and the ratios to MobileNetV1 beside the
paper's.
"""

import argparse
import json
import sys
from typing import Optional, Sequence

from mnv2_jax import errors
from mnv2_jax.models import architecture, ssdlite_architecture
from mnv2_jax.stats import counts, detection, segmentation


MEMORY_LATENCY_RUNS = 20


def _comma_separated(parse, what: str):
  def parse_list(text: str) -> list:
    try:
      return [parse(item) for item in text.split(',') if item.strip()]
    except ValueError:
      raise argparse.ArgumentTypeError(
          f'expected a comma-separated list of {what}, got {text!r}') from None
  return parse_list


def build_parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(
      prog='python -m mnv2_jax.stats',
      description='Analytic parameter and multiply-add counts of MobileNetV2/V1, '
                  'computed from the architecture table without building the network.')
  parser.add_argument('--model', default='mobilenet_v2',
                      choices=counts.MODEL_NAMES + detection.MODEL_NAMES +
                      segmentation.MODEL_NAMES)
  parser.add_argument('--width', type=_comma_separated(float, 'numbers'), default=[1.0],
                      help='width multipliers, e.g. 0.35,0.5,0.75,1.0,1.4')
  parser.add_argument('--resolution', type=_comma_separated(int, 'integers'), default=None,
                      help='input resolutions, e.g. 96,128,160,192,224 (default 224; '
                           f'{detection.DEFAULT_RESOLUTION} for the detectors)')
  parser.add_argument('--num-classes', type=int, default=None,
                      help='classifier outputs (default 1000; the official checkpoints use '
                           f'1001); object classes of a detector, without the background '
                           f'(default {detection.DEFAULT_NUM_CLASSES})')
  parser.add_argument('--head', choices=ssdlite_architecture.HEADS, default=None,
                      help="detectors only: 'ssdlite' (default) or 'ssd' (paper Table 5)")
  parser.add_argument('--expansion-ratio', type=float, default=None,
                      help=f'MobileNetV2 expansion ratio t (default '
                           f'{counts.DEFAULT_EXPANSION_RATIO}); not valid for mobilenet_v1')
  parser.add_argument('--json', action='store_true', help='print a JSON list instead of a table')
  segmentation_flags = parser.add_argument_group('DeepLabv3 models (paper Table 7)')
  segmentation_flags.add_argument('--output-stride', type=_comma_separated(int, 'integers'),
                                  default=None, help='8 and/or 16 (default 16)')
  segmentation_flags.add_argument('--no-aspp', action='store_true',
                                  help='the head without ASPP: image pooling + 1x1 conv')
  segmentation_flags.add_argument('--multi-scale-flip', action='store_true',
                                  help='sum over the 6 scales x 2 flips of MF inference')
  segmentation_flags.add_argument('--convention', choices=tuple(segmentation.CONVENTIONS),
                                  default=None,
                                  help="'deeplab' (default: 513 crop, atrous convs as TF's "
                                       "space-to-batch) or 'exact' (as this network runs)")
  memory_flags = parser.add_argument_group('--memory mode (paper Section 5.1, Table 3)')
  memory_flags.add_argument('--memory', action='store_true',
                            help='report peak activation memory and latency of split inference')
  memory_flags.add_argument('--split', type=_comma_separated(int, 'integers'),
                            default=None, help='memory_split values T, e.g. 1,2,4,8 '
                                               '(default 1,2,4,8; with --latency 1)')
  memory_flags.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  memory_flags.add_argument('--batch-size', type=int, default=1)
  memory_flags.add_argument('--latency-runs', type=int, default=None,
                            help='timed runs per T (0: compile only, no latency; default '
                                 f'{MEMORY_LATENCY_RUNS}); with --latency per variant '
                                 '(default 50)')
  latency_flags = parser.add_argument_group('--latency mode (paper Table 4)')
  latency_flags.add_argument('--latency', action='store_true',
                             help='time batch-1 inference in LiteRT, ONNX Runtime and JAX')
  latency_flags.add_argument('--runtime', type=_comma_separated(str, 'runtimes'),
                             default=['litert', 'onnxruntime', 'jax'],
                             help='runtimes to time, among litert,onnxruntime,jax')
  latency_flags.add_argument('--threads', type=int, default=1,
                             help='inference threads (default 1: the paper\'s one core)')
  return parser


def count_rows(args: argparse.Namespace) -> list[dict]:
  expansion_ratio = args.expansion_ratio
  if expansion_ratio is not None and expansion_ratio.is_integer():
    expansion_ratio = int(expansion_ratio)  # Keeps '6' rather than '6.0' in the output.
  return [counts.count_model(args.model, width, resolution, args.num_classes, expansion_ratio)
          for width in args.width for resolution in args.resolution]


def format_table(rows: Sequence[dict]) -> str:
  """A fixed-width table: exact counts with thousands separators, MAdds also in millions."""
  header = ('model', 'width', 'resolution', 't', 'classes', 'params', 'params_no_bn',
            'madds', 'MAdds (M)')
  lines = [header]
  for row in rows:
    t = row['expansion_ratio']
    lines.append((row['model'], str(row['width']), str(row['resolution']),
                  '-' if t is None else f'{t:g}', str(row['num_classes']),
                  f'{row["params"]:,}', f'{row["params_no_bn"]:,}', f'{row["madds"]:,}',
                  f'{row["madds"] / 1e6:.2f}'))
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  # Text columns are left-aligned, numbers right-aligned.
  return '\n'.join(
      '  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths)))
      for line in lines)


def with_model_defaults(args: argparse.Namespace) -> argparse.Namespace:
  """Fills the flags whose default depends on the model: resolution and class count."""
  is_detector = args.model in detection.MODEL_NAMES
  is_segmenter = args.model in segmentation.MODEL_NAMES
  if args.resolution is None:
    args.resolution = [detection.DEFAULT_RESOLUTION if is_detector else
                       segmentation.TABLE7_RESOLUTION if is_segmenter else 224]
  if args.num_classes is None:
    args.num_classes = (detection.DEFAULT_NUM_CLASSES if is_detector else
                        segmentation.TABLE7_NUM_CLASSES if is_segmenter else 1000)
  return args


def segmentation_report(args: argparse.Namespace) -> str:
  """Counts of DeepLabv3 models (`mnv2_jax/stats/segmentation.py`)."""
  for flag, value in (('--expansion-ratio', args.expansion_ratio), ('--head', args.head)):
    if value is not None:
      raise ValueError(f'{flag} does not apply to {args.model}; drop it.')
  rows = [segmentation.count_deeplab_model(
              args.model, resolution, output_stride, not args.no_aspp, args.multi_scale_flip,
              args.num_classes, width, convention=args.convention or
              segmentation.DEFAULT_CONVENTION)
          for width in args.width for resolution in args.resolution
          for output_stride in args.output_stride or [16]]
  return json.dumps(rows, indent=1) if args.json else segmentation.format_records(rows)


def detection_report(args: argparse.Namespace) -> str:
  """Per-part counts of SSD/SSDLite detectors (`mnv2_jax/stats/detection.py`)."""
  if args.expansion_ratio is not None:
    raise ValueError('--expansion-ratio applies to the classifiers only; drop it for '
                     f'{args.model}.')
  rows = [detection.count_detection_model(args.model, width, resolution, args.num_classes,
                                          args.head or 'ssdlite')
          for width in args.width for resolution in args.resolution]
  return json.dumps(rows, indent=1) if args.json else detection.format_table(rows)


def accounting_report(args: argparse.Namespace) -> str:
  if args.model in segmentation.MODEL_NAMES:
    return segmentation_report(args)
  if (args.output_stride is not None or args.no_aspp or args.multi_scale_flip or
      args.convention is not None):
    raise ValueError('--output-stride, --no-aspp, --multi-scale-flip and --convention apply '
                     f'to the DeepLabv3 models {list(segmentation.MODEL_NAMES)} only.')
  if args.model in detection.MODEL_NAMES:
    return detection_report(args)
  if args.head is not None:
    raise ValueError(f'--head applies to the detectors {list(detection.MODEL_NAMES)} only.')
  if args.model == 'mobilenet_v1' and args.expansion_ratio is not None:
    raise ValueError('--expansion-ratio applies to mobilenet_v2 only; drop it for mobilenet_v1.')
  rows = count_rows(args)
  return json.dumps(rows, indent=1) if args.json else format_table(rows)


def memory_report(args: argparse.Namespace) -> str:
  if args.model != 'mobilenet_v2':
    raise ValueError('--memory applies to mobilenet_v2 only (the split needs bottleneck blocks).')
  args.split = args.split or [1, 2, 4, 8]
  if args.latency_runs is None:
    args.latency_runs = MEMORY_LATENCY_RUNS
  if args.latency_runs < 0:
    raise ValueError(f'--latency-runs must be >= 0, got {args.latency_runs}.')
  for resolution in args.resolution:
    architecture.validate_resolution(resolution)
  from mnv2_jax.stats import memory  # Imports JAX and the network: only for this mode.
  rows = [row for width in args.width for resolution in args.resolution
          for row in memory.memory_rows(width, resolution, args.split, args.dtype,
                                        args.batch_size, args.latency_runs,
                                        args.expansion_ratio)]
  if args.json:
    return json.dumps(rows, indent=1)
  tables = [memory.format_table3(width) for width in args.width]
  return '\n\n'.join(tables + [memory.format_memory_rows(rows)])


def latency_report(args: argparse.Namespace) -> str:
  """Batch-1 latency of MobileNetV1 1.0 and MobileNetV2 (`mnv2_jax/stats/latency.py`)."""
  if args.memory:
    raise ValueError('--latency and --memory are separate modes; pass one of them.')
  if args.model != 'mobilenet_v2' or args.num_classes != 1000 or args.expansion_ratio:
    raise ValueError('--latency times MobileNetV1 1.0 and MobileNetV2 at --width with 1000 '
                     'classes; --model, --num-classes and --expansion-ratio do not apply.')
  if args.threads < 1:
    raise ValueError(f'--threads must be >= 1, got {args.threads}.')
  runs = 50 if args.latency_runs is None else args.latency_runs
  if runs < 1:
    raise ValueError(f'--latency-runs must be >= 1 with --latency, got {runs}.')
  unknown = [runtime for runtime in args.runtime
             if runtime not in ('litert', 'onnxruntime', 'jax')]
  if unknown:
    raise ValueError(f'--runtime {",".join(unknown)} is not one of litert,onnxruntime,jax.')
  for resolution in args.resolution:
    architecture.validate_resolution(resolution)
  from mnv2_jax.stats import latency  # Imports JAX: only for this mode.
  # Before anything starts JAX's CPU backend.
  jax_threads = args.threads if latency.set_jax_threads(args.threads) else None
  rows = latency.latency_rows(args.width, args.resolution, args.runtime, args.split or [1],
                              args.threads, runs, jax_threads)
  return json.dumps(rows, indent=1) if args.json else latency.format_table(rows)


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  """Parses `argv` (default sys.argv[1:]) and prints the report of the chosen mode.

  Each mode is a function from the parsed flags to the text it prints; a new
  mode adds its flags in `build_parser` and one branch here. A bad flag value
  is one `error:` line and exit status 2.
  """
  parser = build_parser()
  args = with_model_defaults(parser.parse_args(argv))
  with errors.user_input():  # the modes' checks of the flag values
    report = (latency_report(args) if args.latency else memory_report(args) if args.memory
              else accounting_report(args))
  print(report)
  return 0


if __name__ == '__main__':
  sys.exit(main())
