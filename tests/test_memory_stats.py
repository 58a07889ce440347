"""Peak-memory accounting (paper eq. 2, Table 3) and XLA's compiled memory of split inference."""

import json

import pytest

from mnv2_jax.stats import __main__ as stats_cli
from mnv2_jax.stats import memory


def test_table3_max_is_400_kb_for_mobilenet_v2_and_1600_kb_for_mobilenet_v1():
  v2 = max(kb for _, kb in memory.table3('mobilenet_v2').values())
  v1 = max(kb for _, kb in memory.table3('mobilenet_v1').values())
  assert v2 == pytest.approx(401.408)  # 112*112*16*2 bytes, printed as 400.
  assert v1 == pytest.approx(1605.632)  # 112*112*64*2 bytes, printed as 1600.
  assert v2 == pytest.approx(memory.PAPER_TABLE3_MAX_KB['mobilenet_v2'], rel=0.01)
  assert v1 == pytest.approx(memory.PAPER_TABLE3_MAX_KB['mobilenet_v1'], rel=0.01)


def test_table3_mobilenet_v1_rows_match_the_paper_with_100_kb_at_7x7():
  table = memory.table3('mobilenet_v1')
  assert sorted(table, reverse=True) == list(memory.TABLE3_RESOLUTIONS)
  for size, (paper_channels, paper_kb) in memory.PAPER_TABLE3['mobilenet_v1'].items():
    channels, kb = table[size]
    assert channels == paper_channels
    # The paper prints 199 at 7x7; 7*7*1024*2 bytes is 100 KB.
    expected_kb = 100 if size == 7 else paper_kb
    assert kb == pytest.approx(expected_kb, rel=0.03, abs=0.1), size


def test_table3_mobilenet_v2_rows_count_only_bottleneck_tensors():
  table = memory.table3('mobilenet_v2')
  assert sorted(table, reverse=True) == list(memory.TABLE3_RESOLUTIONS)
  # The stem's 32 channels are the first block's inner tensor: never materialised.
  assert table[112] == (16, pytest.approx(401.408))
  assert table[7] == (320, pytest.approx(31.36))
  assert table[1] == (1280, pytest.approx(2.56))
  for size in (112, 7, 1):
    assert table[size][0] == memory.PAPER_TABLE3['mobilenet_v2'][size][0]
  # The paper lists 32, 64 and 160 here: the output widths of the stride-2
  # blocks leaving these resolutions. The tensors that exist are narrower.
  assert {size: table[size][0] for size in (56, 28, 14)} == {56: 24, 28: 32, 14: 96}


def test_analytic_peak_of_1_0_at_224_is_the_first_expansion_and_falls_with_the_split():
  peaks = {split: memory.analytic_peak(memory.mobilenet_v2_operations(1.0, 224, split))
           for split in (1, 2, 4, 8)}
  # Block 1: input 112x112x16 + output 56x56x24 + the 96-channel inner tensors.
  assert peaks[1].name == 'block_1'
  assert peaks[1].total == 112 * 112 * 16 + 56 * 56 * 24 + 96 * (112 * 112 + 56 * 56)
  assert peaks[4].total == 112 * 112 * 16 + 56 * 56 * 24 + 24 * (112 * 112 + 56 * 56)
  assert peaks[1].total > peaks[2].total > peaks[4].total > peaks[8].total
  assert memory.analytic_peak_bytes(1.0, 224, 1, bytes_per_element=2) == 2 * peaks[1].total


@pytest.mark.parametrize('width', [0.35, 1.0, 1.4])
@pytest.mark.parametrize('shortcut', ['bottleneck', 'expansion'])
def test_analytic_split_peak_never_grows_with_more_groups(width, shortcut):
  peaks = [memory.analytic_peak_bytes(width, 160, split, shortcut=shortcut)
           for split in range(1, 17)]
  assert all(later <= earlier for earlier, later in zip(peaks, peaks[1:]))
  assert peaks[3] < peaks[0] / 2


def test_expansion_shortcut_keeps_the_source_expansion_live_only_without_split():
  normal = {op.name: op for op in memory.mobilenet_v2_operations(1.0, 224, 1)}
  shortcut = {op.name: op for op in memory.mobilenet_v2_operations(1.0, 224, 1,
                                                                    shortcut='expansion')}
  # Block 5 receives block 4's 28x28x192 expanded tensor.
  assert shortcut['block_5'].inputs - normal['block_5'].inputs == 28 * 28 * 192
  split = {op.name: op for op in memory.mobilenet_v2_operations(1.0, 224, 4,
                                                                shortcut='expansion')}
  assert split['block_5'].inputs == 2 * 28 * 28 * 32  # Its input and block 4's input.


def test_compiled_temp_memory_falls_with_the_split():
  """XLA's own buffer assignment, not the model: 1.0@96 at batch 1, T=4 vs the normal network."""
  rows = memory.memory_rows(1.0, 96, splits=(1, 4), latency_runs=0)
  normal, split = rows
  assert normal['split'] == 1 and split['split'] == 4
  assert split['compiled_temp_bytes'] < normal['compiled_temp_bytes'] / 2, rows
  assert split['analytic_peak_bytes'] < normal['analytic_peak_bytes'] / 2


def test_memory_command_prints_json_rows(capsys):
  assert stats_cli.main(['--memory', '--width', '0.35', '--resolution', '32', '--split', '3',
                         '--latency-runs', '1', '--json']) == 0
  rows = json.loads(capsys.readouterr().out)
  assert [row['split'] for row in rows] == [3]
  for row in rows:
    assert row['dtype'] == 'float32'
    assert row['analytic_peak_bytes'] > 0 and row['compiled_temp_bytes'] > 0
    assert row['latency_ms'] > 0


@pytest.mark.parametrize('flags, message', [
    (['--model', 'mobilenet_v1'], 'mobilenet_v2 only'),
    (['--split', '0'], 'memory_split'),
    (['--dtype', 'float16'], 'invalid choice'),
])
def test_memory_command_rejects_bad_flags(capsys, flags, message):
  assert stats_cli.main(['--memory', '--latency-runs', '0'] + flags) == 2
  [line] = capsys.readouterr().err.splitlines()
  assert line.startswith('error: ') and message in line
