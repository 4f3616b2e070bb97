"""RetinaNet (single-stage: ResNet + FPN + dense focal-loss heads) on the embedded shapes dataset.

  python -m jaxvision.train --config configs/retinanet_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/retinanet_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run, sized for under 30 minutes on a 2-core CPU;
see docs/RESULTS.md), ``quick`` (tests: a tiny model and dataset, a few steps).

The paper's recipe (anchors of 3 scales ``2 ** (k / 3)`` x 3 aspect ratios per location,
IoU 0.5 / 0.4 matching, focal loss alpha 0.25 gamma 2 normalized by the positives, four-conv
class and box subnets shared over levels, prior 0.01), at the shapes data's scale:

* Levels P3..P6 (strides 8..64; P6 a stride-2 conv on C5) instead of P3..P7: the images
  are 128 px and the objects 8-64 px, so the paper's P7 (a 1 x 1 map, anchors of 512 px)
  would match nothing.
* Anchor base sizes 2 x stride (16, 32, 64, 128 px; times the three scales: 16..203 px)
  rather than the paper's 4 x stride, for the same reason; 8 px objects are matched to
  their best 16 px anchors (the low-quality matches).
* The same small ResNet as ``faster_rcnn_shapes``, with 64 FPN / head channels; GroupNorm in
  the heads (as FCOS / torchvision's RetinaNet v2), which trains faster from scratch; the
  GIoU box loss; AdamW with a cosine schedule. (P2..P5 with anchors from 8 px and 32
  channels costs the same per step and learned no better in 600-step trials.)

8000 steps, batch 8: AP50 0.877 / AP 0.688 on the held-out split in 22 min 53 s on the idle
2-core machine, dataset generation included (docs/RESULTS.md). 5000 steps reached only
AP50 0.829: the dense heads learn more slowly than Faster R-CNN's RoI head on these small
shapes.
"""

import ml_collections

from jaxvision.data import CLASS_NAMES, shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "retinanet"
  config.seed = 0
  config.total_steps = 8000
  config.batch_size = 8
  config.eval_every = 2000
  config.checkpoint_every = 2000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  # The same data as faster_rcnn_shapes (same held-out split).
  config.data = shapes_data_config(image_size=128, min_objects=1, max_objects=6, max_boxes=6,
                                   num_train=20000, num_validation=500, num_test=500,
                                   features=("image", "boxes", "labels", "area", "is_crowd"))

  config.model = ml_collections.ConfigDict(dict(
      num_classes=len(CLASS_NAMES),
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="imagenet", norm="batch")),
      fpn_channels=64,
      min_level=3, max_level=6,  # P3..P6: strides 8..64 (the paper: P3..P7)
      anchor_sizes=(16.0, 32.0, 64.0, 128.0),  # one per level, times each scale
      anchor_scales=(1.0, 2.0 ** (1 / 3), 2.0 ** (2 / 3)),
      aspect_ratios=(0.5, 1.0, 2.0),
      head_convs=4,
      head_norm="group", head_norm_groups=16,  # "none": the paper
      prior_probability=0.01,
      foreground_iou=0.5, background_iou=0.4,
      focal_alpha=0.25, focal_gamma=2.0,
      box_loss="giou",  # "smooth_l1" (the paper) | "giou"
      smooth_l1_beta=0.1,
      box_loss_weight=1.0,
      score_threshold=0.05, pre_nms_top_n=1000, nms_threshold=0.5, max_detections=100,
      dtype="float32"))  # compute dtype: "float32" | "bfloat16" (params stay float32)

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
    config.model.head_norm_groups = 4
    config.model.head_convs = 2
    config.model.pre_nms_top_n = 100
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 0
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of retinanet_shapes; use 'quick' or none.")
  return config
