"""Flax layers shared by the models that are not in ``flax.linen``, each wrapping one op."""

from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops

# ``config.model.dtype`` -> the dtype a model computes in. Parameters, optimizer state,
# BatchNorm statistics and losses stay float32 whatever it is (mixed precision).
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
  """The compute dtype named by ``config.model.dtype`` (``"float32"`` or ``"bfloat16"``)."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"Unknown model.dtype {name!r}; use one of {sorted(COMPUTE_DTYPES)} "
                     "(parameters always stay float32).")
  return COMPUTE_DTYPES[name]


class ConvTranspose(nn.Module):
  """Transposed convolution with PyTorch's ``ConvTranspose2d`` geometry (``ops.conv_transpose``).

  ``flax.linen.ConvTranspose`` pads the stride-dilated input instead, and has no
  ``output_padding``; this layer keeps the sizes of decoders written for PyTorch:
  ``out = (size - 1) * strides - 2 * padding + kernel_size + output_padding``, e.g. 2x
  upsampling with ``kernel_size=3, strides=2, padding=1, output_padding=1`` or
  ``kernel_size=4, strides=2, padding=1``.

  Attributes:
    features: output channels ``C_out``.
    kernel_size: int or ``(kh, kw)``.
    strides: int or pair, the upsampling factor.
    padding: int or pair, rows/columns cropped from each side of the full output.
    output_padding: int or pair, extra rows/columns at the bottom/right, < ``strides``.
    use_bias: add a ``[C_out]`` bias.
    kernel_init: initializer of the ``[kh, kw, C_in, C_out]`` kernel.
    bias_init: initializer of the bias.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: int | Sequence[int] = 0
  output_padding: int | Sequence[int] = 0
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Upsamples a batch.

    Args:
      x: ``[N, H, W, C_in]``.

    Returns:
      ``[N, out_h, out_w, features]``, the promoted dtype of ``x`` and the parameters.
    """
    chex.assert_rank(x, 4)
    kernel_size = ((self.kernel_size,) * 2 if isinstance(self.kernel_size, int)
                   else tuple(self.kernel_size))
    if len(kernel_size) != 2:
      raise ValueError(f"kernel_size must be an int or (kh, kw); got {self.kernel_size!r}.")
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, x.shape[-1], self.features))
    y = ops.conv_transpose(x, kernel, self.strides, self.padding, self.output_padding)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,))
    return y
