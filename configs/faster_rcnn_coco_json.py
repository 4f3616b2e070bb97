"""Faster R-CNN on your own COCO-format dataset, read directly from its json and images.

  python -m jaxvision.train --config configs/faster_rcnn_coco_json.py --workdir DIR \
      --config.data.annotations.train=ann/train.json \
      --config.data.image_root.train=images/train \
      --config.data.annotations.validation=ann/val.json \
      --config.data.image_root.validation=images/val

``data.name = "coco_json"`` (``jaxvision/data/coco_json.py``): one COCO json per split and
the folder its ``file_name`` values are relative to; nothing is converted. The classes are
the json's categories (``model.num_classes`` is left unset and taken from them) and the
evaluation (``eval/AP``, ...) is COCO AP against the validation json itself, in its
category ids and original image pixels.

Variants (``:arg``): none (the R50-FPN recipe of ``faster_rcnn_coco.py``: images
letterboxed to 1024 px, SGD 0.02 with steps at 2/3 and 8/9 of ``total_steps``; set
``total_steps`` for the dataset's size and ``init_from`` to an ImageNet-trained backbone),
``quick`` (a tiny model at 64 px for a few steps: checks that a dataset reads, trains and
evaluates end to end; the tests run it).
"""

import ml_collections
from ml_collections import config_dict

from jaxvision.data import data_config
from jaxvision.optim import default_optimizer_config

TOTAL_STEPS = 90_000
SPLITS = ("train", "validation")


def _per_split() -> ml_collections.ConfigDict:
  """split -> path, unset: given on the command line."""
  return ml_collections.ConfigDict({split: config_dict.placeholder(str) for split in SPLITS})


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "detection"
  config.seed = 0
  config.total_steps = TOTAL_STEPS
  config.batch_size = 16
  config.eval_every = 10_000
  config.checkpoint_every = 5_000
  config.log_every = 100
  config.keep_checkpoints = 3
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = data_config(name="coco_json", image_size=1024, max_boxes=100,
                            annotations=_per_split(), image_root=_per_split(),
                            features=("image", "boxes", "labels", "area", "is_crowd"))

  config.model = ml_collections.ConfigDict(dict(
      num_classes=config_dict.placeholder(int),  # None: the json's categories
      backbone="resnet50",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="imagenet", norm="frozen")),
      fpn_channels=256,
      proposal_source="rpn",
      anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0),
      aspect_ratios=(0.5, 1.0, 2.0),
      rpn_samples_per_image=256, rpn_positive_fraction=0.5,
      rpn_objectness_target="binary",
      rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
      rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
      roi_samples_per_image=512, roi_positive_fraction=0.25,
      box_head_hidden=1024,
      max_detections=100, detection_candidates=2000))
  config.data_proposals = ml_collections.ConfigDict(dict(
      num_proposals=2000, jittered_per_object=10, jitter=0.25))

  config.optimizer = default_optimizer_config(
      name="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=1000,
      schedule="step", decay_boundaries=(60_000 / TOTAL_STEPS, 80_000 / TOTAL_STEPS),
      decay_factor=0.1, freeze_regex=r"^backbone/(stem_|stage1_)")

  if arg == "quick":
    config.total_steps = 3
    config.batch_size = 8  # one image per test device
    config.eval_every = 3
    config.checkpoint_every = 3
    config.log_every = 1
    config.num_pictures = 2
    config.data.image_size = 64
    config.data.max_boxes = 8
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.norm = "batch"
    config.model.fpn_channels = 16
    config.model.anchor_sizes = (16.0, 32.0, 64.0, 128.0, 256.0)
    config.model.rpn_pre_nms_top_n_train = 100
    config.model.rpn_pre_nms_top_n_test = 100
    config.model.rpn_post_nms_top_n_train = 50
    config.model.rpn_post_nms_top_n_test = 50
    config.model.roi_samples_per_image = 32
    config.model.box_head_hidden = 32
    config.model.detection_candidates = 200
    config.data_proposals.num_proposals = 50
    config.optimizer = default_optimizer_config(name="adamw", learning_rate=3e-3,
                                                warmup_steps=0, schedule="cosine",
                                                weight_decay=1e-4, grad_clip_norm=10.0)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of faster_rcnn_coco_json; use 'quick' or none.")
  return config
