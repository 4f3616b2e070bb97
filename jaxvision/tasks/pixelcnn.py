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
not depend on absolute position) and, for the same rng, the same samples. Networks with
per-position parameters (the baseline) report unbounded ``rows_above``: their window is the
whole image; the Row LSTM's fast sampler carries its states row by row (``PixelRNNTask``).

``model.output`` is ``"softmax"`` (above) or ``"logistic_mixture"`` (8-bit pixels only):
PixelCNN++'s discretized logistic mixture of ``model.num_mixtures`` components per pixel,
its channels chained by linear coefficients (``jaxvision.tasks.generative``); the masks then
order pixels, not channels, and the samplers draw a whole pixel at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxvision.models.pixelcnn import OUTPUTS, GatedPixelCNN, IndependentPixels, PixelCNN
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
    self.output = config.model.get("output", "softmax")
    self.num_mixtures = config.model.get("num_mixtures", 5)
    if self.output not in OUTPUTS:
      raise ValueError(f"Unknown model.output {self.output!r}; use one of {OUTPUTS}.")
    if self.output == "logistic_mixture":
      if self.num_levels != 256:
        raise ValueError("model.output='logistic_mixture' models 8-bit pixels: set "
                         "model.pixels='8bit' (or model.output='softmax' for binary ones).")
      if self.num_mixtures < 1:
        raise ValueError(f"model.num_mixtures={self.num_mixtures} must be >= 1.")

  @functools.cached_property
  def model(self):
    architecture = self.config.model.architecture
    if architecture not in self.ARCHITECTURES:
      raise ValueError(f"Unknown model.architecture {architecture!r} for task "
                       f"{self.config.task!r}; use one of {sorted(self.ARCHITECTURES)}.")
    return self.ARCHITECTURES[architecture](
        channels=self.image_shape[2], num_levels=self.num_levels, num_classes=self.num_classes,
        output=self.output, num_mixtures=self.num_mixtures, **dict(self.config.model.network))

  def logits(self, variables, levels: jax.Array, labels: jax.Array | None) -> jax.Array:
    """Outputs of every pixel given the pixels before it: logits ``[B, H, W, C, num_levels]``
    (softmax) or the mixture's parameters ``[B, H, W, P]`` (logistic mixture)."""
    return self.model.apply(variables, self.model_input(levels), labels)

  def pixel_log_prob(self, outputs: jax.Array, levels: jax.Array) -> jax.Array:
    """``log p`` of each pixel ``[B, H, W]`` given the network's ``outputs``."""
    if self.output == "logistic_mixture":
      return generative.discretized_logistic_mixture_log_prob(levels, outputs, self.num_mixtures,
                                                              self.num_levels)
    return -optax.softmax_cross_entropy_with_integer_labels(outputs, levels).sum(-1)

  def init_variables(self, rng, batch):
    levels = self.levels(jnp.asarray(batch["image"]))
    return self.model.init(rng, self.model_input(levels), self.class_labels(batch))

  def log_likelihood(self, variables, batch, rng):
    """Exact ``log p(image)`` in nats ``[B]`` (``rng`` unused)."""
    del rng
    levels = self.levels(batch["image"])
    outputs = self.logits(variables, levels, self.class_labels(batch))
    return jnp.sum(self.pixel_log_prob(outputs, levels), axis=(1, 2))

  def loss_fn(self, params, model_state, batch, rng):
    nll = -self.log_likelihood({"params": params, **model_state}, batch, rng).mean()
    return nll, ({"nll_nats": nll, "bits_per_dim": self.bits_per_dim(nll)}, model_state)

  def sample(self, variables, rng, num_samples: int, sampler: str | None = None) -> jax.Array:
    """``num_samples`` uint8 images ``[N, H, W, C]``, generated pixel by pixel.

    Pixel value ``t`` (raster order, channels last; with the logistic mixture, pixel ``t``,
    its channels drawn together) is drawn with ``fold_in(rng, t)``, so the ``"naive"`` and
    ``"fast"`` samplers (``sampler``, default ``model.sampler``) give the same images for
    the same rng. Conditional models cycle through the classes.
    """
    sampler = sampler or self.config.model.sampler
    if sampler not in SAMPLERS:
      raise ValueError(f"Unknown sampler {sampler!r}; use one of {SAMPLERS}.")
    height = self.image_shape[0]
    labels = self.sample_labels(num_samples)
    window = height if sampler == "naive" else min(height, self.model.rows_above + 1)

    def draw(t, levels):
      row, unit = jnp.divmod(t, self.units_per_row)
      # The window's rows [start, start + window) hold every row pixel ``t`` depends on.
      start = jnp.clip(row - (window - 1), 0, height - window)
      rows = jax.lax.dynamic_slice_in_dim(levels, start, window, axis=1)
      outputs = jax.lax.dynamic_index_in_dim(self.logits(variables, rows, labels), row - start,
                                             axis=1, keepdims=False)
      return self.draw_unit(rng, levels, outputs, row, unit)

    levels = jax.lax.fori_loop(0, height * self.units_per_row, draw,
                               self.blank_levels(num_samples))
    return self.to_images(levels)

  # --- sampling's pieces ---------------------------------------------------------------
  @property
  def units_per_row(self) -> int:
    """Draws per image row: pixel values (softmax) or pixels (logistic mixture)."""
    _, width, channels = self.image_shape
    return width if self.output == "logistic_mixture" else width * channels

  def blank_levels(self, num_samples: int) -> jax.Array:
    return jnp.zeros((num_samples, *self.image_shape), jnp.int32)

  def draw_unit(self, rng, levels: jax.Array, outputs: jax.Array, row: jax.Array,
                unit: jax.Array) -> jax.Array:
    """``levels`` with draw ``unit`` of image row ``row`` set, from that row's ``outputs``
    ``[N, W, ...]``; its key is ``fold_in(rng, row * units_per_row + unit)``."""
    key = jax.random.fold_in(rng, row * self.units_per_row + unit)
    if self.output == "logistic_mixture":
      value = generative.sample_discretized_logistic_mixture(
          key, outputs[:, unit], self.image_shape[2], self.num_mixtures, self.num_levels)
      return levels.at[:, row, unit].set(value)
    column, channel = jnp.divmod(unit, self.image_shape[2])
    value = jax.random.categorical(key, outputs[:, column, channel])
    return levels.at[:, row, column, channel].set(value)


@base.register("pixelrnn")
class PixelRNNTask(PixelCNNTask):
  """PixelRNN (``model.architecture="row_lstm"`` or ``"diagonal_bilstm"``): the PixelCNN
  task's likelihoods and samplers with Row LSTM or Diagonal BiLSTM layers
  (``jaxvision.models.pixelrnn``). The Row LSTM's output depends on every row above, so its
  ``"fast"`` sampler carries the LSTM states down the image instead: each
  draw runs the layers on the current row only, from the states of the row above (and the
  type-A convolution's few input rows); a finished row's states are computed once."""

  ARCHITECTURES = {"row_lstm": PixelRNN,
                   "diagonal_bilstm": functools.partial(PixelRNN, rnn="diagonal_bilstm")}

  def sample(self, variables, rng, num_samples: int, sampler: str | None = None) -> jax.Array:
    sampler = sampler or self.config.model.sampler
    if sampler != "fast" or self.model.rnn != "row_lstm":
      # The Diagonal BiLSTM's fast sampler is the naive loop (a window of the whole image).
      return super().sample(variables, rng, num_samples, sampler)
    height, width, _ = self.image_shape
    labels = self.sample_labels(num_samples)
    window = min(height, self.model.window_rows)

    def row_outputs(levels, states, row):
      start = jnp.clip(row - (window - 1), 0, height - window)
      rows = jax.lax.dynamic_slice_in_dim(levels, start, window, axis=1)
      outputs, states = self.model.apply(variables, self.model_input(rows), labels, states,
                                         row - start)
      return outputs[:, 0], states

    def sample_row(row, carry):
      levels, states = carry

      def draw(unit, levels):
        outputs, _ = row_outputs(levels, states, row)
        return self.draw_unit(rng, levels, outputs, row, unit)

      levels = jax.lax.fori_loop(0, self.units_per_row, draw, levels)
      _, states = row_outputs(levels, states, row)  # the finished row's states
      return levels, states

    states = self.model.initial_states(num_samples, width)
    levels, _ = jax.lax.fori_loop(0, height, sample_row, (self.blank_levels(num_samples), states))
    return self.to_images(levels)
