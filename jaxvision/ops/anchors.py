"""Anchor boxes for one or many feature levels (torchvision ``AnchorGenerator`` layout).

Anchors depend only on static configuration (feature shapes, strides, sizes, ratios), so
they are computed once with numpy at trace time and enter the program as constants.

Order: level-major (in the order given), then feature row ``y``, then column ``x``, then
the cell's templates (aspect-ratio-major, size-minor), exactly like torchvision, so a head
output reshaped ``[H, W, A, ...] -> [H * W * A, ...]`` per level and concatenated over
levels lines up with these anchors.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def anchor_templates(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
  """Cell anchors centred on the origin, torchvision's ``generate_anchors``.

  For ratio ``r = h / w`` and size ``s``: ``w = s / sqrt(r)``, ``h = s * sqrt(r)`` (area
  ``s**2``), coordinates rounded to integers (half to even) as torchvision does.

  Args:
    sizes: anchor sizes (sqrt of area) in image pixels.
    aspect_ratios: height / width ratios.

  Returns:
    ``float32[len(aspect_ratios) * len(sizes), 4]``, ratio-major.
  """
  scales = np.asarray(sizes, np.float32)
  ratios = np.asarray(aspect_ratios, np.float32)
  height_ratios = np.sqrt(ratios)
  width_ratios = np.float32(1) / height_ratios
  widths = (width_ratios[:, None] * scales[None, :]).reshape(-1)
  heights = (height_ratios[:, None] * scales[None, :]).reshape(-1)
  templates = np.stack([-widths, -heights, widths, heights], axis=1) / np.float32(2)
  return np.round(templates).astype(np.float32)


def _per_level(name: str, values, num_levels: int):
  values = list(values)
  if len(values) != num_levels:
    raise ValueError(f"{name} must have one entry per feature level ({num_levels}); got "
                     f"{len(values)}. Pass e.g. sizes=((32,), (64,), ...) for several levels.")
  return values


def num_anchors_per_level(
    feature_shapes: Sequence[Sequence[int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> list[int]:
  """``H_l * W_l * len(sizes[l]) * len(aspect_ratios[l])`` per level (to split outputs)."""
  num_levels = len(feature_shapes)
  sizes = _per_level("sizes", sizes, num_levels)
  aspect_ratios = _per_level("aspect_ratios", aspect_ratios, num_levels)
  return [int(h) * int(w) * len(s) * len(r)
          for (h, w), s, r in zip(feature_shapes, sizes, aspect_ratios)]


def generate_anchors(
    feature_shapes: Sequence[Sequence[int]],
    strides: Sequence[int | Sequence[int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> jnp.ndarray:
  """Anchors of all levels, concatenated level-major (see the module docstring).

  Anchor ``(y, x, t)`` of a level is template ``t`` shifted by ``(x * stride_x,
  y * stride_y)`` (torchvision's convention: the grid starts at the image origin).

  Args:
    feature_shapes: ``(H_l, W_l)`` per level.
    strides: per level, an int or ``(stride_y, stride_x)`` in image pixels.
    sizes: per level, the anchor sizes (e.g. ``((32,), (64,), (128,), (256,), (512,))``).
    aspect_ratios: per level, the h / w ratios (e.g. ``((0.5, 1.0, 2.0),) * 5``).

  Returns:
    ``float32[sum(num_anchors_per_level), 4]`` ``(x1, y1, x2, y2)``.
  """
  num_levels = len(feature_shapes)
  if num_levels == 0:
    raise ValueError("feature_shapes is empty; give at least one (H, W).")
  strides = _per_level("strides", strides, num_levels)
  sizes = _per_level("sizes", sizes, num_levels)
  aspect_ratios = _per_level("aspect_ratios", aspect_ratios, num_levels)
  levels = []
  for (height, width), stride, level_sizes, level_ratios in zip(
      feature_shapes, strides, sizes, aspect_ratios):
    stride_y, stride_x = (stride, stride) if np.isscalar(stride) else stride
    shift_y, shift_x = np.meshgrid(np.arange(height, dtype=np.float32) * np.float32(stride_y),
                                   np.arange(width, dtype=np.float32) * np.float32(stride_x),
                                   indexing="ij")
    shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=-1).reshape(-1, 1, 4)
    templates = anchor_templates(level_sizes, level_ratios)[None]
    levels.append((shifts + templates).reshape(-1, 4))
  return jnp.asarray(np.concatenate(levels, axis=0))
