"""Keypoint R-CNN R50-FPN, the standard 1x recipe, on COCO person keypoints, for a GPU/TPU pod.

  python -m jaxvision.train --config configs/keypoint_rcnn_coco.py --workdir DIR \
      --config.data.annotations.train=annotations/person_keypoints_train2017.json \
      --config.data.image_root.train=train2017 \
      --config.data.annotations.validation=annotations/person_keypoints_val2017.json \
      --config.data.image_root.validation=val2017

torchvision's ``keypointrcnn_resnet50_fpn`` (Detectron's 1x schedule): the Faster R-CNN
R50-FPN of ``faster_rcnn_coco.py`` with one object class, person, and the keypoint head:
14 x 14 RoIAlign (2 samples per bin) of each positive RoI, eight 3 x 3 convolutions of 512
channels, a stride-2 transposed convolution and 2x bilinear upsampling to 56 x 56 heatmaps
of the 17 COCO person keypoints, softmax cross-entropy over each heatmap (``roi_keypoint``,
weight 1). 90k iterations at 16 images per step, SGD 0.02 with momentum 0.9, a 1000-step
warmup, x0.1 at 60k and 80k, weight decay 1e-4, frozen batch norm, stem and first stage
frozen, horizontal flips that swap left and right keypoints (the ``coco_json`` source's
flip permutation, from the json's keypoint names). Evaluation: the box numbers and the ten
COCO keypoint numbers ``eval/keypoints_AP, ...`` with COCO's per-keypoint OKS sigmas.

The data is read from COCO's own ``person_keypoints_*.json`` files (``data.name =
"coco_json"``; TFDS's ``coco/2017`` has no keypoints); the evaluation's boxes are scored
against the validation json. Static shapes as in ``faster_rcnn_coco.py``: images
letterboxed to 1024 x 1024 instead of "shorter side 800". Unlike torchvision's reference
script, images without labeled keypoints are not dropped from training (their persons
train the box head; their keypoint targets count nothing). Set ``init_from`` to an
ImageNet-trained ResNet-50 (e.g. ``torchvision:<resnet50 .pth>``).
"""

import ml_collections
from ml_collections import config_dict

from jaxvision.data import data_config
from jaxvision.evaluation.coco import COCO_KEYPOINT_SIGMAS
from jaxvision.optim import default_optimizer_config

TOTAL_STEPS = 90_000
SPLITS = ("train", "validation")
# The 17 keypoints of COCO's person category, in the json's order.
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
# The person category's skeleton in the json (1-based), made 0-based: for the pictures.
COCO_PERSON_SKELETON = tuple((a - 1, b - 1) for a, b in (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)))


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
                            features=("image", "boxes", "labels", "area", "is_crowd",
                                      "keypoints"))

  config.model = ml_collections.ConfigDict(dict(
      num_classes=1,  # person
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
      max_detections=100, detection_candidates=2000,
      keypoint_head=True,
      num_keypoints=len(COCO_PERSON_KEYPOINTS),
      keypoint_pool_size=14, keypoint_heatmap_size=56, keypoint_sampling_ratio=2,
      keypoint_head_channels=512, keypoint_head_convs=8, keypoint_loss_weight=1.0,
      dtype="float32"))  # compute dtype: "float32" | "bfloat16" (params stay float32)
  config.keypoint_sigmas = tuple(float(s) for s in COCO_KEYPOINT_SIGMAS)
  config.keypoint_skeleton = COCO_PERSON_SKELETON
  config.data_proposals = ml_collections.ConfigDict(dict(
      num_proposals=2000, jittered_per_object=10, jitter=0.25))

  config.optimizer = default_optimizer_config(
      name="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4, warmup_steps=1000,
      schedule="step", decay_boundaries=(60_000 / TOTAL_STEPS, 80_000 / TOTAL_STEPS),
      decay_factor=0.1, freeze_regex=r"^backbone/(stem_|stage1_)")

  if arg:
    raise ValueError(f"keypoint_rcnn_coco has no variant {arg!r}; the tests build it as is.")
  return config
