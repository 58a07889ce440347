r"""Mobile DeepLabv3 on PASCAL VOC 2012 + SBD (paper Section 6.3, Table 7), for GPU/TPU machines.

  python -m mnv2_jax.main --config configs/deeplab_voc.py --workdir workdirs/deeplab_voc \
      --config.init_from=pretrained/keras_1.0_224

Reads `voc_segmentation/2012_sbd` (mnv2_jax/data/voc_segmentation.py): extract
the VOC 2012 devkit and SBD into `<data_dir>/downloads/manual/` (layout in
docs/segmentation.md); the first run writes the TFRecords. Trains on DeepLab's
train_aug (10,582 images) and evaluates single-scale mIOU on VOC 2012 val
(1,449 images).

The backbone starts from ImageNet weights with `--config.init_from=DIR`, DIR
a MobileNetV2 1.0 classifier's pretrained directory, e.g.
  python -m mnv2_jax.convert --from keras --width 1.0 --resolution 224 \
      --weights imagenet --out pretrained/keras_1.0_224
(docs/pretrained.md); the loop loads its layers into params['backbone'] and
the head starts fresh. Without it the network trains from scratch, which the
paper did not do.

The model is Table 7's MobileNetV2* DeepLabv3 (`segmentation.model_section()`'s
defaults): width 1.0, the head on the last bottleneck block's 320 channels,
output stride 16 in training, ASPP (rates 6/12/18, regular 3x3 convs) with
image pooling, dropout 0.1, BN decay 0.9997; 21 classes, 255 ignored.

DeepLab's VOC recipe (the DeepLabv3 paper, Section 4, and DeepLab's train.py
flags) and what this repository's optimiser makes of it:
  - 513x513 crops, random scale 0.5-2.0 by 0.25, left-right flips, the
    ignore label 255: as DeepLab (`segmentation_section()`);
  - batch 16 for 30,000 iterations: as DeepLab (about 45 epochs of
    train_aug); BN trained with the statistics of the whole batch of 16
    (train.sync_batch_norm), as DeepLab fine-tunes BN at that batch;
  - momentum SGD, momentum 0.9, learning rate 0.007 per 16 images, as TF's
    MomentumOptimizer (optimizer.name 'momentum');
  - L2 weight decay 4e-5 on the convolution kernels, not on depthwise
    kernels, BN parameters or biases: as DeepLab's MobileNetV2 scope;
  - poly decay with power 0.9 to 0 over the 30,000 steps, no warm-up
    (optimizer.schedule 'poly');
  - no label smoothing (DeepLab has none). The optimiser also keeps an EMA of
    the weights (0.9999), which DeepLab does not: `eval_miou` (the raw
    weights) is DeepLab's measurement, `eval_ema_miou` an extra one;
  - evaluation scales each image's longer side (at most 500 px) to 513 and
    pads the rest, where DeepLab pads without scaling. The periodic
    evaluation is single-scale at the training stride (16); Table 7's OS 8 and
    MF rows evaluate the trained run again:
      python -m mnv2_jax.main --config configs/deeplab_voc.py --workdir W \
          --config.eval_only=True --config.segmentation.eval_output_stride=8 \
          --config.segmentation.eval_multi_scale_flip=True
DeepLab's released MobileNetV2 VOC checkpoint was also pretrained on COCO;
this config starts from ImageNet at most.

Arguments (`configs/deeplab_voc.py:res=321,batch=8`): width (width
multiplier), res (crop size; DeepLab's sides are k x 16 + 1), batch (global
batch; the rate scales with it), steps (training steps), sbd (false: VOC's
1,464 training images only, `voc_segmentation/2012`).
"""
import configs
from configs import recipe
from mnv2_jax import data
from mnv2_jax.data import voc_segmentation
from mnv2_jax.tasks import segmentation

DEEPLAB_LEARNING_RATE, DEEPLAB_BATCH = 0.007, 16


def get_config(arg=None):
  arg = configs.parse_arg(arg, width=1.0, res=513, batch=DEEPLAB_BATCH, steps=30_000,
                          sbd=True)
  config = recipe.experiment(
      seed=0,
      task='segmentation',
      model_section=segmentation.model_section(
          width_multiplier=arg.width, num_classes=voc_segmentation.NUM_CLASSES),
      data_section=data.get_data_config(
          dataset='voc_segmentation/2012_sbd' if arg.sbd else 'voc_segmentation/2012',
          train_split='train', eval_split='validation',
          resolution=arg.res, batch_size=arg.batch, eval_batch_size=arg.batch,
          shuffle_buffer_size=2_048),
      optimizer_section=recipe.optimizer(
          name='momentum', base_learning_rate=DEEPLAB_LEARNING_RATE,
          base_batch_size=DEEPLAB_BATCH, momentum=0.9, schedule='poly', poly_power=0.9,
          warmup_epochs=0.0, weight_decay=4e-5, label_smoothing=0.0, ema_decay=0.9999),
      train_section=recipe.train(
          num_epochs=1, num_steps=arg.steps,  # num_steps overrides num_epochs
          eval_every_steps=2_000, checkpoint_every_steps=2_000, log_every_steps=100,
          sync_batch_norm=True))
  config.segmentation = segmentation.segmentation_section()
  return config
