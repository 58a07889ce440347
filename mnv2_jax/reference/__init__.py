"""Published numbers the repository is checked against (sources: README.md in this folder).

  from mnv2_jax import reference
  reference.checkpoints()   # the 22 released MobileNetV2 checkpoints (official TF-Slim table)
  reference.mobilenet_v1()  # the MobileNetV1 paper's width and resolution tables
  reference.paper_table(4)  # the MobileNetV2 paper's Table 4 (also 5, 6 and 7)

Each returns a list of rows: dicts keyed by the file's columns, numbers parsed,
blank cells None. The files are package data, installed with the package. One
that is missing, unreadable or not in its expected columns raises
ReferenceDataError naming its path: a figure drawn or a test run without its
reference would silently be a different result.
"""

import csv
import pathlib
from typing import Any, Callable

DATA_DIR = pathlib.Path(__file__).resolve().parent

Row = dict[str, Any]

# The columns each file must have, in order.
FILE_COLUMNS = {
    'mobilenet_v2_checkpoints.csv': ('multiplier', 'resolution', 'macs_millions',
                                     'params_millions', 'top1', 'top5'),
    'mobilenet_v1.csv': ('multiplier', 'resolution', 'macs_millions', 'params_millions', 'top1'),
    'paper_table4.csv': ('network', 'top1', 'params_millions', 'madds_millions', 'pixel1_ms'),
    'paper_tables_5_6_7.csv': ('table', 'network', 'head', 'output_stride', 'aspp',
                               'multi_scale_flip', 'metric', 'metric_value', 'params_millions',
                               'madds_billions', 'pixel1_ms', 'notes'),
}
SECTION_6_TABLES = (5, 6, 7)


class ReferenceDataError(ValueError):
  """A reference file is missing, unreadable or not in its expected form."""


def _yes_or_no(text: str) -> bool:
  if text not in ('yes', 'no'):
    raise ValueError(f'expected yes or no, got {text!r}')
  return text == 'yes'


# How a column's cells are parsed, the same in every file; other columns stay text.
COLUMN_PARSERS: dict[str, Callable[[str], Any]] = {
    'multiplier': float, 'resolution': int, 'macs_millions': int, 'params_millions': float,
    'top1': float, 'top5': float, 'madds_millions': int, 'madds_billions': float,
    'pixel1_ms': int, 'table': int, 'output_stride': int, 'aspp': _yes_or_no,
    'multi_scale_flip': _yes_or_no, 'metric_value': float,
}


def read_table(file_name: str, directory: pathlib.Path = DATA_DIR) -> list[Row]:
  """The rows of one of FILE_COLUMNS' files in `directory`, parsed."""
  columns = FILE_COLUMNS[file_name]
  path = pathlib.Path(directory) / file_name
  try:
    with open(path, newline='', encoding='utf-8') as f:
      reader = csv.reader(f)
      header = tuple(next(reader, ()))
      if header != columns:
        raise ReferenceDataError(f'reference table {path}: columns {list(header)}, '
                                 f'expected {list(columns)}')
      rows = [_parse_row(cells, columns, path, reader.line_num) for cells in reader if cells]
  except OSError as error:
    raise ReferenceDataError(f'reference table {path}: {error.strerror or error}') from error
  except (csv.Error, UnicodeDecodeError) as error:
    raise ReferenceDataError(f'reference table {path}: {error}') from error
  if not rows:
    raise ReferenceDataError(f'reference table {path} has no rows')
  return rows


def _parse_row(cells: list[str], columns: tuple[str, ...], path: pathlib.Path,
               line: int) -> Row:
  if len(cells) != len(columns):
    raise ReferenceDataError(f'reference table {path}, line {line}: {len(cells)} cells, '
                             f'expected {len(columns)}')
  row = {}
  for column, text in zip(columns, cells):
    parse = COLUMN_PARSERS.get(column, str)
    try:
      row[column] = parse(text) if text else None
    except ValueError as error:
      raise ReferenceDataError(
          f'reference table {path}, line {line}, column {column}: {error}') from error
  return row


def checkpoints(directory: pathlib.Path = DATA_DIR) -> list[Row]:
  """The 22 released float MobileNetV2 checkpoints, one row each.

  Columns: multiplier, resolution, macs_millions, params_millions (1001 classes,
  no BN parameters), top1 and top5 (ImageNet val, %).
  """
  return read_table('mobilenet_v2_checkpoints.csv', directory)


def mobilenet_v1(directory: pathlib.Path = DATA_DIR) -> list[Row]:
  """The MobileNetV1 paper's Tables 6 (widths at 224) and 7 (resolutions at width 1.0).

  Columns: multiplier, resolution, macs_millions, params_millions, top1.
  """
  return read_table('mobilenet_v1.csv', directory)


def paper_table(number: int, directory: pathlib.Path = DATA_DIR) -> list[Row]:
  """The MobileNetV2 paper's Table 4 (ImageNet) or Table 5, 6 or 7 (Section 6)."""
  if number == 4:
    return read_table('paper_table4.csv', directory)
  if number not in SECTION_6_TABLES:
    raise ValueError(f"the package holds the paper's Tables 4, 5, 6 and 7, not Table {number}")
  file_name = 'paper_tables_5_6_7.csv'
  rows = [row for row in read_table(file_name, directory) if row['table'] == number]
  if not rows:
    raise ReferenceDataError(f'reference table {pathlib.Path(directory) / file_name} '
                             f'has no rows for Table {number}')
  return rows
