"""Task ``pixelcnn``: autoregressive PixelCNN / gated PixelCNN with exact likelihoods.

``model.architecture`` is ``"pixelcnn"`` (masked convolutions, types A and B),
``"gated_pixelcnn"`` (vertical and horizontal stacks, no blind spot) or ``"independent"``
(the baseline: a learned distribution per pixel, no dependencies); ``model.network`` holds
its size (``features``, ``num_layers``, ``kernel``, ...). Pixels are ``model.pixels``
(``"binary"``: a Bernoulli per pixel as a 2-way softmax; ``"8bit"``: a 256-way softmax per
channel), see ``jaxvision.tasks.generative``. ``model.num_classes`` conditions on the
image-level label (0: unconditional; -1: the source's classes).

The loss is the exact negative log-likelihood in nats per image; the ``likelihood``
evaluator reports it on held-out images (``eval/nll_nats``, ``eval/bits_per_dim``).
``sample`` generates pixel by pixel in ``lax.fori_loop``: ``model.sampler="naive"`` runs the
network on the whole image for every pixel value; ``"fast"`` runs it only on the
``rows_above + 1`` rows the next pixel depends on (a window clamped to the image, so its
zero padding is the image's own), which gives the convolutional networks' logits (they do
not depend on absolute position) and, for the same rng, the same samples. Networks that
see every row above (Row LSTM) or have per-position parameters (the baseline) report
unbounded ``rows_above``: their window is the whole image.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxvision.models.pixelcnn import GatedPixelCNN, IndependentPixels, PixelCNN
from jaxvision.models.pixelrnn import PixelRNN
from jaxvision.tasks import base, generative

SAMPLERS = ("naive", "fast")


@base.register("pixelcnn")
class PixelCNNTask(generative.DiscretePixelsTask):
  """PixelCNN family on quantized pixels; see the module docstring.

  Attributes:
    ARCHITECTURES: ``model.architecture`` -> the network's Flax module.
  """

  ARCHITECTURES = {"pixelcnn": PixelCNN, "gated_pixelcnn": GatedPixelCNN,
                   "independent": IndependentPixels}

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    if config.model.sampler not in SAMPLERS:
      raise ValueError(f"Unknown model.sampler {config.model.sampler!r}; use one of {SAMPLERS}.")

  @functools.cached_property
  def model(self):
    architecture = self.config.model.architecture
    if architecture not in self.ARCHITECTURES:
      raise ValueError(f"Unknown model.architecture {architecture!r} for task "
                       f"{self.config.task!r}; use one of {sorted(self.ARCHITECTURES)}.")
    return self.ARCHITECTURES[architecture](
        channels=self.image_shape[2], num_levels=self.num_levels, num_classes=self.num_classes,
        **dict(self.config.model.network))

  def logits(self, variables, levels: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Logits ``[B, H, W, C, num_levels]`` of every pixel given the pixels before it."""
    return self.model.apply(variables, self.model_input(levels), labels)

  def init_variables(self, rng, batch):
    levels = self.levels(jnp.asarray(batch["image"]))
    return self.model.init(rng, self.model_input(levels), self.class_labels(batch))

  def log_likelihood(self, variables, batch, rng):
    """Exact ``log p(image)`` in nats ``[B]`` (``rng`` unused)."""
    del rng
    levels = self.levels(batch["image"])
    logits = self.logits(variables, levels, self.class_labels(batch))
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, levels)
    return -jnp.sum(nll, axis=(1, 2, 3))

  def loss_fn(self, params, model_state, batch, rng):
    nll = -self.log_likelihood({"params": params, **model_state}, batch, rng).mean()
    return nll, ({"nll_nats": nll, "bits_per_dim": self.bits_per_dim(nll)}, model_state)

  def sample(self, variables, rng, num_samples: int, sampler: str | None = None) -> jax.Array:
    """``num_samples`` uint8 images ``[N, H, W, C]``, generated pixel by pixel.

    Pixel value ``t`` (raster order, channels last) is drawn with ``fold_in(rng, t)``, so the
    ``"naive"`` and ``"fast"`` samplers (``sampler``, default ``model.sampler``) give the
    same images for the same rng. Conditional models cycle through the classes.
    """
    sampler = sampler or self.config.model.sampler
    if sampler not in SAMPLERS:
      raise ValueError(f"Unknown sampler {sampler!r}; use one of {SAMPLERS}.")
    height, width, channels = self.image_shape
    labels = self.sample_labels(num_samples)
    window = height if sampler == "naive" else min(height, self.model.rows_above + 1)

    def draw(t, levels):
      row, rest = jnp.divmod(t, width * channels)
      column, channel = jnp.divmod(rest, channels)
      # The window's rows [start, start + window) hold every row pixel ``t`` depends on.
      start = jnp.clip(row - (window - 1), 0, height - window)
      rows = jax.lax.dynamic_slice_in_dim(levels, start, window, axis=1)
      logits = self.logits(variables, rows, labels)[:, row - start, column, channel]
      value = jax.random.categorical(jax.random.fold_in(rng, t), logits)
      return levels.at[:, row, column, channel].set(value)

    levels = jnp.zeros((num_samples, height, width, channels), jnp.int32)
    levels = jax.lax.fori_loop(0, height * width * channels, draw, levels)
    return self.to_images(levels)


@base.register("pixelrnn")
class PixelRNNTask(PixelCNNTask):
  """PixelRNN (``model.architecture="row_lstm"``): the PixelCNN task's likelihoods and
  samplers with Row LSTM layers (``jaxvision.models.pixelrnn``). Its output depends on every
  row above, so the ``"fast"`` sampler's window is the whole image (no faster than naive)."""

  ARCHITECTURES = {"row_lstm": PixelRNN}
