"""Box geometry: areas, IoU, format conversions, clipping and the R-CNN box coding.

Conventions (shared by all of ``jaxvision.ops``):

* Boxes are ``(x1, y1, x2, y2)`` in absolute pixels, continuous coordinates: a box
  ``(0, 0, 10, 10)`` covers 10 x 10 pixels (no ``+1``), as in torchvision.
* Every function accepts any number of leading batch dimensions (``[..., 4]``) unless its
  docstring gives fixed ranks, and is pure, static-shape and ``jit``/``vmap`` friendly.
* Degenerate boxes are allowed: a zero-area box has IoU 0 with everything (never NaN).
"""

from __future__ import annotations

import math
from typing import Sequence

import chex
import jax
import jax.numpy as jnp

# torchvision's BoxCoder default: never let exp(dw) scale a 16 px anchor beyond 1000 px.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_boxes(boxes: chex.Array, name: str = "boxes") -> None:
  if boxes.ndim < 1 or boxes.shape[-1] != 4:
    raise ValueError(f"{name} must have shape [..., 4] (x1, y1, x2, y2); got {boxes.shape}.")


def _safe_divide(numerator: chex.Array, denominator: chex.Array) -> chex.Array:
  """numerator / denominator where denominator > 0, else 0 (empty boxes give 0, not NaN)."""
  positive = denominator > 0
  return jnp.where(positive, numerator / jnp.where(positive, denominator, 1), 0)


def box_area(boxes: chex.Array) -> chex.Array:
  """Area ``(x2 - x1) * (y2 - y1)`` of ``boxes[..., 4]`` -> ``[...]``.

  Like torchvision, inverted boxes are not clamped (their "area" can be negative); use
  ``clip_boxes``/``small_box_mask`` to sanitize first.
  """
  _check_boxes(boxes)
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_intersection_and_union(boxes1: chex.Array, boxes2: chex.Array,
                                    area1: chex.Array | None = None,
                                    area2: chex.Array | None = None):
  """Pairwise intersection and union areas, ``[N, 4] x [M, 4] -> ([N, M], [N, M])``.

  The arithmetic is torchvision's: ``union = (area1 + area2) - inter`` in the boxes' dtype.
  To reproduce its rounding bit for bit, pass areas computed outside the surrounding fused
  computation (e.g. before a loop): XLA would otherwise fuse an area's product into the
  addition (a multiply-add, rounded once instead of twice).

  Args:
    boxes1: ``[N, 4]``.
    boxes2: ``[M, 4]``.
    area1: optional precomputed ``box_area(boxes1)``, ``[N]``.
    area2: optional precomputed ``box_area(boxes2)``, ``[M]``.
  """
  area1 = box_area(boxes1) if area1 is None else area1
  area2 = box_area(boxes2) if area2 is None else area2
  # Per-coordinate [N, 1] x [1, M] operands keep the [N, M] loops contiguous (vectorizable).
  x1a, y1a, x2a, y2a = (boxes1[:, i, None] for i in range(4))
  x1b, y1b, x2b, y2b = (boxes2[None, :, i] for i in range(4))
  width = jnp.maximum(jnp.minimum(x2a, x2b) - jnp.maximum(x1a, x1b), 0)
  height = jnp.maximum(jnp.minimum(y2a, y2b) - jnp.maximum(y1a, y1b), 0)
  inter = width * height
  union = area1[:, None] + area2[None, :] - inter
  return inter, union


def box_iou(boxes1: chex.Array, boxes2: chex.Array) -> chex.Array:
  """Pairwise intersection over union.

  Args:
    boxes1: ``[N, 4]`` float boxes ``(x1, y1, x2, y2)``.
    boxes2: ``[M, 4]`` float boxes.

  Returns:
    ``[N, M]`` IoU in [0, 1]; 0 where the union is empty (zero-area boxes).
  """
  chex.assert_rank([boxes1, boxes2], 2)
  _check_boxes(boxes1, "boxes1")
  _check_boxes(boxes2, "boxes2")
  inter, union = pairwise_intersection_and_union(boxes1, boxes2)
  return _safe_divide(inter, union)


def _diagonal(pairwise, boxes1: chex.Array, boxes2: chex.Array) -> chex.Array:
  """``pairwise(boxes1, boxes2)[i, i]`` for every ``i``, one pair at a time: ``[N]``."""
  chex.assert_rank([boxes1, boxes2], 2)
  chex.assert_equal_shape([boxes1, boxes2])
  return jax.vmap(lambda a, b: pairwise(a[None], b[None])[0, 0])(boxes1, boxes2)


def paired_box_iou(boxes1: chex.Array, boxes2: chex.Array) -> chex.Array:
  """IoU of ``boxes1[i]`` with ``boxes2[i]``: ``[N, 4] x [N, 4] -> [N]``.

  The diagonal of :func:`box_iou`, without building the ``N x N`` matrix.
  """
  return _diagonal(box_iou, boxes1, boxes2)


def generalized_box_iou(boxes1: chex.Array, boxes2: chex.Array) -> chex.Array:
  """Pairwise generalized IoU (Rezatofighi et al. 2019), ``[N, 4] x [M, 4] -> [N, M]``.

  ``GIoU = IoU - (|C| - |A u B|) / |C|`` with ``C`` the smallest enclosing box; in
  [-1, 1]. Terms with an empty denominator are 0 (two identical points give 0, not NaN).
  """
  chex.assert_rank([boxes1, boxes2], 2)
  _check_boxes(boxes1, "boxes1")
  _check_boxes(boxes2, "boxes2")
  inter, union = pairwise_intersection_and_union(boxes1, boxes2)
  iou = _safe_divide(inter, union)
  enclosing_top_left = jnp.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
  enclosing_bottom_right = jnp.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
  enclosing_wh = jnp.maximum(enclosing_bottom_right - enclosing_top_left, 0)
  enclosing_area = enclosing_wh[..., 0] * enclosing_wh[..., 1]
  return iou - _safe_divide(enclosing_area - union, enclosing_area)


def paired_generalized_box_iou(boxes1: chex.Array, boxes2: chex.Array) -> chex.Array:
  """GIoU of ``boxes1[i]`` with ``boxes2[i]``: ``[N, 4] x [N, 4] -> [N]``.

  The diagonal of :func:`generalized_box_iou`, without building the ``N x N`` matrix.
  """
  return _diagonal(generalized_box_iou, boxes1, boxes2)


def xyxy_to_xywh(boxes: chex.Array) -> chex.Array:
  """``(x1, y1, x2, y2) -> (x1, y1, w, h)`` (COCO format), ``[..., 4] -> [..., 4]``."""
  _check_boxes(boxes)
  return jnp.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def xywh_to_xyxy(boxes: chex.Array) -> chex.Array:
  """``(x1, y1, w, h) -> (x1, y1, x2, y2)``, ``[..., 4] -> [..., 4]``."""
  _check_boxes(boxes)
  return jnp.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_cxcywh(boxes: chex.Array) -> chex.Array:
  """``(x1, y1, x2, y2) -> (center x, center y, w, h)``, ``[..., 4] -> [..., 4]``."""
  _check_boxes(boxes)
  return jnp.concatenate(
      [(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes: chex.Array) -> chex.Array:
  """``(center x, center y, w, h) -> (x1, y1, x2, y2)``, ``[..., 4] -> [..., 4]``."""
  _check_boxes(boxes)
  half_wh = boxes[..., 2:] / 2
  return jnp.concatenate([boxes[..., :2] - half_wh, boxes[..., :2] + half_wh], axis=-1)


def clip_boxes(boxes: chex.Array, image_size: Sequence[float] | chex.Array) -> chex.Array:
  """Clamps ``boxes[..., 4]`` to the image: x to ``[0, w]``, y to ``[0, h]``.

  Args:
    boxes: ``[..., 4]`` boxes.
    image_size: ``(h, w)``: Python numbers or a ``[2]`` array (a per-image size under
      ``vmap``, e.g. the unpadded size of an image in a padded batch).

  Returns:
    ``[..., 4]`` clipped boxes (same dtype).
  """
  _check_boxes(boxes)
  height, width = image_size[0], image_size[1]
  upper = jnp.stack([width, height, width, height]).astype(boxes.dtype)
  return jnp.clip(boxes, 0, upper)


def small_box_mask(boxes: chex.Array, min_size: float) -> chex.Array:
  """Static-shape ``remove_small_boxes``: True where both sides are ``>= min_size``.

  Args:
    boxes: ``[..., 4]`` boxes.
    min_size: minimum width and height in pixels.

  Returns:
    ``[...]`` bool mask of the boxes torchvision's ``remove_small_boxes`` would keep; AND
    it into a ``valid`` mask instead of dropping boxes.
  """
  _check_boxes(boxes)
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  return (widths >= min_size) & (heights >= min_size)


def _centers_and_sizes(boxes: chex.Array):
  widths = boxes[..., 2] - boxes[..., 0]
  heights = boxes[..., 3] - boxes[..., 1]
  center_x = boxes[..., 0] + 0.5 * widths
  center_y = boxes[..., 1] + 0.5 * heights
  return center_x, center_y, widths, heights


def encode_boxes(
    boxes: chex.Array,
    anchors: chex.Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> chex.Array:
  """R-CNN regression targets of ``boxes`` relative to ``anchors`` (torchvision BoxCoder).

  ``dx = wx * (cx - cx_a) / w_a``, ``dy = wy * (cy - cy_a) / h_a``,
  ``dw = ww * log(w / w_a)``, ``dh = wh * log(h / h_a)``.

  Args:
    boxes: ``[..., 4]`` target boxes (e.g. matched ground truth).
    anchors: ``[..., 4]`` reference boxes (anchors or proposals), same shape; must have
      positive width and height.
    weights: ``(wx, wy, ww, wh)``; Faster R-CNN's box head uses ``(10, 10, 5, 5)``.

  Returns:
    ``[..., 4]`` deltas ``(dx, dy, dw, dh)``.
  """
  _check_boxes(boxes)
  chex.assert_equal_shape([boxes, anchors])
  weight_x, weight_y, weight_w, weight_h = weights
  anchor_cx, anchor_cy, anchor_w, anchor_h = _centers_and_sizes(anchors)
  box_cx, box_cy, box_w, box_h = _centers_and_sizes(boxes)
  return jnp.stack([
      weight_x * (box_cx - anchor_cx) / anchor_w,
      weight_y * (box_cy - anchor_cy) / anchor_h,
      weight_w * jnp.log(box_w / anchor_w),
      weight_h * jnp.log(box_h / anchor_h),
  ], axis=-1)


def decode_boxes(
    deltas: chex.Array,
    anchors: chex.Array,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = DEFAULT_SCALE_CLAMP,
) -> chex.Array:
  """Inverse of ``encode_boxes``: applies ``deltas`` to ``anchors`` (torchvision BoxCoder).

  ``dw`` and ``dh`` (after dividing by their weights) are clamped to ``scale_clamp`` from
  above so ``exp`` cannot overflow; the result is not clipped to the image.

  Args:
    deltas: ``[..., 4]`` ``(dx, dy, dw, dh)``.
    anchors: ``[..., 4]`` reference boxes, same shape as ``deltas``.
    weights: ``(wx, wy, ww, wh)``, as given to ``encode_boxes``.
    scale_clamp: upper bound of ``dw``/``dh``; default ``log(1000 / 16)``.

  Returns:
    ``[..., 4]`` boxes ``(x1, y1, x2, y2)``.
  """
  _check_boxes(deltas, "deltas")
  chex.assert_equal_shape([deltas, anchors])
  weight_x, weight_y, weight_w, weight_h = weights
  anchor_cx, anchor_cy, anchor_w, anchor_h = _centers_and_sizes(anchors)
  dx = deltas[..., 0] / weight_x
  dy = deltas[..., 1] / weight_y
  dw = jnp.minimum(deltas[..., 2] / weight_w, scale_clamp)
  dh = jnp.minimum(deltas[..., 3] / weight_h, scale_clamp)
  center_x = dx * anchor_w + anchor_cx
  center_y = dy * anchor_h + anchor_cy
  half_w = 0.5 * jnp.exp(dw) * anchor_w
  half_h = 0.5 * jnp.exp(dh) * anchor_h
  return jnp.stack(
      [center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h], axis=-1)
