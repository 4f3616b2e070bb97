"""Panoptic FPN (Mask R-CNN + a semantic head on the FPN) on the shapes dataset with stuff.

  python -m jaxvision.train --config configs/panoptic_fpn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/panoptic_fpn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run, sized for under 45 minutes on a 2-core CPU
with the dataset generation; see docs/RESULTS.md), ``quick`` (tests: a tiny model and
dataset, a few steps).

Everything of ``configs/mask_rcnn_shapes.py`` (itself ``faster_rcnn_shapes``: the settings
are imported, not copied), plus:

* data: ``data.stuff_classes = 4``: each background divided into a few large textured
  regions, each a "stuff" class (``shapes.STUFF_NAMES[:4]``); the ``semantic`` feature is
  ``label + 1`` on things and ``C + s`` on stuff ``s``.
* model: ``model.semantic_head`` (Kirillov et al., 2019): from each of ``P2..P5``, stages of
  3x3 conv + GroupNorm + ReLU + 2x bilinear upsampling down to stride 4, summed, a 1x1
  convolution to ``S + 1`` logits (0 = any thing, ``s`` = stuff ``s``), upsampled 4x to the
  image; pixel cross-entropy weighted 0.5 (``semantic``). 64 channels instead of the paper's
  128: at 128 px the head's stride-4 map is 32 x 32, and its cost grows with the square of
  the width.
* inference: the standard merge (``jaxvision.ops.panoptic.combine_panoptic``): detections
  scoring at least 0.5 in decreasing score, each mask binarized at 0.5 and dropped if more
  than half of it is taken already, then each stuff class of the semantic argmax on the
  pixels left if it has at least ``stuff_area_threshold`` of them. COCO's 4096 pixels at
  800 x 1333 are 0.4% of the image: 64 pixels at 128 x 128.
* evaluation: ``eval/PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st`` (fractions,
  ``jaxvision.evaluation.panoptic``) beside the box and ``segm_`` numbers.
"""

from jaxvision import config_files

STUFF_CLASSES = 4


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of panoptic_fpn_shapes; use 'quick' or none.")
  config = config_files.sibling(__file__, "mask_rcnn_shapes").get_config(arg or None)
  config.data.stuff_classes = STUFF_CLASSES
  config.data.features = tuple(config.data.features) + ("semantic",)
  config.model.semantic_head = True
  config.model.num_stuff_classes = STUFF_CLASSES
  config.model.semantic_channels = 64
  config.model.semantic_norm = "group"
  config.model.semantic_upsampler = "bilinear"
  config.model.semantic_loss_weight = 0.5
  config.model.panoptic_score_threshold = 0.5
  config.model.panoptic_overlap_threshold = 0.5
  config.model.panoptic_mask_threshold = 0.5
  config.model.stuff_area_threshold = 64
  if arg == "quick":
    config.model.semantic_channels = 8
    config.model.stuff_area_threshold = 16  # 64 x 64 images
  return config
