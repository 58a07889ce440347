r"""MobileNetV2 + SSDLite on COCO 2017 (paper Section 6.2, Table 6), for GPU/TPU machines.

  python -m mnv2_jax.main --config configs/ssdlite_coco.py --workdir workdirs/ssdlite_coco

Reads `coco/2017` through TFDS (prepare it first: `tfds build coco/2017`, or
point data.data_dir at a prepared copy; nothing is downloaded at run time) and
evaluates COCO box mAP with pycocotools on its 5,000 validation images.

The recipe is the OD API's `ssdlite_mobilenet_v2_coco.config`, which the paper
trained: width 1.0, BN decay 0.9997, L2 4e-5, RMSProp (decay 0.9, momentum
0.9, eps 1.0 inside the root) at 0.004 for batch 24, decayed by 0.95 every
800,720 steps (here 162.5 epochs of COCO's 118,287 training images, the same
staircase), sigmoid classification with 3:1 hard negatives,
NMS at 0.6, horizontal flips and SSD's random crop (`detection.random_crop`,
the OD API's `ssd_random_crop` defaults). What differs, and why:
  - 320x320 input, as the paper's Table 6 (the released config resizes to 300);
  - the backbone starts from ImageNet weights only when given them, as
    `--config.init_from=DIR` with a MobileNetV2 classifier's pretrained
    directory of the same width (`python -m mnv2_jax.convert ... --out DIR`;
    the paper started from ImageNet weights); without it, from scratch;
  - the released config sets no step limit; train.num_epochs = 100 (about
    490k steps of 24) is a choice, not the paper's;
  - an EMA of the weights is evaluated next to the raw weights (0.9999).

Arguments (`configs/ssdlite_coco.py:width=0.5,res=256`): width, res, batch.
"""
import configs
from configs import recipe
from mnv2_jax import data
from mnv2_jax.tasks import detection

COCO_TRAIN_IMAGES = 118_287
OD_API_DECAY_STEPS, OD_API_BATCH = 800_720, 24


def get_config(arg=None):
  arg = configs.parse_arg(arg, width=1.0, res=320, batch=24)
  config = recipe.experiment(
      seed=0,
      task='detection',
      model_section=recipe.detection_model(name='ssdlite_mobilenet_v2',
                                           width_multiplier=arg.width),
      data_section=data.get_data_config(
          dataset='coco/2017', train_split='train', eval_split='validation',
          resolution=arg.res, batch_size=arg.batch, eval_batch_size=arg.batch,
          shuffle_buffer_size=2_048),
      optimizer_section=recipe.optimizer(
          base_learning_rate=0.004, base_batch_size=OD_API_BATCH,
          decay_rate=0.95,
          decay_epochs=OD_API_DECAY_STEPS * OD_API_BATCH / COCO_TRAIN_IMAGES,
          initial_scale=1.0, epsilon=1.0),
      train_section=recipe.train(
          num_epochs=100, eval_every_steps=50_000, checkpoint_every_steps=10_000,
          log_every_steps=500))
  # COCO images hold up to 93 annotated objects.
  config.detection = detection.detection_section(max_boxes=100)
  return config
