"""R-CNN's region warp: each box cropped from the image and resized to a fixed square.

R-CNN (Girshick et al. 2014) classifies every proposal with a CNN whose input has a fixed
size, so each box is warped (anisotropically: width and height scaled independently) to
``S x S`` pixels, after dilating it so that ``p`` pixels of image context surround the
original box in the warped frame (``p = 16`` at ``S = 227`` in the paper). Context that
falls outside the image is filled with the image mean, which is zero in a normalized image.

The warp is a bilinear crop-and-resize, which is exactly RoIAlign (``ops.roi_align``) on
the image itself with ``spatial_scale = 1`` and ``aligned = True`` (half-pixel centres):
with one sample per bin a box equal to the image gives ``jax.image.resize(...,
"linear", antialias=False)``, and ``sampling_ratio`` samples per bin per axis average
``sampling_ratio ** 2`` bilinear samples per output pixel (box filtering when the box is
larger than the output, which is the usual case for proposals). Samples more than one
pixel outside the image read 0 (RoIAlign's border rule), so work on normalized images.
"""

from __future__ import annotations

from typing import Sequence

import chex
import jax
import jax.numpy as jnp

from jaxvision.ops.roi_align import roi_align


def context_boxes(boxes: chex.Array, output_size: int, context_padding: float) -> chex.Array:
  """Boxes dilated about their centre so that, warped to ``output_size``, ``context_padding``
  output pixels of context surround the original box on every side (R-CNN's ``p``).

  Args:
    boxes: ``[..., 4]`` ``(x1, y1, x2, y2)`` pixels.
    output_size: side ``S`` of the warped square.
    context_padding: ``p`` in warped pixels, ``0 <= p < S / 2`` (0: the box itself).

  Returns:
    ``[..., 4]``: each side scaled by ``S / (S - 2p)`` (may extend beyond the image).
  """
  if not 0 <= context_padding < output_size / 2:
    raise ValueError(f"context_padding must be in [0, output_size / 2) = [0, "
                     f"{output_size / 2}); got {context_padding}.")
  chex.assert_axis_dimension(boxes, -1, 4)
  scale = output_size / (output_size - 2 * context_padding)
  centres = (boxes[..., :2] + boxes[..., 2:]) / 2
  half = (boxes[..., 2:] - boxes[..., :2]) * (scale / 2)
  return jnp.concatenate([centres - half, centres + half], axis=-1)


def warp_boxes(image: chex.Array, boxes: chex.Array, output_size: int | Sequence[int],
               sampling_ratio: int = 2) -> chex.Array:
  """Every box of one image cropped and bilinearly resized to ``output_size``.

  Args:
    image: ``[H, W, C]`` (normalized: samples outside the image read 0); ``vmap`` for a batch.
    boxes: ``[K, 4]`` ``(x1, y1, x2, y2)`` image pixels.
    output_size: static ``S`` or ``(S_h, S_w)``.
    sampling_ratio: static bilinear samples per output pixel per axis (1: plain bilinear
      resize; 2: also averages over the box's extent when it is larger than the output).

  Returns:
    ``[K, S_h, S_w, C]`` in the image's dtype.
  """
  output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
  chex.assert_rank(image, 3)
  return roi_align(image, boxes, output_size, spatial_scale=1.0, sampling_ratio=sampling_ratio,
                   aligned=True)


def warp_regions(images: chex.Array, boxes: chex.Array, output_size: int,
                 context_padding: float = 0.0, sampling_ratio: int = 2) -> jax.Array:
  """R-CNN's input regions: ``[N, H, W, C]`` images, ``[N, R, 4]`` boxes -> ``[N, R, S, S, C]``.

  Each box is dilated by :func:`context_boxes` and warped by :func:`warp_boxes`.
  """
  chex.assert_rank(images, 4)
  chex.assert_shape(boxes, (images.shape[0], None, 4))
  dilated = context_boxes(boxes, output_size, context_padding)
  return jax.vmap(lambda image, image_boxes: warp_boxes(
      image, image_boxes, output_size, sampling_ratio))(images, dilated)
