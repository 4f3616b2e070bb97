"""Faster R-CNN (ResNet + FPN + RPN + RoI box head) on the embedded shapes dataset.

  python -m jaxvision.train --config configs/faster_rcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/faster_rcnn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run: under 30 minutes on a 2-core CPU, see
docs/RESULTS.md), ``quick`` (tests: a tiny model and dataset, a few steps), ``fast_rcnn``
(the same detector with proposals supplied with the data instead of the RPN),
``one_stage`` (the proposals straight from the RPN, without the refinement below).

Differences from the COCO recipe, for CPU speed at 128 px: a small ResNet with 32 FPN
channels, fewer proposals (500 per level before NMS, 300 after) and 128 sampled RoIs per
image instead of 512, a 256-wide box head, AdamW. For tighter proposals on objects of
8-64 px (docs/RESULTS.md): anchors of 16..256 px at three scales per level (RetinaNet's
2 ** (k / 3)), so that most objects have an anchor at IoU >= 0.7 to train on; a three-conv
RPN head; the RPN's box loss weighted 10x; box voting of the proposals after their NMS
(each proposal becomes the score-weighted mean of the candidates at IoU >= 0.6 with it);
then one class-agnostic regression of every proposal by a box head on 7 x 7 bilinear
samples inside it (``model.refine_proposals``: RoIAlign with one sample per bin, a second
proposal stage as in Cascade RPN / Cascade R-CNN) before the RoI head. ``eval/rpn_AR100``
measures the proposals after that refinement (0.903 against 0.815 before it in the
3000-step run of docs/RESULTS.md). 4000 steps: the reported run (AP 0.795, AP50 0.938,
rpn_AR100 0.907 in 19.5 minutes with the dataset generation).
"""

import ml_collections

from jaxvision.data import CLASS_NAMES, shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "detection"
  config.seed = 0
  config.total_steps = 4000
  config.batch_size = 8
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = shapes_data_config(image_size=128, min_objects=1, max_objects=6, max_boxes=6,
                                   num_train=20000, num_validation=500, num_test=500,
                                   features=("image", "boxes", "labels", "area", "is_crowd"))

  config.model = ml_collections.ConfigDict(dict(
      num_classes=len(CLASS_NAMES),
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="imagenet", norm="batch")),
      fpn_channels=32,
      proposal_source="rpn",  # "rpn" (Faster R-CNN) | "data" (Fast R-CNN)
      anchor_sizes=(16.0, 32.0, 64.0, 128.0, 256.0),  # one per level P2..P6, times each scale
      anchor_scales=(1.0, 2.0 ** (1 / 3), 2.0 ** (2 / 3)),
      aspect_ratios=(0.5, 1.0, 2.0),
      rpn_head_convs=3,
      rpn_samples_per_image=256, rpn_positive_fraction=0.5,
      rpn_objectness_target="binary",  # "binary" (Faster R-CNN) | "iou" (localization quality)
      rpn_box_voting_iou=0.6,  # proposals: score-weighted mean of the candidates at IoU >= 0.6
      refine_proposals=True,  # regress every proposal once more (False: variant one_stage)
      refine_sampling_ratio=1,  # the refiner's RoIAlign: 7 x 7 samples, one per bin
      rpn_box_loss="smooth_l1", rpn_box_loss_weight=10.0,
      smooth_l1_beta=1.0 / 9.0,  # both box losses (torchvision; detectron2 uses 0: L1)
      rpn_pre_nms_top_n_train=500, rpn_pre_nms_top_n_test=500,
      rpn_post_nms_top_n_train=300, rpn_post_nms_top_n_test=300,
      roi_samples_per_image=128, roi_positive_fraction=0.25,
      box_head_hidden=256,
      max_detections=100, detection_candidates=1000,
      dtype="float32"))  # compute dtype: "float32" | "bfloat16" (params stay float32)
  # Fast R-CNN mode only: proposals made from the data (see tasks/detection.py).
  config.data_proposals = ml_collections.ConfigDict(dict(
      num_proposals=300, jittered_per_object=20, jitter=0.25))

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=4e-3,
                                              warmup_steps=200, schedule="cosine",
                                              weight_decay=1e-4, grad_clip_norm=10.0)

  if arg == "quick":
    config.total_steps = 10
    config.batch_size = 8  # one image per test device
    config.eval_every = 10
    config.checkpoint_every = 5
    config.log_every = 2
    config.num_pictures = 4
    config.data.image_size = 64
    config.data.max_objects = 3
    config.data.max_boxes = 3
    config.data.num_train = 64
    config.data.num_validation = 16
    config.data.num_test = 16
    config.model.backbone = "resnet_tiny"
    config.model.fpn_channels = 16
    config.model.rpn_pre_nms_top_n_train = 100
    config.model.rpn_pre_nms_top_n_test = 100
    config.model.rpn_post_nms_top_n_train = 50
    config.model.rpn_post_nms_top_n_test = 50
    config.model.roi_samples_per_image = 32
    config.model.box_head_hidden = 32
    config.model.detection_candidates = 200
    config.data_proposals.num_proposals = 50
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 0
  elif arg == "fast_rcnn":
    config.model.proposal_source = "data"
    config.model.refine_proposals = False  # it refines the RPN's proposals
  elif arg == "one_stage":
    config.model.refine_proposals = False
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of faster_rcnn_shapes; use 'quick', "
                     "'fast_rcnn', 'one_stage' or none.")
  return config
