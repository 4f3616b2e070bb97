"""RoIAlign (He et al. 2017) on NHWC features, single- and multi-level (FPN).

Numbers follow ``torchvision.ops.roi_align`` (which is NCHW): each output bin averages
``sampling_ratio**2`` bilinear samples on a regular grid inside the bin; a sample with
``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes 0, other samples are clamped into
the map. ``aligned=True`` shifts boxes by half a pixel (the "correct" pixel model, used by
Detectron2); ``aligned=False`` is the original Mask R-CNN model, where boxes are at least
1 x 1 feature pixels.

Implementation: the sample grid of a box is separable, so each output bin is a weighted
sum of ``(2 * sampling_ratio)**2`` feature vectors (two bilinear taps per sample per axis).
All levels, boxes and taps read from one flattened ``[sum(H_l * W_l), C]`` feature table
with contiguous channel vectors (NHWC), so the op is a handful of fused gathers plus
multiply-adds, with no per-box loop. Sample coordinates are computed with torchvision's
float32 operations in its order, guarded against two XLA rewrites that round differently
(a multiply fused into the following add; division by a constant turned into
multiplication by its reciprocal), so they agree bit for bit whenever the spatial scale is
a power of two (1 / stride); outputs then differ only by summation order (~1e-7).
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from jaxvision.ops import boxes as box_ops


def _check_static_args(output_size, sampling_ratio):
  if (len(output_size) != 2 or any(not isinstance(s, int) or s <= 0 for s in output_size)):
    raise ValueError(f"output_size must be two positive ints (out_h, out_w); got {output_size}.")
  if not isinstance(sampling_ratio, int) or sampling_ratio <= 0:
    raise ValueError(
        f"sampling_ratio must be a positive int (samples per bin per axis); got "
        f"{sampling_ratio!r}. torchvision's adaptive sampling_ratio<=0 gives data-dependent "
        "shapes; use a fixed value such as 2.")


def _exact_multiple(count, value):
  """``count * value`` rounded once, even where XLA fuses the product into a following add.

  XLA's CPU and GPU compilers contract ``a * b + c`` into a fused multiply-add, which skips
  the rounding of ``a * b`` that torchvision's kernel performs. Splitting ``value`` into two
  halves of 12 significant bits makes both partial products exact for integer ``count <
  2**12``, so however the sum is contracted it is the correctly rounded product.
  """
  bits = jax.lax.bitcast_convert_type(value, jnp.uint32)
  high = jax.lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFF000), value.dtype)
  return count * high + count * (value - high)


def _exact_quotient(numerator, denominator: int):
  """``numerator / denominator`` as an IEEE division.

  XLA rewrites division by a constant (or a broadcast scalar) into multiplication by its
  reciprocal, which rounds differently from torchvision's division; a full-shaped divisor
  that XLA cannot fold keeps the division.
  """
  divisor = jnp.where(jnp.isnan(numerator), 1, denominator).astype(numerator.dtype)
  return numerator / divisor


def _bilinear_taps(low_edge, high_edge, spatial_scale, size, num_bins, sampling_ratio,
                   aligned):
  """Sample positions of each box along one axis and their two bilinear taps.

  Args:
    low_edge, high_edge: ``[K]`` box edges in image pixels (x1, x2 or y1, y2).
    spatial_scale: ``[K]`` feature pixels per image pixel.
    size: ``int32[K]`` feature map length along this axis.
    num_bins: static number of output bins along this axis.
    sampling_ratio: static samples per bin.
    aligned: static half-pixel shift.

  Returns:
    ``(index int32[K, num_bins * sampling_ratio, 2], weight float[K, num_bins *
    sampling_ratio, 2])``: the low/high feature rows (or columns) of every sample and
    their bilinear weights, 0 for samples outside ``[-1, size]``.
  """
  offset = 0.5 if aligned else 0.0
  start = low_edge * spatial_scale - offset
  end = high_edge * spatial_scale - offset
  length = end - start
  if not aligned:
    length = jnp.maximum(length, 1.0)  # torchvision forces malformed RoIs to 1 x 1
  bin_size = _exact_quotient(length, num_bins)
  bin_index = jnp.arange(num_bins, dtype=start.dtype)[:, None]
  sample_offset = (jnp.arange(sampling_ratio, dtype=start.dtype) + 0.5)[None, :]
  # Same operations as torchvision: (start + b * bin) + ((i + .5) * bin) / ratio.
  bin_size = bin_size[:, None, None]
  coord = (start[:, None, None] + _exact_multiple(bin_index, bin_size)
           + _exact_quotient(sample_offset * bin_size, sampling_ratio))
  coord = coord.reshape(coord.shape[0], num_bins * sampling_ratio)
  size = size[:, None]
  inside = (coord >= -1.0) & (coord <= size)
  coord = jnp.maximum(coord, 0.0)
  last = (size - 1).astype(coord.dtype)
  at_end = coord >= last
  coord = jnp.where(at_end, last, coord)
  low = jnp.clip(jnp.floor(coord).astype(jnp.int32), 0, size - 1)
  high = jnp.where(at_end, low, low + 1)
  frac = coord - low
  weight = jnp.where(inside[..., None], jnp.stack([1.0 - frac, frac], axis=-1), 0.0)
  return jnp.stack([low, high], axis=-1), weight


def _roi_align_from_table(table, boxes, level_start, level_height, level_width,
                          spatial_scale, output_size, sampling_ratio, aligned):
  """RoIAlign of every box on its own level of a flattened feature table.

  Args:
    table: ``[P, C]`` all levels' ``[H_l * W_l, C]`` maps stacked (row-major y, x).
    boxes: ``[K, 4]`` in image pixels.
    level_start: ``int32[K]`` first table row of each box's level.
    level_height, level_width: ``int32[K]`` size of each box's level.
    spatial_scale: ``float[K]`` scale of each box's level.
    output_size, sampling_ratio, aligned: static, see ``roi_align``.

  Returns:
    ``[K, out_h, out_w, C]`` in the table's dtype (coordinates and sums in float32).
  """
  out_h, out_w = output_size
  num_boxes = boxes.shape[0]
  boxes = boxes.astype(jnp.float32)
  spatial_scale = spatial_scale.astype(jnp.float32)
  y_index, y_weight = _bilinear_taps(boxes[:, 1], boxes[:, 3], spatial_scale, level_height,
                                     out_h, sampling_ratio, aligned)
  x_index, x_weight = _bilinear_taps(boxes[:, 0], boxes[:, 2], spatial_scale, level_width,
                                     out_w, sampling_ratio, aligned)
  # [K, out, samples * taps] with the samples of a bin contiguous.
  y_index = y_index.reshape(num_boxes, out_h, -1)
  y_weight = y_weight.reshape(num_boxes, out_h, -1)
  x_index = x_index.reshape(num_boxes, out_w, -1)
  x_weight = x_weight.reshape(num_boxes, out_w, -1)
  row_start = level_start[:, None, None] + y_index * level_width[:, None, None]
  inverse_count = 1.0 / (sampling_ratio * sampling_ratio)

  # One fused gather-multiply-add per (y tap, x tap) pair: [K, out_h, out_w, C] each.
  output = jnp.zeros((num_boxes, out_h, out_w, table.shape[1]), jnp.float32)
  for y_tap in range(y_index.shape[-1]):
    for x_tap in range(x_index.shape[-1]):
      rows = row_start[:, :, None, y_tap] + x_index[:, None, :, x_tap]
      weight = (y_weight[:, :, None, y_tap] * x_weight[:, None, :, x_tap]) * inverse_count
      output += weight[..., None] * jnp.take(table, rows, axis=0, mode="clip")
  return output.astype(table.dtype)


def roi_align(
    features: chex.Array,
    boxes: chex.Array,
    output_size: Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = False,
) -> chex.Array:
  """RoIAlign on one NHWC feature map; ``torchvision.ops.roi_align`` semantics.

  Args:
    features: ``[H, W, C]`` one image's feature map (``vmap`` for a batch).
    boxes: ``[K, 4]`` ``(x1, y1, x2, y2)`` in image pixels; may cross or lie outside the
      map (see the module docstring for the border rules).
    output_size: static ``(out_h, out_w)``.
    spatial_scale: feature pixels per image pixel (1 / stride).
    sampling_ratio: static samples per bin per axis (> 0).
    aligned: half-pixel box shift (see the module docstring).

  Returns:
    ``[K, out_h, out_w, C]`` pooled features, dtype of ``features``.
  """
  _check_static_args(tuple(output_size), sampling_ratio)
  chex.assert_rank(features, 3)
  chex.assert_rank(boxes, 2)
  chex.assert_axis_dimension(boxes, 1, 4)
  height, width, channels = features.shape
  num_boxes = boxes.shape[0]
  per_box = lambda value: jnp.full((num_boxes,), value)
  return _roi_align_from_table(
      features.reshape(height * width, channels), boxes, per_box(0), per_box(height),
      per_box(width), per_box(spatial_scale), tuple(output_size), sampling_ratio, aligned)


def fpn_level_index(
    boxes: chex.Array,
    min_level: int,
    max_level: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> chex.Array:
  """FPN level of each box (torchvision's ``LevelMapper``), as an index into the levels.

  ``k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)`` clamped to
  ``[min_level, max_level]``; returns ``k - min_level``.

  Args:
    boxes: ``[K, 4]`` in image pixels.
    min_level, max_level: the available pyramid levels (e.g. 2 and 5 for P2..P5).
    canonical_scale, canonical_level, eps: the FPN paper's 224 / 4 and torchvision's eps.

  Returns:
    ``int32[K]`` in ``[0, max_level - min_level]``.
  """
  chex.assert_rank(boxes, 2)
  box_size = jnp.sqrt(box_ops.box_area(boxes))
  level = jnp.floor(canonical_level + jnp.log2(box_size / canonical_scale) + eps)
  level = jnp.clip(jnp.nan_to_num(level, nan=min_level), min_level, max_level)
  return level.astype(jnp.int32) - min_level


def multilevel_roi_align(
    features: Sequence[chex.Array],
    boxes: chex.Array,
    output_size: Sequence[int],
    min_level: int = 2,
    sampling_ratio: int = 2,
    aligned: bool = False,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> chex.Array:
  """FPN RoIAlign: each box pooled from the level ``fpn_level_index`` assigns it.

  Same numbers as torchvision's ``MultiScaleRoIAlign`` (with explicit levels instead of
  scales inferred from shapes).

  Args:
    features: ``[H_l, W_l, C]`` maps of levels ``min_level, min_level + 1, ...`` (e.g.
      P2..P5), level ``l`` having stride ``2**l`` (spatial scale ``2**-l``).
    boxes: ``[K, 4]`` in image pixels.
    output_size: static ``(out_h, out_w)``.
    min_level: pyramid level of ``features[0]``.
    sampling_ratio, aligned: as in ``roi_align``.
    canonical_scale, canonical_level: the level rule, see ``fpn_level_index``.

  Returns:
    ``[K, out_h, out_w, C]``.
  """
  _check_static_args(tuple(output_size), sampling_ratio)
  if not features:
    raise ValueError("features must hold at least one [H, W, C] level.")
  chex.assert_rank(list(features), 3)
  chex.assert_equal_shape(list(features), dims=2)
  chex.assert_rank(boxes, 2)
  chex.assert_axis_dimension(boxes, 1, 4)
  max_level = min_level + len(features) - 1
  level = fpn_level_index(boxes, min_level, max_level, canonical_scale, canonical_level)
  heights = jnp.array([f.shape[0] for f in features], jnp.int32)
  widths = jnp.array([f.shape[1] for f in features], jnp.int32)
  starts = jnp.cumsum(heights * widths) - heights * widths
  scales = jnp.array([2.0**-l for l in range(min_level, max_level + 1)], jnp.float32)
  table = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in features], axis=0)
  return _roi_align_from_table(table, boxes, starts[level], heights[level],
                               widths[level], scales[level], tuple(output_size),
                               sampling_ratio, aligned)


def crop_and_resize_masks(
    masks: chex.Array,
    mask_index: chex.Array,
    boxes: chex.Array,
    mask_size: int | Sequence[int],
    sampling_ratio: int = 2,
    aligned: bool = False,
) -> chex.Array:
  """Mask R-CNN mask targets: each box's matched mask cropped to the box and resized.

  ``roi_align`` of mask ``mask_index[k]`` (a 1-channel map at image resolution) over
  ``boxes[k]``, as torchvision's ``project_masks_on_boxes`` (which uses an adaptive sampling
  ratio; here it is fixed for static shapes). Threshold at 0.5 for binary targets.

  Args:
    masks: ``[G, H, W]`` instance masks (bool or float) at image resolution.
    mask_index: ``int[K]`` which mask each box takes (e.g. its matched ground truth);
      clipped into ``[0, G)``.
    boxes: ``[K, 4]`` in image pixels (e.g. positive proposals).
    mask_size: static ``M`` or ``(M_h, M_w)``.
    sampling_ratio, aligned: as in ``roi_align``.

  Returns:
    ``float32[K, M_h, M_w]`` soft masks in [0, 1].
  """
  output_size = (mask_size, mask_size) if isinstance(mask_size, int) else tuple(mask_size)
  _check_static_args(output_size, sampling_ratio)
  chex.assert_rank(masks, 3)
  chex.assert_rank(boxes, 2)
  chex.assert_axis_dimension(boxes, 1, 4)
  chex.assert_shape(mask_index, (boxes.shape[0],))
  num_masks, height, width = masks.shape
  if num_masks == 0:
    raise ValueError("masks is empty ([0, H, W]); pad to at least one mask and mark the "
                     "padding invalid instead.")
  num_boxes = boxes.shape[0]
  mask_index = jnp.clip(mask_index.astype(jnp.int32), 0, num_masks - 1)
  per_box = lambda value: jnp.full((num_boxes,), value)
  table = masks.astype(jnp.float32).reshape(num_masks * height * width, 1)
  pooled = _roi_align_from_table(
      table, boxes, mask_index * (height * width), per_box(height),
      per_box(width), per_box(1.0), output_size, sampling_ratio, aligned)
  return pooled[..., 0]

