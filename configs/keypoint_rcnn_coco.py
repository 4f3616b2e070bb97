"""Keypoint R-CNN R50-FPN, the standard 1x recipe, on COCO person keypoints, for a GPU/TPU pod.

  python -m jaxvision.train --config configs/keypoint_rcnn_coco.py --workdir DIR \
      --config.data.annotations.train=annotations/person_keypoints_train2017.json \
      --config.data.image_root.train=train2017 \
      --config.data.annotations.validation=annotations/person_keypoints_val2017.json \
      --config.data.image_root.validation=val2017

torchvision's ``keypointrcnn_resnet50_fpn`` (Detectron's 1x schedule): the Faster R-CNN
R50-FPN of ``faster_rcnn_coco_json.py`` (imported, not copied) with one object class,
person, and the keypoint head: 14 x 14 RoIAlign (2 samples per bin) of each positive RoI,
eight 3 x 3 convolutions of 512 channels, a stride-2 transposed convolution and 2x bilinear
upsampling to 56 x 56 heatmaps of the 17 COCO person keypoints, softmax cross-entropy over
each heatmap (``roi_keypoint``, weight 1). 90k iterations at 16 images per step, SGD 0.02
with momentum 0.9, a 1000-step warmup, x0.1 at 60k and 80k, weight decay 1e-4, frozen batch
norm, stem and first stage frozen, horizontal flips that swap left and right keypoints (the
``coco_json`` source's flip permutation, from the json's keypoint names). Evaluation: the
box numbers and the ten COCO keypoint numbers ``eval/keypoints_AP, ...`` with COCO's
per-keypoint OKS sigmas.

The data is read from COCO's own ``person_keypoints_*.json`` files (``data.name =
"coco_json"``; TFDS's ``coco/2017`` has no keypoints); the evaluation's boxes are scored
against the validation json. Static shapes as in ``faster_rcnn_coco.py``: images
letterboxed to 1024 x 1024 instead of "shorter side 800". Unlike torchvision's reference
script, images without labeled keypoints are not dropped from training (their persons
train the box head; their keypoint targets count nothing). Set ``init_from`` to an
ImageNet-trained ResNet-50 (e.g. ``torchvision:<resnet50 .pth>``).
"""

from jaxvision import config_files
from jaxvision.evaluation.coco import COCO_KEYPOINT_SIGMAS

# The 17 keypoints of COCO's person category, in the json's order.
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
# The person category's skeleton in the json (1-based), made 0-based: for the pictures.
COCO_PERSON_SKELETON = tuple((a - 1, b - 1) for a, b in (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)))


def get_config(arg=None):
  if arg:
    raise ValueError(f"keypoint_rcnn_coco has no variant {arg!r}; the tests build it as is.")
  # The Faster R-CNN R50-FPN recipe on coco_json (imported, not copied), one class: person.
  config = config_files.sibling(__file__, "faster_rcnn_coco_json").get_config()
  config.data.features = tuple(config.data.features) + ("keypoints",)
  config.model.num_classes = 1  # person
  config.model.keypoint_head = True
  config.model.num_keypoints = len(COCO_PERSON_KEYPOINTS)
  config.model.keypoint_pool_size = 14  # 56 x 56 heatmaps
  config.model.keypoint_heatmap_size = 56
  config.model.keypoint_sampling_ratio = 2
  config.model.keypoint_head_channels = 512
  config.model.keypoint_head_convs = 8
  config.model.keypoint_loss_weight = 1.0
  config.model.keypoint_decode_upsample = 1
  config.model.dtype = "float32"  # compute dtype: "float32" | "bfloat16" (params stay float32)
  config.keypoint_sigmas = tuple(float(s) for s in COCO_KEYPOINT_SIGMAS)
  config.keypoint_skeleton = COCO_PERSON_SKELETON
  return config
