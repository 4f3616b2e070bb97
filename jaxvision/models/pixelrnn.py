"""PixelRNN with Row LSTM or Diagonal BiLSTM layers (van den Oord et al., "Pixel Recurrent
Neural Networks", 2016).

``PixelRNN(rnn="diagonal_bilstm")`` replaces the Row LSTM layers by Diagonal BiLSTM ones
(:class:`DiagonalBiLSTM`: skewed maps, a 2 x 1 state-to-state convolution along the
diagonals, two directions, the right-to-left one shifted down a row); its receptive field
is every earlier pixel.

A 7 x 7 type-A masked convolution, then Row LSTM layers with residual connections, then the
PixelCNN's 1 x 1 type-B output head. A Row LSTM layer processes the image row by row
(``lax.scan`` from the top): its gates at row ``r`` are an input-to-state 1 x k convolution
of row ``r`` of its input, masked type B (the pixels to the left and, by channel group, the
pixel itself), plus a state-to-state 1 x k convolution of the hidden state of row ``r - 1``
(unmasked: that row is entirely in the past). Its receptive field is a triangle above the
pixel that grows with every row; the output depends on every row above, so ``rows_above``
is unbounded. The fast sampler instead carries the LSTM states row by row: for each pixel it
runs the layers on the current row only (``__call__`` with ``states``), from the states of
the row above and the few input rows the type-A convolution reads.

Logits ``[B, H, W, C, num_levels]``; channel groups as in ``jaxvision.models.pixelcnn``.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.pixelcnn import MaskedConv, mask_groups, output_head


class RowLSTM(nn.Module):
  """One Row LSTM layer: ``[B, H, W, F]`` -> hidden states ``[B, H, W, hidden]``.

  With ``state`` (the ``(h, c)`` of the row above, each ``[B, W, hidden]``; zeros above the
  first row), ``x`` is one row ``[B, 1, W, F]`` and the result ``(hidden [B, 1, W, hidden],
  new state)``: the scan's step, for the sampler that carries the state row by row.
  """

  hidden: int
  kernel: int = 3
  channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array, state: tuple[jax.Array, jax.Array] | None = None):
    gates_in = MaskedConv(4 * self.hidden, (1, self.kernel), "B", "horizontal", self.channels,
                          out_chunks=4, name="input_to_state")(x)
    state_kernel = self.param("state_to_state", nn.initializers.lecun_normal(),
                              (1, self.kernel, self.hidden, 4 * self.hidden))
    batch, _, width, _ = x.shape

    def row(carry, row_gates):
      h, c = carry
      recurrent = jax.lax.conv_general_dilated(
          h[:, None], state_kernel, (1, 1), "SAME",
          dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, 0]
      output_gate, forget_gate, input_gate, candidate = jnp.split(row_gates + recurrent, 4, -1)
      c = jax.nn.sigmoid(forget_gate) * c + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate)
      h = jax.nn.sigmoid(output_gate) * jnp.tanh(c)
      return (h, c), h

    if state is not None:
      chex.assert_axis_dimension(x, 1, 1)
      state, hidden = row(state, gates_in[:, 0])
      return hidden[:, None], state
    zeros = jnp.zeros((batch, width, self.hidden), x.dtype)
    _, hidden = jax.lax.scan(row, (zeros, zeros), jnp.moveaxis(gates_in, 1, 0))
    return jnp.moveaxis(hidden, 0, 1)


def skew(x: jax.Array) -> jax.Array:
  """``[B, H, W, F]`` -> ``[B, H, W + H - 1, F]``: row ``i`` shifted right by ``i``, so each
  column of the result is one diagonal (``row + column`` constant) of the image."""
  height = x.shape[1]
  return jnp.stack([jnp.pad(x[:, i], ((0, 0), (i, height - 1 - i), (0, 0)))
                    for i in range(height)], axis=1)


def unskew(x: jax.Array, width: int) -> jax.Array:
  """The inverse of :func:`skew`: ``[B, H, W + H - 1, F]`` -> ``[B, H, W, F]``."""
  return jnp.stack([x[:, i, i:i + width] for i in range(x.shape[1])], axis=1)


class DiagonalLSTM(nn.Module):
  """One direction of a Diagonal BiLSTM layer, left to right: ``[B, H, W, F]`` -> hidden
  states ``[B, H, W, hidden]``.

  The input is skewed so that diagonals become columns, and the columns are scanned left to
  right: the gates of pixel ``(i, j)`` are a masked (type B) 1 x 1 convolution of its input
  plus a 2 x 1 convolution of the states of the previous column of the skewed map, which are
  the pixels ``(i, j - 1)`` (left) and ``(i - 1, j)`` (above): both earlier in raster order,
  so that convolution is unmasked. Its receptive field is every pixel above and to the left.
  """

  hidden: int
  channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, _ = x.shape
    gates_in = MaskedConv(4 * self.hidden, (1, 1), "B", "horizontal", self.channels,
                          out_chunks=4, name="input_to_state")(x)
    # Skewed after the convolution: the padding has zero gates and stays out of the data.
    gates_in = skew(gates_in)
    state_kernel = self.param("state_to_state", nn.initializers.lecun_normal(),
                              (2, self.hidden, 4 * self.hidden))

    def column(carry, column_gates):
      h, c = carry  # [B, H, hidden]: the previous diagonal
      above = jnp.pad(h, ((0, 0), (1, 0), (0, 0)))[:, :-1]  # row i reads row i - 1
      recurrent = h @ state_kernel[0] + above @ state_kernel[1]
      output_gate, forget_gate, input_gate, candidate = jnp.split(column_gates + recurrent, 4,
                                                                  -1)
      c = jax.nn.sigmoid(forget_gate) * c + jax.nn.sigmoid(input_gate) * jnp.tanh(candidate)
      h = jax.nn.sigmoid(output_gate) * jnp.tanh(c)
      return (h, c), h

    zeros = jnp.zeros((batch, height, self.hidden), x.dtype)
    _, hidden = jax.lax.scan(column, (zeros, zeros), jnp.moveaxis(gates_in, 2, 0))
    return unskew(jnp.moveaxis(hidden, 0, 2), width)


class DiagonalBiLSTM(nn.Module):
  """A Diagonal BiLSTM layer: a left-to-right :class:`DiagonalLSTM` plus a right-to-left one
  (the same on the mirrored image) shifted down a row. Unshifted, the right-to-left states
  of ``(i, j)`` would have seen ``(i, j + 1)``; shifted, they hold row ``i - 1``, entirely in
  the past, which gives each pixel the rows above to its right as well (van den Oord et al.
  2016, section 3.2). After a type-A input layer one value stays out of reach: the last
  value of the row above, from columns the type-A kernel does not reach (that pixel's own
  features exclude it, and no later pixel of its row carries it to the right-to-left pass);
  ``tests/tasks/test_pixelrnn.py`` checks this receptive field exactly."""

  hidden: int
  channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    forward = DiagonalLSTM(self.hidden, self.channels, name="left_to_right")(x)
    backward = DiagonalLSTM(self.hidden, self.channels, name="right_to_left")(x[:, :, ::-1])
    backward = jnp.pad(backward[:, :, ::-1], ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    return forward + backward


RNNS = ("row_lstm", "diagonal_bilstm")


class PixelRNN(nn.Module):
  """Row LSTM PixelRNN; see the module docstring.

  Attributes:
    channels, num_levels, num_classes: As ``PixelCNN``.
    features: Residual stream features (a multiple of ``channels``).
    hidden: LSTM state size (a multiple of ``channels``).
    num_layers: Row LSTM layers.
    first_kernel, kernel: The type-A convolution's and the LSTM convolutions' kernel sizes.
    output, num_mixtures: As ``PixelCNN`` (softmax logits or a logistic mixture).
    rnn: ``"row_lstm"`` or ``"diagonal_bilstm"`` (``kernel`` unused: its state-to-state
      kernel is 2 x 1, its input-to-state 1 x 1; no row-by-row mode).
  """

  channels: int = 1
  num_levels: int = 2
  features: int = 32
  hidden: int = 32
  num_layers: int = 2
  first_kernel: int = 7
  kernel: int = 3
  num_classes: int = 0
  output: str = "softmax"
  num_mixtures: int = 5
  rnn: str = "row_lstm"

  @property
  def rows_above(self) -> float:
    return float("inf")

  @property
  def window_rows(self) -> int:
    """Rows of input the row-by-row mode needs: the type-A convolution's reach and the row."""
    return self.first_kernel // 2 + 1

  def initial_states(self, batch: int, width: int) -> list[tuple[jax.Array, jax.Array]]:
    """The LSTM states above the first row (zeros), one ``(h, c)`` per layer."""
    zeros = jnp.zeros((batch, width, self.hidden), jnp.float32)
    return [(zeros, zeros)] * self.num_layers

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None,
               states: list[tuple[jax.Array, jax.Array]] | None = None,
               row: jax.Array | int = 0):
    """Outputs ``[B, H, W, ...]`` of the image ``x``; or, with ``states`` (the layers' LSTM
    states of the row above), only row ``row`` of the rows ``x`` (``window_rows`` of them,
    or the image when it is smaller): ``(outputs [B, 1, W, ...], the states of that row)``.
    """
    chex.assert_rank(x, 4)
    if self.rnn not in RNNS:
      raise ValueError(f"Unknown rnn {self.rnn!r}; use one of {RNNS}.")
    c = mask_groups(self.channels, self.output)
    h = MaskedConv(self.features, (self.first_kernel,) * 2, "A", channels=c, name="input")(x)
    if states is not None:
      if self.rnn != "row_lstm":
        raise ValueError("Only the Row LSTM has a row-by-row mode: sample the Diagonal BiLSTM "
                         "with the naive sampler.")
      h = jax.lax.dynamic_slice_in_dim(h, row, 1, axis=1)
      new_states = []
    for i in range(self.num_layers):
      if self.rnn == "diagonal_bilstm":
        y = DiagonalBiLSTM(self.hidden, c, name=f"diagonal_bilstm{i}")(h)
      elif states is None:
        y = RowLSTM(self.hidden, self.kernel, c, name=f"row_lstm{i}")(h)
      else:
        y, state = RowLSTM(self.hidden, self.kernel, c, name=f"row_lstm{i}")(h, states[i])
        new_states.append(state)
      y = MaskedConv(self.features, (1, 1), "B", "horizontal", c, name=f"residual{i}")(y)
      if labels is not None:
        y = y + nn.Dense(self.features, name=f"condition{i}")(labels)[:, None, None]
      h = h + y
    out = output_head(h, self.channels, self.num_levels, self.features, self.output,
                      self.num_mixtures)
    return out if states is None else (out, new_states)
