"""Instance masks: pasting per-RoI mask predictions into the image, and mask IoU.

``paste_masks`` follows torchvision's ``paste_masks_in_image`` (Mask R-CNN inference): the
``M x M`` mask is padded by one zero pixel, its box grown by the same factor
``(M + 2) / M`` and truncated to integer pixels ``(x0, y0, x1, y1)``; the padded mask is
bilinearly resized (``align_corners=False``) to ``(y1 - y0 + 1) x (x1 - x0 + 1)`` and
written at ``(x0, y0)``, cropped to the image. The resize is separable, so each image mask
is ``R_y @ mask @ R_x^T`` with per-box interpolation matrices (two non-zeros per row): one
batched matrix product, static shapes, no per-box loop.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

_PAD = 1


def _interpolation_matrix(box_low, box_high, image_length, source_length):
  """Rows of the bilinear resize of a ``source_length`` axis onto the image axis.

  Args:
    box_low, box_high: ``int32[K]`` inclusive integer extent of each pasted mask.
    image_length: static image length along this axis.
    source_length: static padded mask length along this axis.

  Returns:
    ``float32[K, image_length, source_length]``; row ``p`` holds the weights of image pixel
    ``p`` (all zero outside the box).
  """
  target_length = jnp.maximum(box_high - box_low + 1, 1)[:, None]
  pixel = jnp.arange(image_length)[None, :]
  offset = pixel - box_low[:, None]
  inside = (offset >= 0) & (offset < target_length)
  # torch's upsample_bilinear2d source index (align_corners=False), in float32.
  scale = jnp.float32(source_length) / target_length.astype(jnp.float32)
  source = jnp.maximum(scale * (offset.astype(jnp.float32) + 0.5) - 0.5, 0.0)
  low = jnp.minimum(source.astype(jnp.int32), source_length - 1)
  high = jnp.where(low < source_length - 1, low + 1, low)
  high_weight = source - low.astype(jnp.float32)
  low_weight = 1.0 - high_weight
  column = jnp.arange(source_length)[None, None, :]
  matrix = (jnp.where(column == low[..., None], low_weight[..., None], 0.0)
            + jnp.where(column == high[..., None], high_weight[..., None], 0.0))
  return jnp.where(inside[..., None], matrix, 0.0)


def paste_masks(
    masks: chex.Array,
    boxes: chex.Array,
    image_size: Sequence[int],
    threshold: float | None = 0.5,
) -> chex.Array:
  """Pastes per-box mask predictions into full-image masks (Mask R-CNN inference).

  Args:
    masks: ``float[K, M_h, M_w]`` mask probabilities in box coordinates (e.g. sigmoid of the
      mask head's logits for each detection's class).
    boxes: ``[K, 4]`` ``(x1, y1, x2, y2)`` detections in image pixels.
    image_size: static ``(H, W)`` of the output.
    threshold: binarize with ``prob > threshold``; None returns the probabilities.

  Returns:
    ``bool[K, H, W]`` (or ``float32[K, H, W]`` when ``threshold is None``).
  """
  chex.assert_rank(masks, 3)
  chex.assert_rank(boxes, 2)
  chex.assert_axis_dimension(boxes, 1, 4)
  chex.assert_axis_dimension(boxes, 0, masks.shape[0])
  height, width = (int(s) for s in image_size)
  mask_h, mask_w = masks.shape[1:]
  padded = jnp.pad(masks.astype(jnp.float32), ((0, 0), (_PAD, _PAD), (_PAD, _PAD)))
  boxes = boxes.astype(jnp.float32)
  # torchvision's expand_boxes (it scales both axes by the width's factor; masks are square).
  scale = jnp.float32((mask_w + 2 * _PAD) / mask_w)
  half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
  half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
  center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
  center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
  limit = 2.0**30  # keep the int conversion defined for absurd boxes
  to_int = lambda v: jnp.clip(jnp.trunc(v), -limit, limit).astype(jnp.int32)
  x0, x1 = to_int(center_x - half_w), to_int(center_x + half_w)
  y0, y1 = to_int(center_y - half_h), to_int(center_y + half_h)
  rows = _interpolation_matrix(y0, y1, height, mask_h + 2 * _PAD)
  cols = _interpolation_matrix(x0, x1, width, mask_w + 2 * _PAD)
  highest = jax.lax.Precision.HIGHEST
  pasted = jnp.einsum("kys,kst->kyt", rows, padded, precision=highest)
  pasted = jnp.einsum("kyt,kxt->kyx", pasted, cols, precision=highest)
  return pasted if threshold is None else pasted > threshold


def mask_iou(masks1: chex.Array, masks2: chex.Array) -> chex.Array:
  """Pairwise IoU of binary masks.

  Args:
    masks1: ``[N, H, W]`` bool masks (or 0/1 numbers; non-zero is foreground).
    masks2: ``[M, H, W]``, same ``H, W``.

  Returns:
    ``float32[N, M]``; 0 where both masks are empty.
  """
  chex.assert_rank([masks1, masks2], 3)
  chex.assert_equal_shape([masks1, masks2], dims=(1, 2))
  # 0/1 float32 products sum exactly below 2**24 pixels per mask.
  flat1 = masks1.reshape(masks1.shape[0], -1).astype(bool).astype(jnp.float32)
  flat2 = masks2.reshape(masks2.shape[0], -1).astype(bool).astype(jnp.float32)
  intersection = jnp.matmul(flat1, flat2.T, precision=jax.lax.Precision.HIGHEST)
  union = flat1.sum(axis=1)[:, None] + flat2.sum(axis=1)[None, :] - intersection
  return jnp.where(union > 0, intersection / jnp.where(union > 0, union, 1.0), 0.0)
