"""Convolutional VAE: an encoder to a diagonal Gaussian posterior and a decoder to pixel
distribution parameters.

The encoder halves the resolution twice (stride-2 3 x 3 convolutions), so image sides must be
multiples of 4; the decoder mirrors it with transposed convolutions.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp


class Encoder(nn.Module):
  """Images ``[B, H, W, C]`` -> posterior ``(mean, log_variance)``, each ``[B, latents]``."""

  latents: int
  features: int = 32
  hidden: int = 256

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    chex.assert_rank(x, 4)
    x = nn.relu(nn.Conv(self.features, (3, 3), strides=2, name="conv1")(x))
    x = nn.relu(nn.Conv(2 * self.features, (3, 3), strides=2, name="conv2")(x))
    x = nn.relu(nn.Dense(self.hidden, name="hidden")(x.reshape(x.shape[0], -1)))
    mean, log_variance = jnp.split(nn.Dense(2 * self.latents, name="posterior")(x), 2, axis=-1)
    return mean, log_variance


class Decoder(nn.Module):
  """Latents ``[B, latents]`` -> ``outputs`` parameters per pixel ``[B, H, W, outputs]``."""

  image_size: int
  outputs: int
  features: int = 32
  hidden: int = 256

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    side = self.image_size // 4
    x = nn.relu(nn.Dense(self.hidden, name="hidden")(z))
    x = nn.relu(nn.Dense(side * side * 2 * self.features, name="grid")(x))
    x = x.reshape(z.shape[0], side, side, 2 * self.features)
    x = nn.relu(nn.ConvTranspose(self.features, (3, 3), strides=(2, 2), name="deconv1")(x))
    return nn.ConvTranspose(self.outputs, (3, 3), strides=(2, 2), name="deconv2")(x)


class VAE(nn.Module):
  """Encoder and decoder; ``__call__`` (used by ``init``) runs both on the posterior mean.

  Attributes:
    image_size: Image height and width (a multiple of 4).
    channels: Image channels.
    outputs_per_channel: Decoder parameters per pixel channel (1 Bernoulli logit; 2 for the
      discretized logistic's mean and log-scale).
    latents, features, hidden: Sizes.
  """

  image_size: int
  channels: int = 1
  outputs_per_channel: int = 1
  latents: int = 16
  features: int = 32
  hidden: int = 256

  def setup(self):
    if self.image_size % 4:
      raise ValueError(f"The VAE halves the image twice: data.image_size={self.image_size} must "
                       "be a multiple of 4.")
    self.encoder = Encoder(self.latents, self.features, self.hidden)
    self.decoder = Decoder(self.image_size, self.channels * self.outputs_per_channel,
                           self.features, self.hidden)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> jax.Array:
    """``[B, H, W, C, outputs_per_channel]`` pixel distribution parameters."""
    out = self.decoder(z)
    return out.reshape(*out.shape[:3], self.channels, self.outputs_per_channel)

  def __call__(self, x: jax.Array) -> jax.Array:
    mean, _ = self.encode(x)
    return self.decode(mean)
