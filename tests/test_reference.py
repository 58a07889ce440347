"""The published reference tables ship inside the package and fail loudly when unreadable."""

import fnmatch
import pathlib
import re
import shutil
import tomllib

import pytest

from experiments import figures
from mnv2_jax import reference

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PAPER_FIGURE5_GRID = {(width, resolution) for width in (0.35, 0.5, 0.75, 1.0)
                      for resolution in (96, 128, 160, 192, 224)} | {(1.4, 224)}


def test_the_package_holds_the_22_released_checkpoints():
  rows = reference.checkpoints()
  assert len(rows) == 22
  # Figure 5 plots 21 of them; 1.3@224 was released but is not in the figure.
  assert {(row['multiplier'], row['resolution']) for row in rows} == PAPER_FIGURE5_GRID | {
      (1.3, 224)}
  [one] = [row for row in rows if row['multiplier'] == 1.0 and row['resolution'] == 224]
  assert one == {'multiplier': 1.0, 'resolution': 224, 'macs_millions': 300,
                 'params_millions': 3.47, 'top1': 71.8, 'top5': 91.0}


def test_mobilenet_v1_has_the_v1_papers_width_and_resolution_series():
  rows = reference.mobilenet_v1()
  assert sorted((row['multiplier'], row['resolution']) for row in rows) == [
      (0.25, 224), (0.5, 224), (0.75, 224), (1.0, 128), (1.0, 160), (1.0, 192), (1.0, 224)]
  [one] = [row for row in rows if row['multiplier'] == 1.0 and row['resolution'] == 224]
  assert (one['macs_millions'], one['params_millions'], one['top1']) == (569, 4.2, 70.6)


def test_paper_table_4_compares_mobilenet_v2_with_its_rivals():
  rows = {row['network']: row for row in reference.paper_table(4)}
  assert rows['MobileNetV2'] == {'network': 'MobileNetV2', 'top1': 72.0, 'params_millions': 3.4,
                                 'madds_millions': 300, 'pixel1_ms': 75}
  assert rows['MobileNetV2 (1.4)']['madds_millions'] == 585
  assert rows['ShuffleNet (1.5)']['pixel1_ms'] is None  # no published latency


def test_paper_tables_5_6_7_hold_the_detection_and_segmentation_results():
  ssd, ssdlite = reference.paper_table(5)
  assert (ssd['params_millions'], ssd['madds_billions']) == (14.8, 1.25)
  assert (ssdlite['params_millions'], ssdlite['madds_billions']) == (2.1, 0.35)
  detection = {row['network']: row for row in reference.paper_table(6)}
  assert detection['MobileNetV2']['metric_value'] == 22.1
  assert detection['MobileNetV2']['pixel1_ms'] == 200
  segmentation = reference.paper_table(7)
  assert len(segmentation) == 8
  [candidate] = [row for row in segmentation if row['head'] == 'DeepLabv3 without ASPP'
                 and row['output_stride'] == 16]
  assert candidate['aspp'] is False and candidate['multi_scale_flip'] is False
  assert (candidate['metric_value'], candidate['params_millions']) == (75.32, 2.11)


def test_a_table_the_package_does_not_hold_is_an_error():
  with pytest.raises(ValueError, match='Table 3'):
    reference.paper_table(3)


def test_every_reference_file_is_installed_as_package_data():
  with open(REPO_ROOT / 'pyproject.toml', 'rb') as f:
    patterns = tomllib.load(f)['tool']['setuptools']['package-data']['mnv2_jax.reference']
  for file_name in reference.FILE_COLUMNS:
    assert any(fnmatch.fnmatch(file_name, pattern) for pattern in patterns), file_name
    assert (reference.DATA_DIR / file_name).is_file()


@pytest.mark.parametrize('read, file_name', [
    (reference.checkpoints, 'mobilenet_v2_checkpoints.csv'),
    (reference.mobilenet_v1, 'mobilenet_v1.csv'),
    (lambda directory: reference.paper_table(4, directory), 'paper_table4.csv'),
    (lambda directory: reference.paper_table(7, directory), 'paper_tables_5_6_7.csv'),
])
def test_a_missing_reference_file_raises_with_its_path(tmp_path, read, file_name):
  with pytest.raises(reference.ReferenceDataError, match=re.escape(str(tmp_path / file_name))):
    read(tmp_path)


def _copy_with_replaced_text(tmp_path, file_name, old, new):
  text = (reference.DATA_DIR / file_name).read_text()
  assert old in text
  (tmp_path / file_name).write_text(text.replace(old, new, 1))


def test_a_table_with_other_columns_raises_with_its_path(tmp_path):
  _copy_with_replaced_text(tmp_path, 'mobilenet_v1.csv', 'macs_millions', 'madds')
  with pytest.raises(reference.ReferenceDataError,
                     match=re.escape(f'{tmp_path / "mobilenet_v1.csv"}: columns ')):
    reference.mobilenet_v1(tmp_path)


def test_an_unparsable_cell_raises_with_its_path_line_and_column(tmp_path):
  _copy_with_replaced_text(tmp_path, 'mobilenet_v2_checkpoints.csv', '1.3,224,509',
                           '1.3,224,about 509')
  with pytest.raises(reference.ReferenceDataError,
                     match=re.escape(f'{tmp_path / "mobilenet_v2_checkpoints.csv"}, line 3, '
                                     'column macs_millions')):
    reference.checkpoints(tmp_path)


def test_a_table_without_rows_raises_with_its_path(tmp_path):
  header = ','.join(reference.FILE_COLUMNS['mobilenet_v1.csv'])
  (tmp_path / 'mobilenet_v1.csv').write_text(header + '\n')
  with pytest.raises(reference.ReferenceDataError, match='has no rows'):
    reference.mobilenet_v1(tmp_path)


FIGURE5_ROW = {'sweep': 'fig5', 'name': 'fig5/v2_w1.0_r64', 'configuration': 'fig5/v2_w1.0_r64',
               'seed': 0, 'model': 'mobilenet_v2', 'dataset': 'procedural_shapes',
               'width_multiplier': 1.0, 'resolution': 64, 'madds': 25e6, 'final_top1': 50.0,
               'status': 'finished', 'total_steps': 100}


def test_figure5_draws_the_papers_panel_from_the_package_data():
  figure = figures.plot_figure5([FIGURE5_ROW], metric='final_top1')
  _, panel = figure.axes
  assert sum(len(line.get_xdata()) for line in panel.get_lines()
             if line.get_label().endswith(' px')) == len(PAPER_FIGURE5_GRID)


def test_figure5_refuses_to_draw_without_its_reference(tmp_path):
  shutil.copy(reference.DATA_DIR / 'mobilenet_v2_checkpoints.csv', tmp_path)
  missing = tmp_path / 'mobilenet_v1.csv'
  with pytest.raises(reference.ReferenceDataError, match=re.escape(str(missing))):
    figures.plot_figure5([FIGURE5_ROW], metric='final_top1', reference_dir=tmp_path)
  # Only an explicit request draws Figure 5 without the reference.
  figure = figures.plot_figure5([FIGURE5_ROW], metric='final_top1', reference='none',
                                reference_dir=tmp_path)
  assert len(figure.axes) == 1
