"""PixelRNN with Row LSTM layers (van den Oord et al., "Pixel Recurrent Neural Networks", 2016).

A 7 x 7 type-A masked convolution, then Row LSTM layers with residual connections, then the
PixelCNN's 1 x 1 type-B output head. A Row LSTM layer processes the image row by row
(``lax.scan`` from the top): its gates at row ``r`` are an input-to-state 1 x k convolution
of row ``r`` of its input, masked type B (the pixels to the left and, by channel group, the
pixel itself), plus a state-to-state 1 x k convolution of the hidden state of row ``r - 1``
(unmasked: that row is entirely in the past). Its receptive field is a triangle above the
pixel that grows with every row; the output depends on every row above, so ``rows_above``
is unbounded and the fast sampler's window is the whole image.

Logits ``[B, H, W, C, num_levels]``; channel groups as in ``jaxvision.models.pixelcnn``.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.pixelcnn import MaskedConv, output_head


class RowLSTM(nn.Module):
  """One Row LSTM layer: ``[B, H, W, F]`` -> hidden states ``[B, H, W, hidden]``."""

  hidden: int
  kernel: int = 3
  channels: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
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

    zeros = jnp.zeros((batch, width, self.hidden), x.dtype)
    _, hidden = jax.lax.scan(row, (zeros, zeros), jnp.moveaxis(gates_in, 1, 0))
    return jnp.moveaxis(hidden, 0, 1)


class PixelRNN(nn.Module):
  """Row LSTM PixelRNN; see the module docstring.

  Attributes:
    channels, num_levels, num_classes: As ``PixelCNN``.
    features: Residual stream features (a multiple of ``channels``).
    hidden: LSTM state size (a multiple of ``channels``).
    num_layers: Row LSTM layers.
    first_kernel, kernel: The type-A convolution's and the LSTM convolutions' kernel sizes.
  """

  channels: int = 1
  num_levels: int = 2
  features: int = 32
  hidden: int = 32
  num_layers: int = 2
  first_kernel: int = 7
  kernel: int = 3
  num_classes: int = 0

  @property
  def rows_above(self) -> float:
    return float("inf")

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    chex.assert_rank(x, 4)
    c = self.channels
    h = MaskedConv(self.features, (self.first_kernel,) * 2, "A", channels=c, name="input")(x)
    for i in range(self.num_layers):
      y = RowLSTM(self.hidden, self.kernel, c, name=f"row_lstm{i}")(h)
      y = MaskedConv(self.features, (1, 1), "B", "horizontal", c, name=f"residual{i}")(y)
      if labels is not None:
        y = y + nn.Dense(self.features, name=f"condition{i}")(labels)[:, None, None]
      h = h + y
    return output_head(h, c, self.num_levels, self.features)
