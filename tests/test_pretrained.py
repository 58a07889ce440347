"""Pretrained checkpoints round-trip exactly and refuse what they are not."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnv2_jax import pretrained
from mnv2_jax.models import MobileNetV2

MODEL_CONFIG = dict(name='mobilenet_v2', width_multiplier=0.35, expansion_ratio=6, num_classes=10,
                    resolution=96, source='test')


@pytest.fixture(scope='module')
def variables():
  # Shapes from abstract evaluation (no compile), values random so the round trip is not trivial.
  model = MobileNetV2(num_classes=10, width_multiplier=0.35)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


def test_save_then_load_returns_identical_variables_and_model_config(tmp_path, variables):
  pretrained.save_pretrained(tmp_path / 'ckpt', variables, MODEL_CONFIG)
  loaded, model_config = pretrained.load_pretrained(tmp_path / 'ckpt')
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  for expected, actual in zip(jax.tree.leaves(variables), jax.tree.leaves(loaded)):
    assert isinstance(actual, np.ndarray)
    np.testing.assert_array_equal(actual, expected)
  assert model_config == {**MODEL_CONFIG, 'input_range': '[-1, 1]', 'format_version': 1}


def test_a_missing_directory_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match='does not exist.*mnv2_jax.convert'):
    pretrained.load_pretrained(tmp_path / 'nowhere')


def test_a_training_workdir_is_not_a_pretrained_checkpoint(tmp_path):
  (tmp_path / 'checkpoints').mkdir()
  with pytest.raises(ValueError, match='is not a pretrained checkpoint.*training workdir'):
    pretrained.load_pretrained(tmp_path)


def test_a_model_config_without_a_field_is_refused_before_writing(tmp_path, variables):
  incomplete = {k: v for k, v in MODEL_CONFIG.items() if k != 'num_classes'}
  with pytest.raises(ValueError, match=r"missing \['num_classes'\]"):
    pretrained.save_pretrained(tmp_path / 'ckpt', variables, incomplete)
  assert not (tmp_path / 'ckpt').exists()


def test_variables_without_batch_stats_are_refused(tmp_path, variables):
  with pytest.raises(ValueError, match='batch_stats'):
    pretrained.save_pretrained(tmp_path / 'ckpt', {'params': variables['params']}, MODEL_CONFIG)


def test_an_existing_directory_is_not_overwritten_unless_asked(tmp_path, variables):
  pretrained.save_pretrained(tmp_path / 'ckpt', variables, MODEL_CONFIG)
  with pytest.raises(ValueError, match='not empty.*overwrite=True'):
    pretrained.save_pretrained(tmp_path / 'ckpt', variables, MODEL_CONFIG)
  pretrained.save_pretrained(tmp_path / 'ckpt', variables, {**MODEL_CONFIG, 'source': 'again'},
                             overwrite=True)
  assert pretrained.load_model_config(tmp_path / 'ckpt')['source'] == 'again'


def test_a_corrupt_model_config_names_the_bad_field(tmp_path, variables):
  pretrained.save_pretrained(tmp_path / 'ckpt', variables, MODEL_CONFIG)
  with open(os.path.join(tmp_path, 'ckpt', pretrained.MODEL_CONFIG_FILE), 'w') as f:
    json.dump({**MODEL_CONFIG, 'width_multiplier': -1}, f)
  with pytest.raises(ValueError, match='width_multiplier'):
    pretrained.load_pretrained(tmp_path / 'ckpt')


def test_check_model_matches_names_every_difference():
  pretrained.check_model_matches(MODEL_CONFIG, name='mobilenet_v2', width_multiplier=0.35,
                                 expansion_ratio=6, num_classes=10)
  with pytest.raises(ValueError, match=r'width_multiplier: checkpoint has 0\.35, config wants '
                                       r'1\.0; num_classes: checkpoint has 10, config wants 1000'):
    pretrained.check_model_matches(MODEL_CONFIG, name='mobilenet_v2', width_multiplier=1.0,
                                   expansion_ratio=6, num_classes=1000)
  # num_classes=None: a new head is fine (fine-tuning to another dataset).
  pretrained.check_model_matches(MODEL_CONFIG, name='mobilenet_v2', width_multiplier=0.35,
                                 expansion_ratio=6, num_classes=None)
