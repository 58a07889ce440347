"""Memory-efficient inference splits each block only as far as the T-way peak needs."""

import jax
import jax.numpy as jnp
import pytest

from mnv2_jax.models import MobileNetV2, architecture, memory_plan

BLOCKS_1_TO_16 = range(1, 17)


def all_blocks_in(groups: int) -> dict[int, int]:
  return {index: groups for index in BLOCKS_1_TO_16}


def peak(spec, resolution, split, **options) -> int:
  return memory_plan.analytic_peak(memory_plan.operations(spec, resolution, split,
                                                          **options)).total


@pytest.mark.parametrize('width', [0.35, 1.0, 1.4])
@pytest.mark.parametrize('resolution', [96, 160, 224])
@pytest.mark.parametrize('split', [2, 3, 4, 8])
def test_a_block_runs_whole_exactly_when_it_fits_the_peak_of_splitting_every_block(
    width, resolution, split):
  spec = architecture.mobilenet_v2_spec(width)
  plan = memory_plan.group_plan(spec, resolution, split)
  every_block = peak(spec, resolution, split, block_groups=all_blocks_in(split))
  assert peak(spec, resolution, split) == every_block  # the plan keeps the T-way peak
  whole = {op.name: op.total for op in
           memory_plan.operations(spec, resolution, split, block_groups=all_blocks_in(1))}
  assert plan == {index: 1 if whole[f'block_{index}'] <= every_block else split
                  for index in BLOCKS_1_TO_16}
  assert 1 in plan.values()  # at these sizes the narrow late blocks always fit


def test_at_1_0_and_224_px_four_groups_split_only_the_blocks_at_112_and_56_px():
  plan = memory_plan.group_plan(architecture.mobilenet_v2_spec(1.0), 224, 4)
  assert plan == {1: 4, 2: 4, 3: 4, **{index: 1 for index in range(4, 17)}}


def test_with_the_expansion_shortcut_every_block_keeps_t_groups():
  spec = architecture.mobilenet_v2_spec(1.0)
  assert memory_plan.group_plan(spec, 224, 4, shortcut='expansion') == all_blocks_in(4)
  assert memory_plan.group_plan(spec, 224, 1) == all_blocks_in(1)


@pytest.mark.parametrize('shortcut', ['bottleneck', 'expansion'])
def test_the_network_runs_one_group_loop_for_the_stem_and_each_block_split_in_several(shortcut):
  model = MobileNetV2(width_multiplier=0.35, num_classes=10, memory_split=4, shortcut=shortcut)
  images = jnp.zeros((1, 96, 96, 3))
  variables = jax.eval_shape(model.clone(memory_split=1).init, jax.random.PRNGKey(0), images)
  loops = jax.jit(model.apply).lower(variables, images).as_text().count('stablehlo.while')
  plan = memory_plan.group_plan(architecture.mobilenet_v2_spec(0.35), 96, 4, shortcut)
  assert loops == 1 + sum(groups > 1 for groups in plan.values())
  assert (loops < 17) == (shortcut == 'bottleneck')
