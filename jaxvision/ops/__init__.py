"""Static-shape box, NMS, RoIAlign, anchor, matching, mask and up/down-sampling ops.

Pure JAX functions: they run under ``jit``, batch with ``vmap`` and work on CPU, GPU and
TPU. Boxes are ``(x1, y1, x2, y2)`` in absolute pixels, continuous coordinates (no +1);
variable-length results are padded to a static size with a boolean ``valid`` mask (or -1
indices). Each op documents its shapes; numbers follow torchvision where it has the op.
"""

from jaxvision.ops.anchors import anchor_templates
from jaxvision.ops.anchors import generate_anchors
from jaxvision.ops.anchors import num_anchors_per_level
from jaxvision.ops.boxes import box_area
from jaxvision.ops.boxes import box_iou
from jaxvision.ops.boxes import clip_boxes
from jaxvision.ops.boxes import cxcywh_to_xyxy
from jaxvision.ops.boxes import decode_boxes
from jaxvision.ops.boxes import DEFAULT_SCALE_CLAMP
from jaxvision.ops.boxes import encode_boxes
from jaxvision.ops.boxes import generalized_box_iou
from jaxvision.ops.boxes import paired_box_iou
from jaxvision.ops.boxes import paired_generalized_box_iou
from jaxvision.ops.boxes import small_box_mask
from jaxvision.ops.boxes import xywh_to_xyxy
from jaxvision.ops.boxes import xyxy_to_cxcywh
from jaxvision.ops.boxes import xyxy_to_xywh
from jaxvision.ops.masks import mask_iou
from jaxvision.ops.masks import paste_masks
from jaxvision.ops.matching import IGNORE
from jaxvision.ops.matching import match_boxes
from jaxvision.ops.matching import match_iou
from jaxvision.ops.matching import NEGATIVE
from jaxvision.ops.matching import POSITIVE
from jaxvision.ops.matching import sample_balanced
from jaxvision.ops.nms import batched_nms
from jaxvision.ops.nms import box_voting
from jaxvision.ops.nms import nms
from jaxvision.ops.roi_align import crop_and_resize_masks
from jaxvision.ops.roi_align import fpn_level_index
from jaxvision.ops.roi_align import multilevel_roi_align
from jaxvision.ops.roi_align import roi_align
from jaxvision.ops.upsampling import bed_of_nails_unpool
from jaxvision.ops.upsampling import conv_transpose
from jaxvision.ops.upsampling import max_pool_with_indices
from jaxvision.ops.upsampling import max_unpool
from jaxvision.ops.upsampling import nearest_upsample
from jaxvision.ops.warp import context_boxes
from jaxvision.ops.warp import warp_boxes
from jaxvision.ops.warp import warp_regions

__all__ = [
    "DEFAULT_SCALE_CLAMP",
    "IGNORE",
    "NEGATIVE",
    "POSITIVE",
    "anchor_templates",
    "batched_nms",
    "bed_of_nails_unpool",
    "box_area",
    "box_iou",
    "box_voting",
    "clip_boxes",
    "context_boxes",
    "conv_transpose",
    "crop_and_resize_masks",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "encode_boxes",
    "fpn_level_index",
    "generalized_box_iou",
    "generate_anchors",
    "mask_iou",
    "match_boxes",
    "match_iou",
    "max_pool_with_indices",
    "max_unpool",
    "multilevel_roi_align",
    "nearest_upsample",
    "nms",
    "num_anchors_per_level",
    "paired_box_iou",
    "paired_generalized_box_iou",
    "paste_masks",
    "roi_align",
    "sample_balanced",
    "small_box_mask",
    "warp_boxes",
    "warp_regions",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]
