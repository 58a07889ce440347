r"""Exports a trained network to TFLite (LiteRT) or ONNX, the files mobile runtimes load.

  python -m mnv2_jax.export --workdir WORKDIR --format tflite --out model.tflite
  python -m mnv2_jax.export --pretrained DIR --format onnx --out model.onnx
      [--raw] [--resolution R] [--batch N|dynamic] [--quantize none|dynamic|int8]
      [--memory-split T] [--calibration-images 256] [--evaluate]

The network comes from its source, nothing is retyped: a training workdir
gives config.json's model, run_info.json's number of classes and its newest
readable checkpoint (the EMA weights; `--raw` the raw ones); a pretrained
directory (`mnv2_jax.pretrained`) its model_config.json and variables. The file
holds the inference network: BN with its moving statistics (the converter folds
it into the convolutions), no dropout; input float32 NHWC images in [-1, 1]
(the eval preprocessing, `x / 127.5 - 1`) of shape (N, R, R, 3), output the
logits (N, classes). R is the source's resolution unless --resolution, N is 1
unless --batch; `--batch dynamic` leaves N open. `--memory-split T` exports
MobileNetV2's Section 5.1 inference (bottlenecks in T channel groups,
`models/memory_split.py`).

How (docs/export.md says why, and what the tests measure):
- TFLite: `jax2tf.convert` (JAX's TF bridge; in JAX 0.10 it embeds the
  function's StableHLO in one XlaCallModule op) and `tf.lite.TFLiteConverter`,
  which lowers that StableHLO to TFLite builtins. Depthwise convolutions are
  exported in their 'xla' form (a grouped convolution, TFLite's
  DEPTHWISE_CONV_2D) whatever the run computed them with: same variables and
  arithmetic, the op mobile runtimes have kernels for.
- ONNX: tf2onnx's TFLite front end converts that TFLite model (a quantized one
  into QuantizeLinear/DequantizeLinear pairs, so both formats carry the same
  quantization). tf2onnx cannot read the XlaCallModule op of a jax2tf
  function, and jax2onnx needs an older orbax-checkpoint than this project.
- `--quantize dynamic`: int8 weights, float activations (the converter's
  dynamic-range quantization). `--quantize int8`: weights and activations
  int8 and every op an int8 builtin (TFLITE_BUILTINS_INT8), calibrated on the
  first --calibration-images images of the run's training split through the
  eval preprocessing. Input and output stay float32 (one QUANTIZE and one
  DEQUANTIZE at the ends), so every export takes and returns the same tensors.
- The exported model is loaded in its runtime (LiteRT's interpreter, ONNX
  Runtime) and run once before anything is written; the file then appears at
  --out in one rename, so a refused or failed export leaves nothing there.

`--evaluate` runs the written file over the run's eval split through the
project's eval pipeline (`data.create_eval_iterator`, at the export's
resolution) and prints its top-1 and top-5 beside those of `model.apply` with
the same weights.

A mistake in the flags or paths, a workdir without a finished checkpoint, or a
model the converters cannot express is one `error:` line and exit status 2
(`mnv2_jax/errors.py`). The converters and runtimes are the optional extra
`pip install -e .[export]`.
"""

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import warnings
from typing import Any, Callable, Iterator, Optional, Sequence

if __name__ == '__main__':
  # TensorFlow's converter otherwise logs each of its passes from C++.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=wrong-import-position
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from mnv2_jax import data, errors, models  # noqa: E402
from mnv2_jax.models import architecture, layers  # noqa: E402
from mnv2_jax.trained import Source, load_pretrained_directory, load_workdir  # noqa: E402

FORMATS = ('tflite', 'onnx')
QUANTIZATIONS = ('none', 'dynamic', 'int8')
DEFAULT_CALIBRATION_IMAGES = 256
ONNX_OPSET = 17
INPUT_NAME = 'images'
# The network's downsampling: its last feature maps are ceil(R / 32) pixels wide.
OUTPUT_STRIDE = 32
# What each step needs beyond the training requirements: (module, pip name).
OPTIONAL_PACKAGES = {
    'litert': ('ai_edge_litert.interpreter', 'ai-edge-litert'),
    'tf2onnx': ('tf2onnx', 'tf2onnx'),
    'onnxruntime': ('onnxruntime', 'onnxruntime'),
}


def optional_module(key: str):
  """The module of OPTIONAL_PACKAGES[key]; a UserError naming the extra when it is missing."""
  module, package = OPTIONAL_PACKAGES[key]
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise errors.UserError(f'{package} is not installed ({e}); install the export extra: '
                           f'pip install -e .[export]') from e


def missing_packages(file_format: str) -> list[str]:
  """The pip names of the packages an export to `file_format` needs and lacks."""
  keys = ('litert',) if file_format == 'tflite' else ('tf2onnx', 'onnxruntime')
  missing = []
  for key in keys:
    try:
      importlib.import_module(OPTIONAL_PACKAGES[key][0])
    except ImportError:
      missing.append(OPTIONAL_PACKAGES[key][1])
  return missing


# ----------------------------------------------------------------------------
# The inference function and its conversion


def inference_model(model: nn.Module, memory_split: int = 1) -> nn.Module:
  """`model` as exported: float32, grouped-convolution depthwise, optionally split (5.1)."""
  updates: dict[str, Any] = dict(depthwise_impl='xla', dtype=jnp.float32)
  if memory_split != 1:
    if not isinstance(model, models.MobileNetV2):
      raise errors.UserError(f'--memory-split {memory_split}: the split inference of Section '
                             f'5.1 is MobileNetV2\'s bottlenecks; this model is '
                             f'{type(model).__name__}.')
    updates['memory_split'] = memory_split
  with errors.user_input():
    return model.clone(**updates)


def _pointwise_as_convolution(next_fun, args, kwargs, context):
  """Flax method interceptor: every 1x1 convolution exported as a convolution.

  Our 1x1 convolution is a dot_general over the channel axis
  (`layers.pointwise_conv`), which TF 2.21's converter lowers to reshapes around
  tfl.batch_matmul / fully_connected. Two converters then fail on it: the TFLite
  converter rejects it where the width axis is 1 ("invalid output rank,
  expected 3 but got 4", the last blocks at 32 px), and tf2onnx's model of a
  dynamic-batch file computes those reshapes' shapes wrongly (ONNX Runtime
  refuses any batch but 1). The same product as a convolution is one CONV_2D
  (ONNX Conv) that takes any batch and width, as TF-Slim's graphs had it.
  """
  inputs = args[0] if args else None
  if (isinstance(context.module, layers.PointwiseConv) and context.method_name == '__call__'
      and inputs is not None and inputs.ndim == 4):
    kernel = context.module.get_variable('params', 'kernel').astype(inputs.dtype)
    return jax.lax.conv_general_dilated(inputs, kernel, (1, 1), 'VALID',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return next_fun(*args, **kwargs)


def inference_function(model: nn.Module, variables: dict) -> Callable[[jax.Array], jax.Array]:
  """images (N, R, R, 3) in [-1, 1] -> logits, with the weights as constants."""
  def logits(images):
    with nn.intercept_methods(_pointwise_as_convolution):
      return model.apply(variables, images, train=False)
  return logits


class ExportError(errors.UserError):
  """A converter or runtime cannot express or run the model."""


def to_tflite(logits_fn: Callable, input_shape: Sequence[int], quantize: str = 'none',
              calibration: Optional[Callable[[], Iterator[np.ndarray]]] = None) -> bytes:
  """The TFLite flatbuffer of `logits_fn` for float32 input of `input_shape`.

  A batch of None is left dynamic (jax2tf's shape polymorphism). `calibration`
  yields input batches for `quantize='int8'`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  polymorphic_shapes = (None if input_shape[0] is not None else
                        [f'(b, {", ".join(str(side) for side in input_shape[1:])})'])
  # Lowered for the CPU whatever this machine's accelerator: the file runs on phones.
  converted = jax2tf.convert(logits_fn, with_gradient=False, polymorphic_shapes=polymorphic_shapes,
                             native_serialization_platforms=('cpu',))
  function = tf.function(converted, autograph=False,
                         input_signature=[tf.TensorSpec(input_shape, tf.float32, INPUT_NAME)])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], function)
  if quantize != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantize == 'int8':
    if calibration is None:
      raise ValueError('quantize="int8" needs calibration images.')
    converter.representative_dataset = lambda: ([batch] for batch in calibration())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  try:
    with warnings.catch_warnings():
      # Notes on the converter's own choices (e.g. float input statistics), not the user's.
      warnings.simplefilter('ignore')
      return converter.convert()
  except Exception as e:  # pylint: disable=broad-except  # the converter's errors are many
    lines = [line.strip() for line in str(e).splitlines() if 'error:' in line] or [str(e)]
    raise ExportError(f'the TFLite converter cannot express this model '
                      f'({lines[0][:300]}).') from e


def tflite_to_onnx(tflite_model: bytes) -> bytes:
  """The ONNX model of a TFLite flatbuffer (tf2onnx's TFLite front end)."""
  tf2onnx = optional_module('tf2onnx')
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, 'model.tflite')
    with open(path, 'wb') as f:
      f.write(tflite_model)
    try:
      with warnings.catch_warnings():
        # tf2onnx reads the model with tf.lite's deprecated interpreter.
        warnings.simplefilter('ignore')
        proto, _ = tf2onnx.convert.from_tflite(path, opset=ONNX_OPSET)
    except Exception as e:  # pylint: disable=broad-except
      raise ExportError(f'tf2onnx cannot convert this model to ONNX ({type(e).__name__}: '
                        f'{(str(e).splitlines() or [""])[0][:300]}).') from e
  return proto.SerializeToString()


class Runtime:
  """An exported model in its runtime: logits of any number of float32 NHWC images.

  Images are fed in chunks of the file's batch size (the last one padded with
  zeros), or all at once to a file of dynamic batch size (input_shape[0] None).
  """

  def __init__(self, model: bytes, file_format: str, threads: Optional[int] = None):
    """`threads`: the runtime's intra-op threads (None: its default)."""
    self.file_format = file_format
    if file_format == 'tflite':
      interpreter_lib = optional_module('litert')
      self._interpreter = interpreter_lib.Interpreter(model_content=model, num_threads=threads)
      self._interpreter.allocate_tensors()
      signature = self._interpreter.get_input_details()[0]['shape_signature']
      self.input_shape = tuple(None if side < 0 else int(side) for side in signature)
    elif file_format == 'onnx':
      ort = optional_module('onnxruntime')
      options = ort.SessionOptions()
      if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
      self._session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
      # A dynamic side is a name (str) in ONNX Runtime.
      self.input_shape = tuple(side if isinstance(side, int) else None
                               for side in self._session.get_inputs()[0].shape)
    else:
      raise ValueError(f'file_format must be one of {list(FORMATS)}, got {file_format!r}.')

  def _run(self, images: np.ndarray) -> np.ndarray:
    if self.file_format == 'onnx':
      return self._session.run(None, {self._session.get_inputs()[0].name: images})[0]
    interpreter = self._interpreter
    interpreter.set_tensor(interpreter.get_input_details()[0]['index'], images)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]['index']).copy()

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    batch = self.input_shape[0]
    if batch is None:
      if self.file_format == 'tflite':
        index = self._interpreter.get_input_details()[0]['index']
        self._interpreter.resize_tensor_input(index, images.shape)
        self._interpreter.allocate_tensors()
      return self._run(images)
    outputs = []
    for start in range(0, len(images), batch):
      chunk = images[start:start + batch]
      padded = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:],
                                               np.float32)]) if len(chunk) < batch else chunk
      outputs.append(self._run(padded)[:len(chunk)])
    return np.concatenate(outputs)


def check_runs(model: bytes, file_format: str, input_shape: Sequence[int]) -> None:
  """Loads `model` in its runtime and runs it once: what converts but cannot run is refused."""
  try:
    # A dynamic batch is tried with 2.
    shape = (input_shape[0] or 2,) + tuple(input_shape[1:])
    logits = Runtime(model, file_format)(np.zeros(shape, np.float32))
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    runtime = 'LiteRT' if file_format == 'tflite' else 'ONNX Runtime'
    raise ExportError(f'{runtime} cannot run the exported model ({type(e).__name__}: '
                      f'{" ".join(str(e).split())[:300]}).') from e
  if not np.all(np.isfinite(logits)):
    raise ExportError('the exported model computes non-finite logits on a zero image.')


# ----------------------------------------------------------------------------
# The run's data: calibration and evaluation


def _data_config(source: Source, resolution: int, **overrides) -> ml_collections.ConfigDict:
  """The run's data config at `resolution`, checked to still describe the run's classes."""
  data_config = ml_collections.ConfigDict(source.config.data.to_dict())
  if 'render_resolution' in data_config:
    # The built-in dataset renders at the input side unless told: at another
    # --resolution these are the run's images, resized by the eval preprocessing.
    data_config.render_resolution = data_config.render_resolution or data_config.resolution
  data_config.resolution = resolution
  data_config.update(overrides)
  with errors.user_input():
    data.validate_data_config(data_config, num_devices=1, process_count=1)
    num_classes = data.get_dataset_info(data_config).num_classes
  if num_classes != source.num_classes:
    # E.g. a config.json from before data.dataset_version existed now reads the newest version.
    raise errors.UserError(
        f'the run\'s model has {source.num_classes} classes, but its data config '
        f'({data_config.dataset!r}, version {data_config.get("dataset_version") or "newest"}) '
        f'now gives {num_classes}: the dataset changed since the run; pin the version it was '
        f'trained on in a copy of the workdir\'s config.json.')
  return data_config


def eval_data_config(source: Source, resolution: int) -> ml_collections.ConfigDict:
  """The run's eval data at `resolution` (a UserError if it no longer fits the model)."""
  if source.config is None:
    raise errors.UserError('evaluation reads the run\'s eval split: export from a --workdir.')
  return _data_config(source, resolution)


def calibration_images(source: Source, resolution: int, count: int) -> np.ndarray:
  """The first `count` images of the run's training split, through the eval preprocessing.

  (Fewer when the split is smaller.) The eval preprocessing is what the
  deployed model sees: a central crop, no augmentation.
  """
  data_config = _data_config(source, resolution, eval_split=source.config.data.train_split,
                             eval_batch_size=min(count, 64))
  images = []
  for batch in data.create_eval_iterator(data_config):
    images.extend(batch['image'][batch['mask']])
    if len(images) >= count:
      break
  return np.stack(images[:count]).astype(np.float32)


def _top_k_correct(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray, k: int) -> int:
  top = np.argsort(-logits, axis=-1)[:, :min(k, logits.shape[-1])]
  return int(np.sum(np.any(top == labels[:, None], axis=-1) & mask))


def evaluate(predictors: dict[str, Callable[[np.ndarray], np.ndarray]],
             data_config: ml_collections.ConfigDict) -> dict[str, dict[str, float]]:
  """Top-1/top-5 of each predictor (images -> logits) over the eval split of `data_config`.

  `data_config`: `eval_data_config`'s.
  """
  correct = {name: {'top1': 0, 'top5': 0} for name in predictors}
  count = 0
  for batch in data.create_eval_iterator(data_config):
    count += int(np.sum(batch['mask']))
    for name, predict in predictors.items():
      logits = np.asarray(predict(batch['image']))
      for k in (1, 5):
        correct[name][f'top{k}'] += _top_k_correct(logits, batch['label'], batch['mask'], k)
  if not count:
    raise errors.UserError(f'the eval split of {data_config.dataset!r} yielded no examples.')
  return {name: {key: value / count for key, value in numbers.items()} | {'count': count}
          for name, numbers in correct.items()}


# ----------------------------------------------------------------------------
# The command


def export(source: Source, file_format: str, *, resolution: Optional[int] = None,
           batch: Optional[int] = 1, quantize: str = 'none', memory_split: int = 1,
           num_calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
           calibration: Optional[np.ndarray] = None) -> bytes:
  """The exported model of `source` as bytes, checked to run in its runtime.

  `batch` None: a dynamic batch size. int8 is calibrated on
  `calibration` (float32 NHWC images in [-1, 1]) if given, else on the run's
  training images (`calibration_images`).
  """
  resolution = resolution or source.resolution
  with errors.user_input():
    architecture.validate_resolution(resolution)
  model = inference_model(source.model, memory_split)
  if memory_split > 1 and -(-resolution // OUTPUT_STRIDE) == 1:
    # The split projection (memory_split.py) is a dot_general the interceptor
    # cannot reach: the converter's error above, from inside the group loop.
    raise ExportError(f'--memory-split {memory_split} at {resolution} px: the last blocks\' '
                      f'feature maps are 1 pixel wide, where the TFLite converter fails on '
                      f'the split projection; use --resolution {OUTPUT_STRIDE + 1} or more.')
  missing = missing_packages(file_format)
  if missing:
    raise errors.UserError(f'--format {file_format} needs {", ".join(missing)}: install the '
                           f'export extra, pip install -e .[export]')
  input_shape = (batch, resolution, resolution, 3)
  calibration_batches = None
  if quantize == 'int8':
    if calibration is None and source.config is None:
      raise errors.UserError('--quantize int8 calibrates on the run\'s training data: export '
                             'from a --workdir (a pretrained directory has no data config).')
    images = (calibration_images(source, resolution, num_calibration_images)
              if calibration is None else np.asarray(calibration, np.float32))
    step = batch or 1
    if len(images) < step:
      raise errors.UserError(f'--batch {batch} is more than the {len(images)} calibration '
                             f'images of the training split.')
    calibration_batches = lambda: (images[start:start + step]
                                   for start in range(0, len(images) - step + 1, step))
  with native_output_held_back():
    model_bytes = to_tflite(inference_function(model, source.variables), input_shape, quantize,
                            calibration_batches)
    if file_format == 'onnx':
      model_bytes = tflite_to_onnx(model_bytes)
    check_runs(model_bytes, file_format, input_shape)
  return model_bytes


@contextlib.contextmanager
def native_output_held_back() -> Iterator[None]:
  """Holds back what is written to file descriptor 2 (the converters' and runtimes' C++ notes).

  It is shown after a bug (an exception other than UserError) or with
  `errors.verbose()`, and dropped otherwise, so that a refused export prints
  its error line alone (as `errors.logs_held_back` does for log records).
  """
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    show = errors.verbose()
    try:
      yield
    except errors.UserError:
      raise
    except BaseException:
      show = True
      raise
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      if show:
        held.seek(0)
        sys.stderr.write(held.read().decode(errors='replace'))
        sys.stderr.flush()


def write_atomically(path: str, contents: bytes) -> None:
  """Writes `path` through a temporary file beside it: it appears whole or not at all."""
  directory = os.path.dirname(path)
  descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.',
                                           suffix='.tmp')
  try:
    with os.fdopen(descriptor, 'wb') as f:
      f.write(contents)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 is for secrets
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def _batch(text: str) -> Optional[int]:
  if text == 'dynamic':
    return None
  try:
    return _positive_int(text)
  except argparse.ArgumentTypeError:
    raise argparse.ArgumentTypeError(f'must be an integer >= 1 or \'dynamic\', got '
                                     f'{text!r}') from None


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {text!r}') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'must be an integer >= 1, got {text!r}')
  return value


def _parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(
      prog='python -m mnv2_jax.export',
      description='Exports a trained network to TFLite (LiteRT) or ONNX.')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='a training workdir (mnv2_jax.main --workdir)')
  source.add_argument('--pretrained', help='a pretrained directory (mnv2_jax.convert --out)')
  parser.add_argument('--format', required=True, choices=FORMATS)
  parser.add_argument('--out', required=True, help='the file to write')
  parser.add_argument('--raw', action='store_true',
                      help='a workdir\'s raw weights instead of their EMA')
  parser.add_argument('--resolution', type=int,
                      help='input side in pixels (>= 32); default: the source\'s')
  parser.add_argument('--batch', type=_batch, default=1,
                      help='batch size of the input, or \'dynamic\'')
  parser.add_argument('--quantize', choices=QUANTIZATIONS, default='none')
  parser.add_argument('--memory-split', type=_positive_int, default=1,
                      help='MobileNetV2 bottlenecks in T channel groups (paper Section 5.1)')
  parser.add_argument('--calibration-images', type=_positive_int,
                      default=DEFAULT_CALIBRATION_IMAGES,
                      help='training images that calibrate --quantize int8')
  parser.add_argument('--evaluate', action='store_true',
                      help='evaluate the written file on the run\'s eval split')
  return parser


def _check_out(out: str, file_format: str) -> str:
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise errors.UserError(f'--out {out} is a directory; give the file to write, e.g. '
                           f'{os.path.join(out, "model." + file_format)}.')
  if not os.path.isdir(os.path.dirname(out)):
    raise errors.UserError(f'--out {out}: its directory {os.path.dirname(out)} does not exist.')
  return out


def _print_evaluation(results: dict) -> None:
  for name, numbers in results.items():
    print(f'{name}: top-1 {numbers["top1"]:.4f}, top-5 {numbers["top5"]:.4f} '
          f'({numbers["count"]:,} images)')


@errors.command_line
def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parser().parse_args(argv)
  with errors.logs_held_back():
    out = _check_out(args.out, args.format)
    if args.resolution is not None:
      with errors.user_input():
        try:
          architecture.validate_resolution(args.resolution)
        except ValueError as e:
          raise ValueError(f'--{e}') from None
    if args.pretrained and (args.raw or args.evaluate):
      flag, what = (('--raw', 'the raw weights') if args.raw else
                    ('--evaluate', 'the eval data'))
      raise errors.UserError(f'{flag} needs a --workdir: {what} are a training run\'s, a '
                             f'pretrained directory has neither.')
    # Classifiers only so far: the exported graph ends in logits.
    source = (load_workdir(args.workdir, raw=args.raw, task='classification',
                           reader='mnv2_jax.export') if args.workdir
              else load_pretrained_directory(args.pretrained))
    resolution = args.resolution or source.resolution
    # Checked before the export, so that a refused evaluation writes nothing either.
    eval_config = eval_data_config(source, resolution) if args.evaluate else None
    model_bytes = export(source, args.format, resolution=resolution, batch=args.batch,
                         quantize=args.quantize, memory_split=args.memory_split,
                         num_calibration_images=args.calibration_images)
  write_atomically(out, model_bytes)
  print(f'Wrote {out} ({len(model_bytes):,} bytes): {args.format}, quantize {args.quantize}, '
        f'memory split {args.memory_split}, of {source.description}; input {INPUT_NAME} '
        f'float32 ({args.batch or "N"}, {resolution}, {resolution}, 3) in [-1, 1], logits out.')
  if args.evaluate:
    runtime = Runtime(model_bytes, args.format)
    reference = jax.jit(inference_function(inference_model(source.model), source.variables))
    _print_evaluation(evaluate({os.path.basename(out): runtime,
                                'model.apply (float32)': reference}, eval_config))
  return 0


if __name__ == '__main__':
  sys.exit(main())
