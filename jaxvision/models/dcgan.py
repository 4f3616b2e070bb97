"""DCGAN generator and discriminator (Radford et al. 2016) for small images.

Both change the resolution by a factor of 4 with two stride-2 (transposed) convolutions, so
image sides must be multiples of 4. No batch normalization: the state holds parameters only.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class Generator(nn.Module):
  """Latents ``[B, latents]`` -> images ``[B, H, W, C]`` in (-1, 1) (``tanh``)."""

  image_size: int
  channels: int = 1
  features: int = 32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    if self.image_size % 4:
      raise ValueError(f"The DCGAN doubles its grid twice: data.image_size={self.image_size} "
                       "must be a multiple of 4.")
    side = self.image_size // 4
    x = nn.relu(nn.Dense(side * side * 2 * self.features, name="project")(z))
    x = x.reshape(z.shape[0], side, side, 2 * self.features)
    x = nn.relu(nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), name="deconv1")(x))
    return jnp.tanh(nn.ConvTranspose(self.channels, (4, 4), strides=(2, 2), name="deconv2")(x))


class Discriminator(nn.Module):
  """Images ``[B, H, W, C]`` in [-1, 1] -> real/fake logits ``[B]``."""

  features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    chex.assert_rank(x, 4)
    x = nn.leaky_relu(nn.Conv(self.features, (4, 4), strides=2, name="conv1")(x), 0.2)
    x = nn.leaky_relu(nn.Conv(2 * self.features, (4, 4), strides=2, name="conv2")(x), 0.2)
    return nn.Dense(1, name="logit")(x.reshape(x.shape[0], -1))[:, 0]
