"""The paper's sweeps as generators, shared by every config file's SWEEPS.

A sweep is a plain function `sweep(add)` (big_vision style) that calls
`add(name, overrides)` once per run: `name` is short and readable
('v2_w0.35_r96'; the launcher prefixes the sweep name: 'fig5/v2_w0.35_r96') and
`overrides` maps dotted config fields to values
({'model.width_multiplier': 0.35, 'data.resolution': 96}).

The generators below take the grid of one scale, so that `configs/imagenet.py`
(the paper's resolutions) and `configs/default.py` (resolutions scaled down for
a CPU) define the same experiments:

  fig5       Figure 5: width multipliers x resolutions, 1.4 at the largest
             resolution, and the MobileNetV1 baseline points.
  expansion  expansion ratio t = 1..10 at one width and resolution (Section
             6.1: "5 to 10 give nearly identical curves").
  fig6a      Figure 6a: linear vs ReLU6 bottleneck.
  fig6b      Figure 6b: shortcut between bottlenecks / expansions / none.
"""

from typing import Any, Callable, Mapping, Sequence

Overrides = Mapping[str, Any]
Add = Callable[[str, Overrides], None]

# The paper's Figure 5 grid.
PAPER_WIDTHS = (0.35, 0.5, 0.75, 1.0)
PAPER_RESOLUTIONS = (96, 128, 160, 192, 224)
PAPER_LARGEST_WIDTH = 1.4  # only at the largest resolution
# MobileNetV1 (Howard et al. 2017, Tables 6 and 7; mnv2_jax/reference/mobilenet_v1.csv):
# widths at the largest resolution, and width 1.0 at the four largest resolutions.
V1_WIDTHS = (1.0, 0.75, 0.5, 0.25)
V1_NUM_RESOLUTIONS = 4
# The official V1 keeps 99.9% of the activations before the logits.
V1_DROPOUT_RATE = 0.001

EXPANSION_RATIOS = tuple(range(1, 11))
BOTTLENECK_ACTIVATIONS = {'linear_bottleneck': 'linear', 'relu6_bottleneck': 'relu6'}
SHORTCUTS = {'shortcut_bottleneck': 'bottleneck', 'shortcut_expansion': 'expansion',
             'no_shortcut': 'none'}


def format_width(width_multiplier: float) -> str:
  """0.35 -> '0.35', 1 -> '1.0': at least one decimal, no trailing zeros beyond it."""
  text = f'{width_multiplier:.4f}'.rstrip('0')
  return text + '0' if text.endswith('.') else text


def v2_name(width_multiplier: float, resolution: int) -> str:
  return f'v2_w{format_width(width_multiplier)}_r{resolution}'


def v1_name(width_multiplier: float, resolution: int) -> str:
  return f'v1_w{format_width(width_multiplier)}_r{resolution}'


def _with(common: Overrides, **fields: Any) -> dict[str, Any]:
  # Keyword names use '__' for '.', so that the generators read like the config.
  return {**common, **{key.replace('__', '.'): value for key, value in fields.items()}}


def fig5(add: Add, *, resolutions: Sequence[int] = PAPER_RESOLUTIONS,
         widths: Sequence[float] = PAPER_WIDTHS,
         largest_width: float = PAPER_LARGEST_WIDTH,
         v1_widths: Sequence[float] = V1_WIDTHS,
         v1_num_resolutions: int = V1_NUM_RESOLUTIONS,
         common: Overrides = None) -> None:
  """Figure 5: MobileNetV2 over widths x resolutions, plus MobileNetV1 points.

  `resolutions` is this scale's version of 96..224 (ascending); the V1 points
  use its largest resolution for the width series and its
  `v1_num_resolutions` largest for the resolution series of width 1.0, as the
  V1 paper's 224/192/160/128 (1: the width series only).
  """
  common = dict(common or {})
  resolutions = sorted(resolutions)
  top = resolutions[-1]
  for width in widths:
    for resolution in resolutions:
      add(v2_name(width, resolution),
          _with(common, model__name='mobilenet_v2', model__width_multiplier=width,
                data__resolution=resolution))
  add(v2_name(largest_width, top),
      _with(common, model__name='mobilenet_v2', model__width_multiplier=largest_width,
            data__resolution=top))
  v1_points = [(width, top) for width in v1_widths]
  v1_points += [(1.0, resolution) for resolution in resolutions[-v1_num_resolutions:-1][::-1]]
  for width, resolution in v1_points:
    add(v1_name(width, resolution),
        _with(common, model__name='mobilenet_v1', model__width_multiplier=width,
              model__dropout_rate=V1_DROPOUT_RATE, data__resolution=resolution))


def expansion(add: Add, *, width_multiplier: float, resolution: int,
              ratios: Sequence[int] = EXPANSION_RATIOS, common: Overrides = None) -> None:
  """Expansion ratio t for every block but the first, at one width and resolution."""
  common = dict(common or {})
  for ratio in ratios:
    add(f't{ratio}', _with(common, model__width_multiplier=width_multiplier,
                           data__resolution=resolution, model__expansion_ratio=ratio))


def fig6a(add: Add, *, width_multiplier: float, resolution: int,
          common: Overrides = None) -> None:
  """Figure 6a: the linear bottleneck against ReLU6 after the projection."""
  common = dict(common or {})
  for name, activation in BOTTLENECK_ACTIVATIONS.items():
    add(name, _with(common, model__width_multiplier=width_multiplier,
                    data__resolution=resolution, model__bottleneck_activation=activation,
                    model__shortcut='bottleneck'))


def fig6b(add: Add, *, width_multiplier: float, resolution: int,
          common: Overrides = None) -> None:
  """Figure 6b: residual connections between bottlenecks, between expansions, or none."""
  common = dict(common or {})
  for name, shortcut in SHORTCUTS.items():
    add(name, _with(common, model__width_multiplier=width_multiplier,
                    data__resolution=resolution, model__bottleneck_activation='linear',
                    model__shortcut=shortcut))
