"""Task ``vae``: a variational autoencoder with ELBO training and importance-weighted NLL.

``q(z | x) = N(mean(x), diag(exp(log_variance(x))))``, ``p(z) = N(0, I)``; the decoder
``p(x | z)`` is a Bernoulli per pixel (``model.pixels="binary"``) or a discretized logistic
per pixel channel (``"8bit"``; ``model.output="logistic_mixture"``: PixelCNN++'s mixture of
``model.num_mixtures`` per pixel instead), see ``jaxvision.tasks.generative``. Training maximizes
``ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))`` (one reparameterized sample, analytic
KL) with two defences against posterior collapse:

* KL annealing: the KL weight rises linearly from 0 to 1 over ``model.kl_warmup_steps``;
* free bits (Kingma et al. 2016): the KL of each latent dimension, averaged over the batch,
  counts as at least ``model.free_bits`` nats (0: off).

Held-out numbers, in nats per image: the ``likelihood`` evaluator's ``nll_nats`` /
``bits_per_dim`` are the IWAE bound (Burda et al. 2016) ``-log mean_k p(x, z_k) / q(z_k | x)``
with ``model.iwae_samples`` samples (evaluated ``model.iwae_chunk`` at a time); the
``batches`` evaluator's ``elbo_nats`` is the ELBO (analytic KL; the reconstruction term from
one sample drawn with ``fold_in(key(seed), image_id)``, the same for every evaluation), with
pictures of reconstructions and of a latent interpolation. ``sample`` decodes ``z ~ p(z)``
into the decoder's mean image (``model.sample_pixels="mean"``, the default: what the sample
grids show) or into pixels drawn from ``p(x | z)`` (``"draw"``: the model's samples proper,
binary or 8-bit like the held-out images, which a Frechet distance should compare).
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision import viz
from jaxvision.models.pixelcnn import mixture_num_params
from jaxvision.models.vae import VAE
from jaxvision.tasks import base, generative

INTERPOLATION_STEPS = 8
# What ``sample`` returns: the decoder's mean image, or pixels drawn from p(x | z).
SAMPLE_PIXELS = ("mean", "draw")


def gaussian_log_density(z: jax.Array, mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """``log N(z; mean, diag(exp(log_variance)))`` summed over the last axis."""
  return -0.5 * jnp.sum(math.log(2 * math.pi) + log_variance
                        + (z - mean) ** 2 * jnp.exp(-log_variance), axis=-1)


def gaussian_kl(mean: jax.Array, log_variance: jax.Array) -> jax.Array:
  """``KL(N(mean, exp(log_variance)) || N(0, 1))`` per dimension (elementwise)."""
  return 0.5 * (jnp.exp(log_variance) + mean ** 2 - 1.0 - log_variance)


class ElboEvaluator(base.Evaluator):
  """Mean ELBO over the non-padding rows: ``elbo_nats`` and ``elbo_bits_per_dim``."""

  def __init__(self, num_dims: int):
    self._num_dims = num_dims
    self._total, self._count = 0.0, 0

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    keep = np.asarray(batch["example_mask"], bool)
    self._total += float(np.sum(outputs["elbo"][keep], dtype=np.float64))
    self._count += int(keep.sum())

  def result(self) -> dict[str, float]:
    elbo = self._total / max(self._count, 1)
    return {"elbo_nats": elbo, "elbo_bits_per_dim": -elbo / (self._num_dims * math.log(2)),
            "num_examples": float(self._count)}


@base.register("vae")
class VAETask(generative.DiscretePixelsTask):
  """VAE on quantized pixels; see the module docstring."""

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    samples, chunk = config.model.iwae_samples, config.model.iwae_chunk
    if samples < 1 or chunk < 1 or samples % chunk:
      raise ValueError(f"model.iwae_samples={samples} must be a positive multiple of "
                       f"model.iwae_chunk={chunk}.")
    if config.model.free_bits < 0 or config.model.kl_warmup_steps < 0:
      raise ValueError("model.free_bits and model.kl_warmup_steps must be >= 0.")
    if self.num_classes:
      raise ValueError("The VAE is unconditional: set model.num_classes=0.")
    # 8-bit decoders: "logistic" (one discretized logistic per pixel channel) or
    # "logistic_mixture" (PixelCNN++'s mixture per pixel, model.num_mixtures components).
    self.output = config.model.get("output", "logistic")
    self.num_mixtures = config.model.get("num_mixtures", 5)
    if self.output not in ("logistic", "logistic_mixture"):
      raise ValueError(f"Unknown model.output {self.output!r} of the VAE; use 'logistic' or "
                       "'logistic_mixture' (8-bit pixels).")
    if self.output == "logistic_mixture" and (self.num_levels != 256 or self.num_mixtures < 1):
      raise ValueError("model.output='logistic_mixture' needs model.pixels='8bit' and "
                       "model.num_mixtures >= 1.")
    self.sample_pixels = config.model.get("sample_pixels", "mean")
    if self.sample_pixels not in SAMPLE_PIXELS:
      raise ValueError(f"Unknown model.sample_pixels {self.sample_pixels!r} of the VAE; use "
                       f"one of {SAMPLE_PIXELS}.")

  @functools.cached_property
  def model(self) -> VAE:
    height, _, channels = self.image_shape
    if self.output == "logistic_mixture":  # one block of parameters per pixel
      channels, per_channel = 1, mixture_num_params(channels, self.num_mixtures)
    else:
      per_channel = 1 if self.num_levels == 2 else 2
    return VAE(image_size=height, channels=channels, outputs_per_channel=per_channel,
               latents=self.config.model.latents, features=self.config.model.features,
               hidden=self.config.model.hidden)

  # --- the model's pieces --------------------------------------------------------------
  def encode(self, variables, levels: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.model.apply(variables, self.model_input(levels), method=VAE.encode)

  def decode(self, variables, z: jax.Array) -> jax.Array:
    return self.model.apply(variables, z, method=VAE.decode)

  def reconstruction_log_prob(self, params: jax.Array, levels: jax.Array) -> jax.Array:
    """``log p(x | z)`` per image ``[B]`` from decoder outputs ``[B, H, W, C, P]``."""
    if self.output == "logistic_mixture":
      log_p = generative.discretized_logistic_mixture_log_prob(levels, params[..., 0, :],
                                                               self.num_mixtures)
      return jnp.sum(log_p, axis=(1, 2))
    if self.num_levels == 2:
      log_p = -optax.sigmoid_binary_cross_entropy(params[..., 0], levels.astype(jnp.float32))
    else:
      log_p = generative.discretized_logistic_log_prob(levels, params[..., 0], params[..., 1],
                                                       self.num_levels)
    return jnp.sum(log_p, axis=(1, 2, 3))

  def mean_image(self, params: jax.Array) -> jax.Array:
    """Decoder outputs -> the mean image, float in [0, 255] ``[B, H, W, C]``."""
    if self.output == "logistic_mixture":
      mean = generative.discretized_logistic_mixture_mean(params[..., 0, :], self.image_shape[2],
                                                          self.num_mixtures)
      return 127.5 * (jnp.clip(mean, -1.0, 1.0) + 1.0)
    if self.num_levels == 2:
      return 255.0 * jax.nn.sigmoid(params[..., 0])
    return 127.5 * (jnp.clip(params[..., 0], -1.0, 1.0) + 1.0)

  def draw_image(self, rng: jax.Array, params: jax.Array) -> jax.Array:
    """Decoder outputs -> an image drawn from ``p(x | z)``, float levels in [0, 255]
    ``[B, H, W, C]`` (0 or 255 for binary pixels)."""
    if self.output == "logistic_mixture":
      levels = generative.sample_discretized_logistic_mixture(
          rng, params[..., 0, :], self.image_shape[2], self.num_mixtures)
      return levels.astype(jnp.float32)
    if self.num_levels == 2:
      return 255.0 * jax.random.bernoulli(rng, jax.nn.sigmoid(params[..., 0])).astype(
          jnp.float32)
    levels = generative.sample_discretized_logistic(rng, params[..., 0], params[..., 1],
                                                    self.num_levels)
    return levels * (255.0 / (self.num_levels - 1))

  def log_weights(self, variables, levels: jax.Array, noise: jax.Array) -> jax.Array:
    """``log p(x, z) - log q(z | x)`` ``[K, B]`` for ``z = mean + std * noise`` (noise
    ``[K, B, latents]``)."""
    mean, log_variance = self.encode(variables, levels)

    def one(eps):
      z = mean + jnp.exp(0.5 * log_variance) * eps
      return (self.reconstruction_log_prob(self.decode(variables, z), levels)
              + gaussian_log_density(z, 0.0, 0.0) - gaussian_log_density(z, mean, log_variance))

    return jax.vmap(one)(noise)

  def elbo_terms(self, variables, levels: jax.Array, noise: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
    """One-sample reconstruction ``log p(x | z)`` ``[B]`` and the KL per latent ``[B, D]``."""
    mean, log_variance = self.encode(variables, levels)
    z = mean + jnp.exp(0.5 * log_variance) * noise
    return (self.reconstruction_log_prob(self.decode(variables, z), levels),
            gaussian_kl(mean, log_variance))

  # --- training ------------------------------------------------------------------------
  def init_variables(self, rng, batch):
    return self.model.init(rng, self.model_input(self.levels(jnp.asarray(batch["image"]))))

  def kl_weight(self, step: jax.Array) -> jax.Array:
    warmup = self.config.model.kl_warmup_steps
    if not warmup:
      return jnp.ones((), jnp.float32)
    return jnp.minimum(1.0, step.astype(jnp.float32) / warmup)

  # Its step puts the KL weight's step into the batch, which micro-batches cannot split.
  accumulates_gradients = False

  def train_step(self, state, batch, rng):
    # The KL weight follows the step: the loss reads it from the batch.
    return super().train_step(state, {**batch, "step": state["step"]}, rng)

  def loss_fn(self, params, model_state, batch, rng):
    levels = self.levels(batch["image"])
    noise = jax.random.normal(rng, (levels.shape[0], self.config.model.latents))
    reconstruction, kl = self.elbo_terms({"params": params}, levels, noise)
    kl_per_latent = kl.mean(axis=0)
    kl_term = jnp.sum(jnp.maximum(kl_per_latent, self.config.model.free_bits))
    beta = self.kl_weight(batch["step"])
    loss = -reconstruction.mean() + beta * kl_term
    elbo = (reconstruction - kl.sum(-1)).mean()
    metrics = {"elbo_nats": elbo, "bits_per_dim": self.bits_per_dim(-elbo),
               "reconstruction_nats": reconstruction.mean(), "kl_nats": kl.sum(-1).mean(),
               "kl_weight": beta,
               "active_latents": jnp.sum(kl_per_latent > 0.01).astype(jnp.float32)}
    return loss, (metrics, model_state)

  # --- evaluation ----------------------------------------------------------------------
  def log_likelihood(self, variables, batch, rng):
    """The IWAE bound on ``log p(x)`` ``[B]`` with ``model.iwae_samples`` samples."""
    levels = self.levels(batch["image"])
    samples, chunk = self.config.model.iwae_samples, self.config.model.iwae_chunk
    latents = self.config.model.latents

    def chunk_weights(index):
      noise = jax.random.normal(jax.random.fold_in(rng, index), (chunk, levels.shape[0], latents))
      return self.log_weights(variables, levels, noise)

    weights = jax.lax.map(chunk_weights, jnp.arange(samples // chunk))
    weights = weights.reshape(samples, levels.shape[0])
    return jax.nn.logsumexp(weights, axis=0) - math.log(samples)

  def eval_outputs(self, variables, batch):
    levels = self.levels(batch["image"])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(self.config.seed), i))(
        batch["image_id"])
    noise = jax.vmap(lambda key: jax.random.normal(key, (self.config.model.latents,)))(keys)
    reconstruction, kl = self.elbo_terms(variables, levels, noise)
    mean, _ = self.encode(variables, levels)
    # A straight line between each image's posterior mean and the next image's.
    t = jnp.linspace(0.0, 1.0, INTERPOLATION_STEPS)[:, None, None]
    path = (1 - t) * mean[None] + t * jnp.roll(mean, -1, axis=0)[None]
    interpolation = jax.vmap(lambda z: self.mean_image(self.decode(variables, z)))(path)
    return {"elbo": reconstruction - kl.sum(-1),
            "reconstruction": self.mean_image(self.decode(variables, mean)),
            "interpolation": jnp.moveaxis(interpolation, 0, 1)}

  def make_evaluator(self) -> ElboEvaluator:
    return ElboEvaluator(self.num_dims)

  def sample(self, variables, rng, num_samples: int) -> jax.Array:
    """Images ``[N, H, W, C]`` (float in [0, 255]) of ``z ~ N(0, I)``: decoder means, or
    pixels drawn from ``p(x | z)`` (``model.sample_pixels``)."""
    z = jax.random.normal(rng, (num_samples, self.config.model.latents))
    params = self.decode(variables, z)
    if self.sample_pixels == "draw":
      return self.draw_image(jax.random.fold_in(rng, 1), params)
    return self.mean_image(params)

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Originals above their reconstructions; rows of latent interpolations."""
    del variables
    count = min(len(batch["image"]), self.config.get("num_pictures", 8))

    def rgb(images):
      images = np.clip(np.round(np.asarray(images)), 0, 255).astype(np.uint8)
      return list(np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images)

    pairs = rgb(batch["image"][:count]) + rgb(outputs["reconstruction"][:count])
    rows = outputs["interpolation"][:count].reshape(-1, *self.image_shape)
    return [viz.save_image_grid(pairs, f"{directory}/step_{step:07d}_reconstructions.png",
                                columns=count),
            viz.save_image_grid(rgb(rows), f"{directory}/step_{step:07d}_interpolations.png",
                                columns=INTERPOLATION_STEPS)]
