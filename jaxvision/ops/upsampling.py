"""Down- and up-sampling of fully convolutional networks on NHWC maps.

Max pooling that also returns where each maximum came from, and the matching "max
unpooling" (SegNet), nearest-neighbour and "bed of nails" upsampling, and the learnable
upsampling, the transposed convolution. Numbers follow PyTorch (which is NCHW):
``max_pool2d(..., return_indices=True)``, ``max_unpool2d`` and ``conv_transpose2d``
(``groups=1``, ``dilation=1``), with PyTorch's pooling ``padding=0`` and
``ceil_mode=False``.

Tie and NaN rules (PyTorch's CPU kernel): a window is scanned row by row, left to right,
and a later element replaces the running maximum only if it is strictly greater or NaN.
Among equal maxima the first in scan order wins; a window holding NaN pools to NaN at its
last NaN.

Max unpooling with overlapping windows (stride < window): several pooled entries can
point at the same input position. PyTorch's ``max_unpool2d`` then writes the same output
position more than once, in an order that depends on its threads (its documentation
calls the op nondeterministic); with one thread the last write in row-major order of the
pooled map wins. ``max_unpool`` implements that last-write-wins rule deterministically.
Its gradient is the true gradient of that rule: an overwritten pooled entry gets 0,
whereas PyTorch's backward gathers the output gradient at every index, duplicates
included. Without duplicates (stride >= window) the two agree.
"""

from __future__ import annotations

import operator
from typing import Sequence

import chex
import jax
import jax.numpy as jnp

IntOrPair = int | Sequence[int]


def _pair(value: IntOrPair, name: str, minimum: int) -> tuple[int, int]:
  """``(height, width)`` from an int or a pair of static ints, each at least ``minimum``."""
  try:
    pair = tuple(value) if isinstance(value, Sequence) else (value, value)
    pair = tuple(operator.index(v) for v in pair)  # ints, NumPy ints too; not floats
  except TypeError:
    pair = ()
  if len(pair) != 2 or any(v < minimum for v in pair):
    raise ValueError(f"{name} must be an int or a (height, width) pair of ints >= {minimum}; "
                     f"got {value!r}.")
  return pair


def max_pool_with_indices(
    x: chex.Array,
    window: IntOrPair,
    stride: IntOrPair | None = None,
) -> tuple[chex.Array, chex.Array]:
  """Max pooling that also returns where each maximum is (``max_pool2d(return_indices)``).

  No padding; windows that do not fit at the bottom or right edge are dropped
  (``ceil_mode=False``). Ties and NaN follow PyTorch (see the module docstring).

  Args:
    x: ``[N, H, W, C]`` any real dtype, ``H >= window_h`` and ``W >= window_w``.
    window: static window size, int or ``(window_h, window_w)``.
    stride: static step, int or pair; ``None`` is ``window``. It may be smaller
      (overlapping windows) or larger (skipped pixels) than the window.

  Returns:
    ``(pooled, indices)``, both ``[N, out_h, out_w, C]`` with ``out = (size - window) //
    stride + 1``: ``pooled`` in the dtype of ``x``, ``indices`` int32 positions of the
    maxima flattened over ``H * W`` of their own image and channel (``y * W + x``).
  """
  window_h, window_w = _pair(window, "window", 1)
  stride_h, stride_w = (window_h, window_w) if stride is None else _pair(stride, "stride", 1)
  chex.assert_rank(x, 4)
  batch, height, width, channels = x.shape
  if height < window_h or width < window_w:
    raise ValueError(f"x is {height} x {width} (H x W), smaller than the {window_h} x "
                     f"{window_w} window; pool with a smaller window or pad x first.")
  out_h = (height - window_h) // stride_h + 1
  out_w = (width - window_w) // stride_w + 1
  corner = (jnp.arange(out_h, dtype=jnp.int32)[:, None] * (stride_h * width)
            + jnp.arange(out_w, dtype=jnp.int32) * stride_w)[None, :, :, None]
  # One strided view per window offset, in PyTorch's scan order: a running maximum needs
  # no [window_h * window_w, ...] stack, and its gradient reaches only the chosen element.
  pooled = indices = None
  for dy in range(window_h):
    for dx in range(window_w):
      value = jax.lax.slice(
          x, (0, dy, dx, 0),
          (batch, dy + (out_h - 1) * stride_h + 1, dx + (out_w - 1) * stride_w + 1, channels),
          (1, stride_h, stride_w, 1))
      index = corner + (dy * width + dx)
      if pooled is None:
        pooled, indices = value, jnp.broadcast_to(index, value.shape)
        continue
      later_wins = (value > pooled) | jnp.isnan(value)
      pooled = jnp.where(later_wins, value, pooled)
      indices = jnp.where(later_wins, index, indices)
  return pooled, indices


def max_unpool(
    pooled: chex.Array,
    indices: chex.Array,
    output_hw: IntOrPair,
) -> chex.Array:
  """Max unpooling: each value goes back to the position its maximum came from.

  The inverse of ``max_pool_with_indices`` in the sense of ``max_unpool2d``: zeros
  everywhere except at ``indices``. Where several entries share an index (overlapping
  windows), the last in row-major order of the pooled map wins; see the module docstring
  for how this relates to PyTorch and for the gradient. Indices outside ``[0, H * W)``
  (PyTorch raises; nothing can raise inside jit) write nothing.

  Args:
    pooled: ``[N, h, w, C]`` values to place, e.g. decoder features at the pooled
      resolution.
    indices: ``int[N, h, w, C]`` from ``max_pool_with_indices``, flat over ``H * W``.
    output_hw: static ``(H, W)`` (or one int for both), usually the size that was pooled.

  Returns:
    ``[N, H, W, C]`` in the dtype of ``pooled``.
  """
  height, width = _pair(output_hw, "output_hw", 1)
  chex.assert_rank(pooled, 4)
  chex.assert_equal_shape([pooled, indices])
  batch, _, _, channels = pooled.shape
  num_slots = batch * height * width * channels
  indices = indices.astype(jnp.int32)
  image = jnp.arange(batch, dtype=jnp.int32)[:, None, None, None]
  channel = jnp.arange(channels, dtype=jnp.int32)
  inside = (indices >= 0) & (indices < height * width)
  # Flat output slot of every entry; num_slots is out of bounds, so the scatter drops it.
  slot = jnp.where(inside, (image * (height * width) + indices) * channels + channel,
                   num_slots)
  # Entries of one image and channel are numbered in row-major order of the pooled map,
  # so the largest number writing to a slot is the last write.
  order = jnp.arange(pooled.size, dtype=jnp.int32)
  writer = jnp.full((num_slots,), -1, jnp.int32).at[slot.reshape(-1)].max(order, mode="drop")
  values = jnp.take(pooled.reshape(-1), jnp.maximum(writer, 0))
  return jnp.where(writer >= 0, values, 0).reshape(batch, height, width, channels)


def nearest_upsample(x: chex.Array, factor: IntOrPair) -> chex.Array:
  """Nearest-neighbour upsampling by an integer factor: each pixel becomes a block.

  Args:
    x: ``[N, H, W, C]``.
    factor: static int or ``(factor_h, factor_w)``, each >= 1.

  Returns:
    ``[N, H * factor_h, W * factor_w, C]`` in the dtype of ``x``.
  """
  factor_h, factor_w = _pair(factor, "factor", 1)
  chex.assert_rank(x, 4)
  batch, height, width, channels = x.shape
  blocks = jnp.broadcast_to(x[:, :, None, :, None, :],
                            (batch, height, factor_h, width, factor_w, channels))
  return blocks.reshape(batch, height * factor_h, width * factor_w, channels)


def bed_of_nails_unpool(x: chex.Array, factor: IntOrPair) -> chex.Array:
  """"Bed of nails" unpooling: each value at the top-left of its block, zeros elsewhere.

  Args:
    x: ``[N, H, W, C]``.
    factor: static int or ``(factor_h, factor_w)``, each >= 1.

  Returns:
    ``[N, H * factor_h, W * factor_w, C]`` in the dtype of ``x``; ``out[:, ::factor_h,
    ::factor_w] == x``.
  """
  factor_h, factor_w = _pair(factor, "factor", 1)
  chex.assert_rank(x, 4)
  # Interior padding puts factor - 1 zeros between values; the high padding ends the last block.
  return jax.lax.pad(x, jnp.zeros((), x.dtype),
                     [(0, 0, 0), (0, factor_h - 1, factor_h - 1),
                      (0, factor_w - 1, factor_w - 1), (0, 0, 0)])


def conv_transpose(
    x: chex.Array,
    kernel: chex.Array,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    output_padding: IntOrPair = 0,
) -> chex.Array:
  """Transposed convolution, the learnable upsampling (``conv_transpose2d`` semantics).

  Every input pixel adds ``x[n, i, j] @ kernel`` (a ``kh x kw`` patch) into the output at
  ``(i * stride_h - padding_h, j * stride_w - padding_w)``; overlapping patches sum. It is
  the transpose (gradient) of the strided convolution with the same kernel, stride and
  padding; ``output_padding`` adds rows/columns at the bottom/right to pick among the
  input sizes that convolution maps to the same size.

  Computed by phases (sub-pixel convolution): along an axis with stride ``s``, the output
  rows ``q * s + r`` of phase ``r`` are a stride-1 convolution of the undilated input with
  the taps ``kernel[r::s]``. All ``s_h * s_w`` phases are one matrix product of the input's
  patches (``ceil(kh / s_h) x ceil(kw / s_w)`` pixels) with the phases' taps, interleaved
  afterwards (depth to space) and cropped to the padded output. The stride-dilated input
  convolved with the whole kernel gives the same numbers with ``s_h * s_w`` times the
  multiply-adds, most of them by zeros; and a matrix product, unlike a convolution, has a
  kernel gradient that XLA:CPU computes fast (a matrix product too).

  Args:
    x: ``[N, H, W, C_in]``.
    kernel: ``[kh, kw, C_in, C_out]``; ``kernel[i, j, c, o]`` is PyTorch's
      ``weight[c, o, i, j]``.
    stride: static int or ``(stride_h, stride_w)``, >= 1.
    padding: static int or pair, >= 0: rows/columns cropped from each side of the full
      output.
    output_padding: static int or pair, ``0 <= output_padding < stride``.

  Returns:
    ``[N, out_h, out_w, C_out]``, ``out = (size - 1) * stride - 2 * padding + k +
    output_padding``, in the promoted dtype of ``x`` and ``kernel``.
  """
  stride = _pair(stride, "stride", 1)
  padding = _pair(padding, "padding", 0)
  output_padding = _pair(output_padding, "output_padding", 0)
  chex.assert_rank(x, 4)
  chex.assert_rank(kernel, 4)
  if kernel.shape[2] != x.shape[3]:
    raise ValueError(f"kernel {kernel.shape} is [kh, kw, C_in, C_out] with C_in = "
                     f"{kernel.shape[2]}, but x {x.shape} has {x.shape[3]} channels.")
  taps, pads, rows, crops = [], [], [], []
  for axis, name in enumerate(("height", "width")):
    size, k = x.shape[1 + axis], kernel.shape[axis]
    s, p, extra = stride[axis], padding[axis], output_padding[axis]
    if extra >= s:
      raise ValueError(f"output_padding {output_padding} must be smaller than stride "
                       f"{stride} along {name}; larger values add rows no input reaches.")
    out_size = (size - 1) * s - 2 * p + k + extra
    if out_size < 1:
      raise ValueError(f"conv_transpose output {name} (size - 1) * stride - 2 * padding + "
                       f"kernel + output_padding = ({size} - 1) * {s} - 2 * {p} + {k} + "
                       f"{extra} = {out_size} is not positive; reduce padding.")
    # Row t = q * s + r of the uncropped output (output row t - p) is row q of phase r:
    # sum_m x[q - m] * kernel[m * s + r], m < num_taps (taps past the kernel are zero).
    num_taps = -(-k // s)
    # The phase rows that reach the cropped output, and the padding of x whose windows of
    # num_taps rows give exactly those (negative: it crops x).
    first, last = p // s, (p + out_size - 1) // s
    taps.append(num_taps)
    pads.append((num_taps - 1 - first, last + 1 - size, 0))
    rows.append(last + 1 - first)
    crops.append((p - first * s, out_size))
  (taps_h, taps_w), (rows_h, rows_w) = taps, rows
  (stride_h, stride_w), (kh, kw) = stride, kernel.shape[:2]
  c_in, c_out = kernel.shape[2:]
  dtype = jnp.result_type(x, kernel)
  # [kh, kw] -> [taps * stride] (zero taps past the kernel) -> [taps, stride] by (m, r),
  # m reversed to match the window's row order (x[q - m] is window row taps - 1 - m).
  phases = jnp.pad(kernel.astype(dtype),
                   [(0, taps_h * stride_h - kh), (0, taps_w * stride_w - kw), (0, 0), (0, 0)])
  phases = phases.reshape(taps_h, stride_h, taps_w, stride_w, c_in, c_out)[::-1, :, ::-1]
  phases = phases.transpose(0, 2, 4, 1, 3, 5).reshape(
      taps_h * taps_w * c_in, stride_h * stride_w * c_out)
  padded = jax.lax.pad(x.astype(dtype), jnp.zeros((), dtype), [(0, 0, 0), *pads, (0, 0, 0)])
  patches = jnp.concatenate([padded[:, i:i + rows_h, j:j + rows_w]
                             for i in range(taps_h) for j in range(taps_w)], axis=-1)
  y = patches @ phases
  # Depth to space: phase (r_h, r_w) of row q goes to row q * stride_h + r_h.
  batch = x.shape[0]
  y = y.reshape(batch, rows_h, rows_w, stride_h, stride_w, c_out).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(batch, rows_h * stride_h, rows_w * stride_w, c_out)
  (top, out_h), (left, out_w) = crops
  return y[:, top:top + out_h, left:left + out_w]
