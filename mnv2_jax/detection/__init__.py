"""Detection machinery of SSD/SSDLite (paper Section 6.2): anchors, box coding, matching, loss, NMS.

Everything here has no parameters, so it lives beside the networks rather than
in `mnv2_jax.models`: the Flax module (`mnv2_jax.models.ssdlite`) only maps
images to per-anchor box encodings and class logits, and the training loop,
the evaluation and a `detect` command all reuse these functions on its outputs.

Conventions (those of the TF Object Detection API, whose `ssdlite_mobilenet_v2`
configuration the paper trained):
  boxes     [ymin, xmin, ymax, xmax], normalised to [0, 1] by the image height
            and width;
  labels    contiguous class ids 0 .. num_classes - 1; the network predicts
            num_classes + 1 class slots, slot 0 being the background;
  padding   ground truth arrives as fixed-size arrays with a validity mask, so
            every function here is jit-able with static shapes.

  anchors.py      the SSD anchor grid (6 layers, scales 0.2-0.95, 3 anchors on the lowest)
  boxes.py        IoU and the centre-size box coder with scales (10, 10, 5, 5)
  targets.py      the IoU matcher (0.5, every box forced onto its best anchor) and targets
  loss.py         sigmoid classification + smooth-L1 localisation, hard negatives 3:1
  postprocess.py  decoding and per-class greedy NMS (IoU 0.6, 100 detections)
"""
