"""`python -m mnv2_jax.stats --latency`: the variants it builds, its statistics and ratios.

Nothing here measures time: the statistics are checked on a fake clock, and
the real variants (tiny networks) are only run once each. The numbers for the
README come from a machine with a free core (docs/export.md).
"""

import numpy as np
import pytest

from mnv2_jax import export
from mnv2_jax.stats import latency
from mnv2_jax.stats.__main__ import main as stats_main

MISSING = export.missing_packages('tflite')


class _FakeTime:
  """A clock that each variant's run advances by that variant's duration."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _fake_variant(clock, model, width, milliseconds, runtime='litert', precision='float32',
                  split=1):
  durations = iter(milliseconds * 1000)  # the warm-up and the timed runs, in order

  def run(images):
    assert images.shape == (1, 224, 224, 3)
    clock.now += next(durations) / 1000
  return latency.Variant(model, width, 224, runtime, precision, split, 1, run)


def test_median_p90_ratios_and_the_papers_ordering_on_a_fake_clock():
  clock = _FakeTime()
  runs = list(range(1, 11))  # 1..10 ms: median 5.5, p90 9.1
  variants = [_fake_variant(clock, 'mobilenet_v1', 1.0, [10 * r for r in runs]),
              _fake_variant(clock, 'mobilenet_v2', 1.0, [5 * r for r in runs]),
              _fake_variant(clock, 'mobilenet_v2', 1.4, [20 * r for r in runs]),
              _fake_variant(clock, 'mobilenet_v2', 1.0, [6 * r for r in runs], split=4),
              _fake_variant(clock, 'mobilenet_v2', 1.0, [20 * r for r in runs], runtime='jax'),
              _fake_variant(clock, 'mobilenet_v1', 1.0, [10 * r for r in runs], runtime='jax')]
  rows = latency.time_variants(variants, runs=10, warmup=0, clock=clock)
  v1, v2, v2_wide, v2_split, v2_jax, v1_jax = rows
  assert v1['median_ms'] == pytest.approx(55) and v1['p90_ms'] == pytest.approx(91)
  assert v2['ratio_to_v1'] == pytest.approx(0.5)
  assert v2_wide['ratio_to_v1'] == pytest.approx(2.0)
  assert v2_split['ratio_to_v1'] == pytest.approx(0.6) and v2_split['paper_ratio_to_v1'] is None
  assert v2['paper_ratio_to_v1'] == pytest.approx(75 / 113)
  assert v2_wide['paper_ratio_to_v1'] == pytest.approx(143 / 113)
  assert v2_jax['ratio_to_v1'] == pytest.approx(2.0)  # against V1 in the same runtime
  assert v1_jax['ratio_to_v1'] == pytest.approx(1.0)
  assert latency.ordering_holds(rows) == {('litert', 'float32', 224): True,
                                          ('jax', 'float32', 224): None}
  table = latency.format_table(rows)
  assert 'litert float32 224px: MobileNetV2 1.0 < MobileNetV1 1.0 < MobileNetV2 1.4' in table
  assert 'holds' in table and 'jax float32 224px' not in table


@pytest.mark.skipif(bool(MISSING), reason=f'the export extra is not installed (missing '
                    f'{", ".join(MISSING)}): pip install -e .[export]')
def test_variants_are_the_exported_files_and_model_apply_at_batch_one():
  variants = latency.build_variants([('mobilenet_v2', 0.35)], [40], runtimes=('litert', 'jax'),
                                    splits=(1, 2), threads=1)
  assert [(v.runtime, v.precision, v.split) for v in variants] == [
      ('litert', 'float32', 1), ('litert', 'int8', 1), ('jax', 'float32', 1),
      ('litert', 'float32', 2), ('jax', 'float32', 2)]
  images = np.zeros((1, 40, 40, 3), np.float32)
  for variant in variants:
    logits = np.asarray(variant.run(images))
    assert logits.shape == (1, latency.NUM_CLASSES) and np.all(np.isfinite(logits))
    assert (variant.model_bytes is None) == (variant.runtime == 'jax')
  # A fresh process's peak resident set rises by what LiteRT allocates for one inference:
  # more than nothing, less than the whole 0.35-wide network's float32 tensors at 40 px.
  growth = latency.peak_memory_growth(variants[0].model_bytes, 'tflite', 40)
  assert 0 < growth < 64 * 2**20, growth


@pytest.mark.parametrize('flags, fragment', [
    (['--runtime', 'tensorrt'], 'tensorrt'),
    (['--threads', '0'], '--threads'),
    (['--latency-runs', '0'], '--latency-runs'),
    (['--memory'], '--memory'),
    (['--model', 'mobilenet_v1'], '--model'),
    (['--resolution', '16'], 'resolution'),
])
def test_bad_latency_flags_are_one_error_line(flags, fragment, capsys):
  assert stats_main(['--latency'] + flags) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('error: ') and fragment in line, line


def test_each_jax_variant_runs_its_own_network_with_its_own_weights():
  # MobileNetV1 (no memory split) and two MobileNetV2 widths in one call: each JAX variant keeps
  # the weights it was built with, although the loop goes on to the next network.
  variants = latency.build_variants([('mobilenet_v1', 0.25), ('mobilenet_v2', 0.35),
                                     ('mobilenet_v2', 0.5)], [32], runtimes=('jax',),
                                    precisions=('float32',))
  assert [(v.model, v.width) for v in variants] == [('mobilenet_v1', 0.25), ('mobilenet_v2', 0.35),
                                                    ('mobilenet_v2', 0.5)]
  for variant in variants:
    assert np.asarray(variant.run(np.zeros((1, 32, 32, 3), np.float32))).shape[0] == 1
