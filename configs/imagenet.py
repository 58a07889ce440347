r"""MobileNetV2 on ImageNet with the paper's recipe, at any width and resolution.

  python -m mnv2_jax.main --config configs/imagenet.py:width=1.0,res=224 \
      --workdir workdirs/imagenet_1.0_224

Expects imagenet2012 prepared by TFDS (manual download into
`config.data.data_dir` or ~/tensorflow_datasets/downloads/manual). With the
full schedule it should reach the released checkpoints' top-1
(mnv2_jax/reference/mobilenet_v2_checkpoints.csv): 71.8% for 1.0@224, 75.0% for
1.4@224, 60.3% for 0.35@224, 45.5% for 0.35@96 (EMA weights; the paper's
Table 4 rounds 1.0@224 to 72.0%).

Arguments (`configs/imagenet.py:width=1.4,res=224,replicas=8`): width (width
multiplier), res (input resolution), replicas (number of synchronous clones of
batch 96: global batch is 96 * replicas and the learning rate scales with it),
t (expansion ratio).

The recipe is `configs/recipe.py` unchanged (where each number comes from is
written there): ~420 epochs, as the released checkpoints (700K steps with 8
clones of 96 images).
"""

import configs
from configs import recipe
from mnv2_jax import data


def get_config(arg=None):
  arg = configs.parse_arg(arg, width=1.0, res=224, replicas=8, t=6.0)
  return recipe.experiment(
      seed=0,
      model_section=recipe.model(width_multiplier=arg.width, expansion_ratio=arg.t),
      data_section=data.get_data_config(
          dataset='imagenet2012', train_split='train', eval_split='validation',
          resolution=arg.res, batch_size=96 * arg.replicas, color_jitter=True),
      optimizer_section=recipe.optimizer(),
      train_section=recipe.train(num_epochs=420))


# -----------------------------------------------------------------------------
# Sweeps at the paper's scale (generators in configs/sweeps.py), e.g.
#   python -m launch.sweep --config configs/imagenet.py --sweep fig5 \
#       --workroot gs://BUCKET/mnv2_sweeps --backend tpu --tpu-name NAME --zone ZONE
# The paper names no model for Figure 6 and the expansion study; width 1.0 at
# 224 (its main model) is used.

from configs import sweeps  # noqa: E402  (sweep section kept below get_config)


def sweep_fig5(add):
  sweeps.fig5(add, resolutions=sweeps.PAPER_RESOLUTIONS)


def sweep_expansion(add):
  sweeps.expansion(add, width_multiplier=1.0, resolution=224)


def sweep_fig6a(add):
  sweeps.fig6a(add, width_multiplier=1.0, resolution=224)


def sweep_fig6b(add):
  sweeps.fig6b(add, width_multiplier=1.0, resolution=224)


SWEEPS = {'fig5': sweep_fig5, 'expansion': sweep_expansion,
          'fig6a': sweep_fig6a, 'fig6b': sweep_fig6b}
