"""Mask R-CNN R50-FPN, the standard 1x recipe, on COCO 2017 instances, for a GPU/TPU pod.

  python -m jaxvision.train --config configs/mask_rcnn_coco.py --workdir DIR \
      --config.data.annotations.train=annotations/instances_train2017.json \
      --config.data.image_root.train=train2017 \
      --config.data.annotations.validation=annotations/instances_val2017.json \
      --config.data.image_root.validation=val2017

torchvision's ``maskrcnn_resnet50_fpn`` (Detectron's 1x schedule): the Faster R-CNN R50-FPN
recipe of ``faster_rcnn_coco_json.py`` (imported, not copied: 90k iterations at 16 images,
SGD 0.02, momentum 0.9, 1000-step warmup, x0.1 at 60k and 80k, weight decay 1e-4, frozen
batch norm, stem and first stage frozen; 80 classes) plus the mask head: 14 x 14 RoIAlign
(2 samples per bin) of each positive RoI on its FPN level, four 3 x 3 convolutions of 256
channels, a 2x2 stride-2 transposed convolution, per-class 28 x 28 mask logits, sigmoid
cross-entropy of the true class's mask (``roi_mask``, weight 1). Evaluation: the twelve
box numbers and the twelve mask numbers ``eval/segm_AP, ...``.

The instance masks come from COCO's own ``instances_*.json`` polygons / RLEs (``data.name =
"coco_json"``; TFDS's ``coco/2017`` stores boxes and areas but no masks), letterboxed with
the image to 1024 x 1024 (static shapes, as ``faster_rcnn_coco.py``). The mask targets are
RoIAlign of the ground-truth masks with a fixed 2 x 2 samples per bin (torchvision's is
adaptive, ``ceil(RoI side / 28)``; a fixed one keeps the shapes static). Set ``init_from``
to an ImageNet-trained ResNet-50 (e.g. ``torchvision:<resnet50 .pth>``).
"""

from jaxvision import config_files

COCO_CLASSES = 80


def get_config(arg=None):
  if arg:
    raise ValueError(f"mask_rcnn_coco has no variant {arg!r}; the tests build it as is.")
  config = config_files.sibling(__file__, "faster_rcnn_coco_json").get_config()
  config.data.features = tuple(config.data.features) + ("masks",)
  config.model.num_classes = COCO_CLASSES
  config.model.mask_head = True
  config.model.mask_pool_size = 14  # 28 x 28 masks
  config.model.mask_head_channels = 256
  config.model.mask_head_convs = 4
  config.model.mask_sampling_ratio = 2
  config.model.mask_target_sampling_ratio = 2
  return config
