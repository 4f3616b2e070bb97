"""Faster R-CNN R50-FPN, the standard 1x recipe, on TFDS ``coco/2017``, for a GPU/TPU pod.

  python -m jaxvision.train --config configs/faster_rcnn_coco.py --workdir DIR

The recipe of Detectron / torchvision's ``fasterrcnn_resnet50_fpn``: 90k iterations at 16
images per step (2 per device on 8 accelerators), SGD with momentum 0.9, learning rate 0.02
with a 1000-step linear warmup and x0.1 steps at 60k and 80k, weight decay 1e-4, frozen
batch norm, stem and first stage frozen, horizontal flips; RPN 2000/1000 proposals
(train/test), 512 RoIs per image (25% positive), a 1024-wide two-FC box head.

Static shapes: instead of "shorter side 800, longer side at most 1333", every image's
longer side is scaled to 1024 px and the image zero-padded to 1024 x 1024 (a typical COCO
image becomes 1024 x 768, shorter side close to 800). Set ``init_from`` to a workdir whose
backbone is an ImageNet-trained ResNet-50 (the recipe assumes one); the dataset must be
prepared as ``array_record`` (see jaxvision/data/datasets.py); nothing is downloaded.
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config

TOTAL_STEPS = 90_000


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

  config.data = shapes_data_config(name="coco/2017", image_size=1024, max_boxes=100,
                                   features=("image", "boxes", "labels", "area", "is_crowd"))

  config.model = ml_collections.ConfigDict(dict(
      num_classes=80,
      backbone="resnet50",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="imagenet", norm="frozen")),
      fpn_channels=256,
      proposal_source="rpn",
      anchor_sizes=(32.0, 64.0, 128.0, 256.0, 512.0),
      aspect_ratios=(0.5, 1.0, 2.0),
      rpn_samples_per_image=256, rpn_positive_fraction=0.5,
      rpn_objectness_target="binary",  # "binary" (Faster R-CNN) | "iou" (localization quality)
      rpn_pre_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
      rpn_post_nms_top_n_train=2000, rpn_post_nms_top_n_test=1000,
      roi_samples_per_image=512, roi_positive_fraction=0.25,
      box_head_hidden=1024,
      max_detections=100, detection_candidates=2000,
      dtype="float32"))  # compute dtype: "float32" | "bfloat16" (params stay float32)
  config.data_proposals = ml_collections.ConfigDict(dict(
      num_proposals=2000, jittered_per_object=10, jitter=0.25))

  config.optimizer = default_optimizer_config(
      name="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=1000,
      schedule="step", decay_boundaries=(60_000 / TOTAL_STEPS, 80_000 / TOTAL_STEPS),
      decay_factor=0.1, freeze_regex=r"^backbone/(stem_|stage1_)")

  if arg:
    raise ValueError(f"faster_rcnn_coco has no variant {arg!r}; the tests build it as is.")
  return config
