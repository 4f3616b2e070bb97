"""Keypoint R-CNN's keypoint head: per-RoI heatmaps, their targets, loss and decoding.

Follows torchvision's ``KeypointRCNNHeads`` / ``KeypointRCNNPredictor`` and the functions
``keypoints_to_heatmap``, ``keypointrcnn_loss`` and ``heatmaps_to_keypoints`` of its
``roi_heads.py``, with every variable-length step made static-shape:

* :class:`KeypointHead`: eight 3x3 convs + ReLU on the ``14 x 14`` RoIAlign features, a
  stride-2 transposed conv (kernel 4) to ``28 x 28`` and 2x bilinear upsampling to
  ``56 x 56``: one heatmap of logits per keypoint.
* :func:`keypoint_targets`: the heatmap cell of each keypoint of each RoI's matched object
  (torchvision's discretization, bit for bit) and whether it counts: labeled (COCO
  visibility ``v > 0``: both "visible" 2 and "occluded" 1 are trained, as in COCO) and
  inside the RoI.
* :func:`keypoint_loss`: softmax cross-entropy over each heatmap's positions, the mean over
  the counted keypoints of foreground RoIs; zero when there are none.
* :func:`heatmaps_to_keypoints`: torchvision resizes each RoI's heatmaps to the RoI's size
  in pixels (``ceil`` of its width and height) with bicubic interpolation and takes the
  argmax; a size that changes per RoI. Here the same bicubic weights (PyTorch's,
  ``A = -0.75``, ``align_corners=False``, border taps clamped) are built as ``[G, S]``
  matrices on a static grid of ``G = max_roi_size`` output pixels per axis, the rows past
  the RoI's own size masked out: the same numbers, at static shapes, up to the order of
  float additions (a near-tie can pick the neighbouring pixel).

Keypoints are ``(x, y, visibility)`` in image pixels (continuous coordinates); heatmap cell
``(i, j)`` of a RoI covers ``[x1 + j w / S, x1 + (j + 1) w / S)`` along x, likewise y.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.models.layers import ConvTranspose

# PyTorch's bicubic convolution parameter (``upsample_bicubic2d``).
_CUBIC_A = -0.75


class KeypointHead(nn.Module):
  """Convs on pooled RoI features, then upsampling to one heatmap of logits per keypoint.

  Attributes:
    num_keypoints: K.
    channels: width of the 3x3 convs (512 in Keypoint R-CNN).
    num_convs: number of 3x3 conv + ReLU layers (8).
    dtype: compute dtype of the convs; the heatmaps are float32 whatever it is.
  """
  num_keypoints: int
  channels: int = 512
  num_convs: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, roi_features: jax.Array) -> jax.Array:
    """``[N, R, P, P, C]`` pooled features -> heatmap logits ``float32[N, R, K, 4P, 4P]``."""
    chex.assert_rank(roi_features, 5)
    batch, rois, size = roi_features.shape[:3]
    x = roi_features.reshape((batch * rois,) + roi_features.shape[2:])
    # torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero bias.
    init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    for i in range(self.num_convs):
      x = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                          name=f"conv{i + 1}")(x))
    # KeypointRCNNPredictor: ConvTranspose2d(kernel 4, stride 2, padding 1) doubles the
    # side, then bilinear 2x (align_corners=False, which jax.image.resize matches).
    x = ConvTranspose(self.num_keypoints, kernel_size=4, strides=2, padding=1,
                      kernel_init=init, name="heatmap_lowres")(x.astype(jnp.float32))
    x = jax.image.resize(x, (x.shape[0], 4 * size, 4 * size, self.num_keypoints), "bilinear")
    x = x.reshape(batch, rois, 4 * size, 4 * size, self.num_keypoints)
    return jnp.moveaxis(x, -1, 2).astype(jnp.float32)


def keypoint_targets(rois: jax.Array, keypoints: jax.Array, heatmap_size: int
                     ) -> tuple[jax.Array, jax.Array]:
  """The heatmap cell of every keypoint of every RoI (torchvision ``keypoints_to_heatmap``).

  Args:
    rois: ``[F, 4]`` boxes in image pixels.
    keypoints: ``[F, K, 3]`` ``(x, y, visibility)`` of each RoI's object, image pixels.
    heatmap_size: side ``S`` of the heatmaps (56).

  Returns:
    ``index int32[F, K]``: the flat cell ``row * S + column`` (0 where not valid), and
    ``valid bool[F, K]``: the keypoint is labeled (``visibility > 0``) and inside the RoI.
    A keypoint exactly on the RoI's right (bottom) edge goes to the last column (row), as
    in torchvision; one further out, or left of / above the RoI, is not valid.
  """
  chex.assert_rank([rois, keypoints], [2, 3])
  chex.assert_equal_shape_prefix([rois, keypoints], 1)
  x1, y1, x2, y2 = (rois[:, i:i + 1] for i in range(4))
  scale_x = heatmap_size / (x2 - x1)
  scale_y = heatmap_size / (y2 - y1)
  x, y = keypoints[..., 0], keypoints[..., 1]
  column = jnp.floor((x - x1) * scale_x)
  row = jnp.floor((y - y1) * scale_y)
  column = jnp.where(x == x2, heatmap_size - 1, column)
  row = jnp.where(y == y2, heatmap_size - 1, row)
  # Checked in float before the int cast: a zero-width RoI gives inf/nan, never valid.
  inside = (column >= 0) & (row >= 0) & (column < heatmap_size) & (row < heatmap_size)
  valid = inside & (keypoints[..., 2] > 0)
  index = jnp.where(valid, row * heatmap_size + column, 0).astype(jnp.int32)
  return index, valid


def keypoint_loss(heatmaps: jax.Array, targets: jax.Array, valid: jax.Array,
                  foreground: jax.Array) -> jax.Array:
  """Softmax cross-entropy over each heatmap's positions (torchvision ``keypointrcnn_loss``).

  Args:
    heatmaps: ``[N, F, K, S, S]`` logits.
    targets: ``int32[N, F, K]`` flat target cells (:func:`keypoint_targets`).
    valid: ``bool[N, F, K]`` keypoints that count.
    foreground: ``bool[N, F]`` foreground RoIs (the others are weighted by zero).

  Returns:
    The mean over the counted keypoints of foreground RoIs of the whole batch; 0 when
    there are none.
  """
  chex.assert_rank(heatmaps, 5)
  chex.assert_equal_shape([targets, valid])
  chex.assert_shape(foreground, targets.shape[:2])
  logits = heatmaps.reshape(heatmaps.shape[:3] + (-1,))
  weight = (valid & foreground[..., None]).astype(jnp.float32)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  return jnp.sum(cross_entropy * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _cubic_weights(distance: jax.Array) -> jax.Array:
  """PyTorch's cubic convolution kernel (``A = -0.75``) at ``|distance| < 2``."""
  a = _CUBIC_A
  d = jnp.abs(distance)
  near = ((a + 2) * d - (a + 3)) * d * d + 1
  far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
  return jnp.where(d <= 1, near, far)


def _bicubic_matrix(positions: jax.Array, output_length: jax.Array, input_length: int
                    ) -> jax.Array:
  """``[..., input_length]``: row ``i`` interpolates output pixel ``positions[i]`` (any
  shape) of a bicubic resize (``align_corners=False``) from ``input_length`` to
  ``output_length`` pixels (traced)."""
  scale = jnp.float32(input_length) / output_length
  source = scale * (positions.astype(jnp.float32) + 0.5) - 0.5
  low = jnp.floor(source)
  t = source - low
  taps = low[..., None].astype(jnp.int32) + jnp.arange(-1, 3)  # [..., 4]
  weights = jnp.stack([_cubic_weights(t + 1), _cubic_weights(t), _cubic_weights(1 - t),
                       _cubic_weights(2 - t)], axis=-1)
  # Taps past the border read the border pixel (PyTorch clamps the index).
  taps = jnp.clip(taps, 0, input_length - 1)
  return jnp.sum(weights[..., None] * jax.nn.one_hot(taps, input_length, dtype=jnp.float32),
                 axis=-2)


def _roi_keypoints(heatmaps: jax.Array, roi: jax.Array, grid: int, upsample: int) -> jax.Array:
  """One RoI: ``[K, S, S]`` heatmaps -> ``[K, 3]`` ``(x, y, score)`` (see the module doc)."""
  size = heatmaps.shape[-1]
  width = jnp.maximum(roi[2] - roi[0], 1.0)
  height = jnp.maximum(roi[3] - roi[1], 1.0)
  map_width, map_height = jnp.ceil(width), jnp.ceil(height)
  cells = jnp.arange(grid)
  rows = _bicubic_matrix(cells, map_height, size)
  columns = _bicubic_matrix(cells, map_width, size)
  resized = jnp.einsum("ya,kab,xb->kyx", rows, heatmaps, columns)
  inside = (cells < map_height)[:, None] & (cells < map_width)[None, :]
  flat = jnp.where(inside, resized, -jnp.inf).reshape(heatmaps.shape[0], -1)
  position = jnp.argmax(flat, axis=-1)
  score = jnp.take_along_axis(flat, position[:, None], axis=-1)[:, 0]
  row, column = jnp.divmod(position, grid)
  row, column = row.astype(jnp.float32), column.astype(jnp.float32)
  if upsample > 1:
    # The map at `upsample` cells per pixel, only in the 3 x 3 pixels around each maximum.
    offsets = jnp.arange(3 * upsample) - upsample  # fine cells from the pixel before
    fine_rows = upsample * row[:, None] + offsets  # [K, 3u]
    fine_columns = upsample * column[:, None] + offsets
    window = jnp.einsum("kya,kab,kxb->kyx",
                        _bicubic_matrix(fine_rows, upsample * map_height, size), heatmaps,
                        _bicubic_matrix(fine_columns, upsample * map_width, size))
    valid = (((fine_rows >= 0) & (fine_rows < upsample * map_height))[:, :, None]
             & ((fine_columns >= 0) & (fine_columns < upsample * map_width))[:, None, :])
    window = jnp.where(valid, window, -jnp.inf).reshape(heatmaps.shape[0], -1)
    best = jnp.argmax(window, axis=-1)
    score = jnp.take_along_axis(window, best[:, None], axis=-1)[:, 0]
    fine_row, fine_column = jnp.divmod(best, 3 * upsample)
    row = (upsample * row + offsets[fine_row]) / upsample
    column = (upsample * column + offsets[fine_column]) / upsample
  x = (column + 0.5 / upsample) * (width / map_width) + roi[0]
  y = (row + 0.5 / upsample) * (height / map_height) + roi[1]
  return jnp.stack([x, y, score], axis=-1)


def heatmaps_to_keypoints(heatmaps: jax.Array, rois: jax.Array, max_roi_size: int | None = None,
                          rois_per_step: int = 16, upsample: int = 1) -> jax.Array:
  """Keypoint positions and scores from heatmaps (torchvision ``heatmaps_to_keypoints``).

  Each RoI's heatmaps are resized bicubically to ``ceil(w) x ceil(h)`` pixels (w, h: the
  RoI's size, at least 1) and each keypoint goes to the centre of its maximum's pixel,
  scaled back by ``w / ceil(w)``; its score is that maximum (a logit of the resized map).
  With ``upsample = u > 1`` the position is then refined to ``1 / u`` of a pixel: the
  bicubic resize to ``u ceil(w) x u ceil(h)`` cells (``u`` per image pixel) is evaluated on
  the ``3u x 3u`` cells of the 3 x 3 pixels around that maximum and the keypoint goes to
  the centre of the best cell (its score: that cell's value); ``u = 1`` is torchvision's
  decoding exactly.

  Args:
    heatmaps: ``[R, K, S, S]`` logits.
    rois: ``[R, 4]`` boxes in image pixels.
    max_roi_size: static side of the decoding grid, at least every RoI's ``ceil(w)`` and
      ``ceil(h)``: the image's longer side for boxes clipped to the image. None: from
      concrete ``rois`` (their largest side); under ``jit`` it must be given.
    rois_per_step: RoIs resized at once (bounds the memory: ``rois_per_step * K *
      max_roi_size ** 2`` floats).
    upsample: decoding cells per image pixel along each axis (static, at least 1).

  Returns:
    ``float32[R, K, 3]``: ``(x, y, score)`` in image pixels.
  """
  chex.assert_rank([heatmaps, rois], [4, 2])
  chex.assert_equal_shape_prefix([heatmaps, rois], 1)
  if not isinstance(upsample, int) or upsample < 1:
    raise ValueError(f"heatmaps_to_keypoints: upsample must be an int >= 1, got {upsample!r}.")
  heatmaps = heatmaps.astype(jnp.float32)
  rois = rois.astype(jnp.float32)
  if max_roi_size is None:
    if isinstance(rois, jax.core.Tracer):
      raise ValueError("heatmaps_to_keypoints under jit needs a static max_roi_size (the "
                       "image's longer side).")
    sides = np.asarray(rois[:, 2:] - rois[:, :2])
    max_roi_size = max(1, int(np.ceil(sides.max()))) if sides.size else 1
  return jax.lax.map(lambda args: _roi_keypoints(*args, grid=max_roi_size, upsample=upsample),
                     (heatmaps, rois),
                     batch_size=min(rois_per_step, max(1, rois.shape[0])))
