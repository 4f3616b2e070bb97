"""Task ``dcgan``: a generator and a discriminator with their own optimizers.

The state is ``{"generator": {params, opt_state}, "discriminator": {params, opt_state},
step}``. Each train step updates the discriminator on a real batch and a generated one
(logistic loss), then the generator against the updated discriminator with the
non-saturating loss ``-log D(G(z))`` (Goodfellow et al. 2014), each with its optimizer
(``config.optimizer`` for the generator, ``config.discriminator_optimizer``). Images are
uint8 ``[B, H, W, C]`` seen as ``x / 127.5 - 1``; ``sample`` returns the generator's images
in [0, 255] (pictures: the ``samples`` evaluator with ``network="generator"``).
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision import optim
from jaxvision.models.dcgan import Discriminator, Generator
from jaxvision.tasks import base


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """``-log D(x) - log(1 - D(G(z)))``, batch mean (``D = sigmoid(logit)``)."""
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """``-log D(G(z))``, batch mean."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


@base.register("dcgan")
class DCGANTask(base.MultiNetworkTask):
  """DCGAN on the multi-network state; see the module docstring."""

  networks = ("generator", "discriminator")
  guarded_metrics = ("generator_loss", "discriminator_loss")

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    if config.data.flip:
      raise ValueError("Set data.flip=False: the DCGAN task reads images as they are.")
    height, _, channels = self.image_shape
    self.modules = {
        "generator": Generator(height, channels, config.model.generator_features),
        "discriminator": Discriminator(config.model.discriminator_features)}
    self.tx = {"generator": optim.make_optimizer(config.optimizer, config.total_steps),
               "discriminator": optim.make_optimizer(config.discriminator_optimizer,
                                                     config.total_steps)}

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")

  @staticmethod
  def to_model(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 127.5 - 1.0

  def latents(self, rng: jax.Array, count: int) -> jax.Array:
    return jax.random.normal(rng, (count, self.config.model.latents))

  def init_state(self, rng, batch):
    images = self.to_model(jnp.asarray(batch["image"]))
    z = self.latents(rng, images.shape[0])
    inputs = {"generator": z, "discriminator": images}
    state = {"step": jnp.zeros((), jnp.int32)}
    for name, key in zip(self.networks, jax.random.split(rng)):
      params = self.modules[name].init(key, inputs[name])["params"]
      state[name] = {"params": params, "opt_state": self.tx[name].init(params)}
    return state

  def generate(self, params, z: jax.Array) -> jax.Array:
    return self.modules["generator"].apply({"params": params}, z)

  def discriminate(self, params, images: jax.Array) -> jax.Array:
    return self.modules["discriminator"].apply({"params": params}, images)

  def train_step(self, state, batch, rng):
    real = self.to_model(batch["image"])
    d_key, g_key = jax.random.split(rng)
    generator, discriminator = state["generator"], state["discriminator"]

    def d_loss(d_params):
      fake = self.generate(generator["params"], self.latents(d_key, real.shape[0]))
      real_logits = self.discriminate(d_params, real)
      fake_logits = self.discriminate(d_params, jax.lax.stop_gradient(fake))
      return discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits)

    def g_loss(g_params, d_params):
      fake = self.generate(g_params, self.latents(g_key, real.shape[0]))
      return non_saturating_generator_loss(self.discriminate(d_params, fake))

    def update(name, network, grads):
      updates, opt_state = self.tx[name].update(grads, network["opt_state"], network["params"])
      return {"params": optax.apply_updates(network["params"], updates), "opt_state": opt_state}

    (d_value, (real_logits, fake_logits)), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
        discriminator["params"])
    discriminator = update("discriminator", discriminator, d_grads)
    # The generator steps against the discriminator it has just been updated to.
    g_value, g_grads = jax.value_and_grad(g_loss)(generator["params"], discriminator["params"])
    generator = update("generator", generator, g_grads)
    metrics = {"discriminator_loss": d_value, "generator_loss": g_value,
               "real_accuracy": jnp.mean(real_logits > 0),
               "fake_accuracy": jnp.mean(fake_logits < 0)}
    return ({"generator": generator, "discriminator": discriminator,
             "step": state["step"] + 1}, metrics)

  def sample(self, variables, rng, num_samples: int) -> jax.Array:
    """``num_samples`` generated images, float ``[N, H, W, C]`` in [0, 255]."""
    images = self.modules["generator"].apply(variables, self.latents(rng, num_samples))
    return (images + 1.0) * 127.5

  def predict(self, variables, images):
    """``{"real_logit": [B]}``: the discriminator's logits for NHWC images (``variables``:
    the discriminator's, ``inference_variables(state, "discriminator")``)."""
    base.validate_images(images, self.image_shape, "predict")
    return {"real_logit": self._predict(variables, jnp.asarray(images))}

  @functools.cached_property
  def _predict(self):
    return jax.jit(lambda variables, images: self.modules["discriminator"].apply(
        variables, self.to_model(images)))
