"""What the likelihood-based generative tasks share: quantized pixels and their log-likelihoods.

Images are modelled as discrete pixels ``[B, H, W, C]`` with ``L`` levels each
(``model.pixels``):

* ``"binary"`` (L = 2): grey images binarized in the pipeline (``model.binarize``):
  ``"threshold"`` sets a pixel when its value is > 127; ``"stochastic"`` draws it on with
  probability ``value / 255``: a fresh draw every time a training example is read (each epoch
  sees new binarizations), and a fixed draw per image (seeded by ``(data.seed, image_id)``)
  for evaluation, so held-out likelihoods are always measured on the same binary images.
  Rows hold uint8 ``{0, 255}``.
* ``"8bit"`` (L = 256): the uint8 values as they are.

Likelihoods are exact log-probabilities of the discrete pixels in nats per image
(``log_likelihood``); ``bits_per_dim = nll_nats / (H * W * C * ln 2)``.

8-bit pixels can be modelled by a 256-way softmax per channel or by PixelCNN++'s
discretized logistic mixture per pixel (:func:`discretized_logistic_mixture_log_prob`,
:func:`sample_discretized_logistic_mixture`), both exact pmfs over the 256 levels.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import data as data_lib
from jaxvision.data import mnist_subset
from jaxvision.models.pixelcnn import mixture_num_params
from jaxvision.tasks import base

PIXELS = {"binary": 2, "8bit": 256}
BINARIZE = ("threshold", "stochastic")


def binarize(image: np.ndarray, rng: np.random.Generator | None, mode: str,
             seed: int, image_id: int) -> np.ndarray:
  """uint8 grey ``image`` -> uint8 ``{0, 255}`` (see the module docstring for ``mode``).

  Stochastic binarization without a generator (evaluation) draws from one seeded by
  ``(seed, image_id)``: the same binary image every time.
  """
  if mode == "threshold":
    on = image > 127
  elif mode == "stochastic":
    if rng is None:
      rng = np.random.default_rng([seed, image_id & 0xFFFFFFFF])
    on = rng.random(image.shape) < image.astype(np.float64) / 255.0
  else:
    raise ValueError(f"Unknown model.binarize {mode!r}; use one of {BINARIZE}.")
  return on.astype(np.uint8) * 255


class DiscretePixelsTask(base.SupervisedTask):
  """A SupervisedTask on quantized pixels: preprocessing, validation, bits per dimension.

  Subclasses define the model and ``log_likelihood``; the loss is the mean negative
  log-likelihood (or a bound on it) per image, in nats.
  """

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    pixels = config.model.pixels
    if pixels not in PIXELS:
      raise ValueError(f"Unknown model.pixels {pixels!r}; use one of {sorted(PIXELS)}.")
    if pixels == "binary":
      if config.model.binarize not in BINARIZE:
        raise ValueError(f"Unknown model.binarize {config.model.binarize!r}; use one of "
                         f"{BINARIZE}.")
      if config.data.channels != 1:
        raise ValueError("Binarized images are grey: set data.channels=1 (got "
                         f"{config.data.channels}) or model.pixels='8bit'.")
    if config.data.flip:
      raise ValueError("Likelihood models see the images as they are: set data.flip=False.")
    self.num_levels = PIXELS[pixels]

  @property
  def num_dims(self) -> int:
    """Pixel values per image, ``H * W * C``."""
    height, width, channels = self.image_shape
    return height * width * channels

  @property
  def num_classes(self) -> int:
    """Classes the model is conditioned on (``model.num_classes``: 0 unconditional; -1 the
    source's classes)."""
    count = self.config.model.get("num_classes", 0)
    return len(self.class_names) if count == -1 else count

  # --- data ----------------------------------------------------------------------------
  def preprocess(self, example, rng):
    row = self._standard_preprocess(example, rng)
    if self.num_levels == 2:
      row["image"] = binarize(row["image"], rng, self.config.model.binarize,
                              self.config.data.seed, int(row["image_id"]))
    return row

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")
    images = np.asarray(batch["image"])
    if self.num_levels == 2 and not np.all((images == 0) | (images == 255)):
      raise ValueError("model.pixels='binary' needs images of 0 and 255 only (binarized by "
                       "the task's preprocess); got other values.")
    if self.num_classes and "label" not in batch:
      raise ValueError(f"A class-conditional model (model.num_classes={self.num_classes}) needs "
                       "the image-level 'label': add it to data.features.")

  def levels(self, images: jax.Array) -> jax.Array:
    """uint8 images -> int32 pixel levels in ``[0, num_levels)``."""
    images = images.astype(jnp.int32)
    return images // 255 if self.num_levels == 2 else images

  def to_images(self, levels: jax.Array) -> jax.Array:
    """Pixel levels -> uint8 images (binary 1 -> 255)."""
    scale = 255 if self.num_levels == 2 else 1
    return (levels * scale).astype(jnp.uint8)

  def model_input(self, levels: jax.Array) -> jax.Array:
    """Pixel levels -> float32 network input in [-1, 1]."""
    return levels.astype(jnp.float32) * (2.0 / (self.num_levels - 1)) - 1.0

  def class_labels(self, batch: Mapping[str, Any]) -> jax.Array | None:
    """One-hot labels ``[B, num_classes]`` of a conditional model, None otherwise."""
    if not self.num_classes:
      return None
    return jax.nn.one_hot(batch["label"], self.num_classes)

  def sample_labels(self, num_samples: int) -> jax.Array | None:
    """One-hot labels for samples of a conditional model: the classes in turn."""
    if not self.num_classes:
      return None
    return jax.nn.one_hot(jnp.arange(num_samples) % self.num_classes, self.num_classes)

  def bits_per_dim(self, nll_nats: jax.Array) -> jax.Array:
    return nll_nats / (self.num_dims * np.log(2.0))

  @functools.cached_property
  def _predict(self):
    return jax.jit(self.log_likelihood)

  def predict(self, variables, images, labels=None) -> dict[str, jax.Array]:
    """``log_likelihood [B]`` (nats; a bound for the VAE) of NHWC uint8 images (binarized
    ones for binary pixels); ``labels [B]`` (class indices) for a conditional model."""
    base.validate_images(images, self.image_shape, "predict")
    batch = {"image": jnp.asarray(images)}
    if self.num_classes:
      if labels is None:
        raise ValueError(f"This model is conditioned on {self.num_classes} classes: pass "
                         "predict(variables, images, labels).")
      batch["label"] = jnp.asarray(labels)
    return {"log_likelihood": self._predict(variables, batch, jax.random.key(0))}


def pixels_data_config(**overrides: Any):
  """``config.data`` of a likelihood model: grey 28 x 28 shapes, unflipped, image and label.

  ``overrides`` replace any field of ``jaxvision.data.data_config``.
  """
  defaults = dict(name="shapes", image_size=28, channels=1, mean=(0.5,), std=(0.5,),
                  features=("image", "label"), flip=False, num_train=20000,
                  num_validation=1000, num_test=1000)
  return data_lib.data_config(**{**defaults, **overrides})


def mnist_data_config(npz: str = "", **overrides: Any):
  """``config.data`` of the ``configs/*_mnist.py`` configs: TFDS ``mnist`` (prepared in
  array_record), or with ``npz`` the 5000 real digits of ``jaxvision.data.mnist_subset`` (the
  ``arrays`` source, its train / test rows)."""
  if not npz:
    return pixels_data_config(name="tfds:mnist", **overrides)
  splits = {split: list(bounds) for split, bounds in mnist_subset.SPLITS.items()}
  return pixels_data_config(name="arrays", path=npz, splits=splits, **overrides)


def mnist_config_arg(arg: str | None, name: str, variants: tuple[str, ...]
                     ) -> tuple[set[str], str]:
  """A ``configs/*_mnist.py`` ``:arg``: comma-separated ``variants`` (each at most once) and
  at most one ``npz=FILE`` (:func:`mnist_data_config`'s file) -> ``(variants chosen, FILE or
  "")``.
  ``name`` is the config's, for the error message."""
  parts = arg.split(",") if arg else []
  npz = [part[len("npz="):] for part in parts if part.startswith("npz=")]
  chosen = {part for part in parts if not part.startswith("npz=")}
  if chosen - set(variants) or len(chosen) + len(npz) != len(parts) or len(npz) > 1 or "" in npz:
    raise ValueError(f"Unknown variant(s) {arg!r} of {name}; use "
                     f"{', '.join(repr(v) for v in variants)}, 'npz=FILE' (comma-separated).")
  return chosen, (npz[0] if npz else "")


def config_variant(arg: str | None, name: str,
                   variants: tuple[str, ...] = ("quick",)) -> tuple[str, str]:
  """A generative config's ``:arg``: ``[variant][,features=DIR]`` -> ``(variant, DIR)``.

  ``features=DIR`` names the workdir of a trained run whose network gives the features of
  the ``frechet`` evaluator (e.g. ``configs/dcgan_shapes.py:features=/tmp/cl`` or
  ``configs/vae_shapes.py:quick,features=/tmp/cl``); ``""`` when absent. ``name`` is the
  config's, for the error message.
  """
  variant, feature_workdir = "", ""
  for part in (arg or "").split(","):
    if part.startswith("features="):
      feature_workdir = part[len("features="):]
    elif part in variants and not variant:
      variant = part
    elif part:
      raise ValueError(f"Unknown variant {arg!r} of {name}; use [{'|'.join(variants)}]"
                       "[,features=DIR] (DIR: the Frechet distance's feature run).")
  return variant, feature_workdir


def discretized_logistic_log_prob(levels: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                  num_levels: int = 256) -> jax.Array:
  """``log P(levels)`` under a logistic of ``mean``/``exp(log_scale)`` on [-1, 1], discretized
  into ``num_levels`` bins (PixelCNN++); the end bins take the tails. Elementwise."""
  x = levels.astype(jnp.float32) * (2.0 / (num_levels - 1)) - 1.0
  inverse_scale = jnp.exp(-log_scale)
  half_bin = 1.0 / (num_levels - 1)
  upper = inverse_scale * (x - mean + half_bin)
  lower = inverse_scale * (x - mean - half_bin)
  log_cdf_upper = jax.nn.log_sigmoid(upper)  # log P(X <= upper edge): the first bin
  log_survival_lower = -jax.nn.softplus(lower)  # log P(X > lower edge): the last bin
  # log(sigmoid(upper) - sigmoid(lower)), stable: sigmoid(a) - sigmoid(b) = ...
  middle = (log_cdf_upper + jnp.log(-jnp.expm1(lower - upper)) + jax.nn.log_sigmoid(-lower))
  return jnp.where(levels == 0, log_cdf_upper,
                   jnp.where(levels == num_levels - 1, log_survival_lower, middle))


def sample_discretized_logistic(rng: jax.Array, mean: jax.Array, log_scale: jax.Array,
                                num_levels: int = 256) -> jax.Array:
  """Levels (float, ``0..num_levels - 1``) drawn from :func:`discretized_logistic_log_prob`:
  a logistic draw on [-1, 1] rounded to the nearest level, the end levels taking the tails
  (so level ``l``'s probability is the logistic's mass on its bin, the pmf). Elementwise."""
  value = mean + jnp.exp(log_scale) * jax.random.logistic(rng, jnp.shape(mean))
  return jnp.clip(jnp.round((value + 1.0) * (num_levels - 1) / 2.0), 0, num_levels - 1)


# --- the discretized logistic mixture (PixelCNN++) ---------------------------------------
MIN_LOG_SCALE = -7.0  # PixelCNN++'s floor: a bin of width 2/255 still gets a finite density


def _split_mixture(params: jax.Array, channels: int, num_mixtures: int):
  """``[..., P]`` -> logits ``[..., K]``, means and log-scales ``[..., C, K]``, coefficients
  ``[..., C(C-1)/2, K]`` (pair ``(c, j)``, ``j < c``, at index ``c(c-1)/2 + j``)."""
  k, c = num_mixtures, channels
  chex.assert_axis_dimension(params, -1, mixture_num_params(c, k))
  lead = params.shape[:-1]
  logits = params[..., :k]
  means = params[..., k:k + c * k].reshape(*lead, c, k)
  log_scales = jnp.maximum(params[..., k + c * k:k + 2 * c * k].reshape(*lead, c, k),
                           MIN_LOG_SCALE)
  coeffs = jnp.tanh(params[..., k + 2 * c * k:].reshape(*lead, c * (c - 1) // 2, k))
  return logits, means, log_scales, coeffs


def _channel_means(means: jax.Array, coeffs: jax.Array, x: jax.Array) -> jax.Array:
  """Means ``[..., C, K]`` shifted by the earlier channels' values ``x [..., C]`` (in [-1, 1]):
  ``mean_c + sum_{j < c} coeff_{c, j} * x_j``."""
  channels = means.shape[-2]
  shifted = [means[..., 0, :]]
  for c in range(1, channels):
    start = c * (c - 1) // 2
    shift = sum(coeffs[..., start + j, :] * x[..., j, None] for j in range(c))
    shifted.append(means[..., c, :] + shift)
  return jnp.stack(jnp.broadcast_arrays(*shifted), axis=-2)


def discretized_logistic_mixture_log_prob(levels: jax.Array, params: jax.Array,
                                          num_mixtures: int, num_levels: int = 256
                                          ) -> jax.Array:
  """Exact ``log P(pixel)`` ``[...]`` of pixels ``levels [..., C]`` (ints in
  ``[0, num_levels)``) under PixelCNN++'s discretized logistic mixture (Salimans et al.
  2017) with parameters ``params [..., P]`` (:func:`mixture_num_params`).

  A component picks all channels of a pixel: ``P(x) = sum_k pi_k prod_c P_k(x_c | x_<c)``,
  each factor a :func:`discretized_logistic_log_prob` whose mean is shifted linearly by the
  pixel's earlier channels (their discrete values, so the pmf sums to 1 over every pixel).
  The sum over components is a log-sum-exp.
  """
  channels = levels.shape[-1]
  logits, means, log_scales, coeffs = _split_mixture(params, channels, num_mixtures)
  x = levels.astype(jnp.float32) * (2.0 / (num_levels - 1)) - 1.0
  means = _channel_means(means, coeffs, x)
  log_p = discretized_logistic_log_prob(levels[..., None], means, log_scales, num_levels)
  return jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_p.sum(-2), axis=-1)


def sample_discretized_logistic_mixture(rng: jax.Array, params: jax.Array, channels: int,
                                        num_mixtures: int, num_levels: int = 256) -> jax.Array:
  """Pixels ``[..., C]`` (int32 levels) drawn from :func:`discretized_logistic_mixture_log_prob`.

  A component from its logits, then the channels in order, each a
  :func:`sample_discretized_logistic` draw; the next channel's mean uses the drawn level.
  """
  logits, means, log_scales, coeffs = _split_mixture(params, channels, num_mixtures)
  component_key, *channel_keys = jax.random.split(rng, channels + 1)
  component = jax.nn.one_hot(jax.random.categorical(component_key, logits), num_mixtures)
  levels = []
  x = jnp.zeros((*params.shape[:-1], channels), jnp.float32)
  for c in range(channels):
    mean = jnp.sum(_channel_means(means, coeffs, x)[..., c, :] * component, -1)
    log_scale = jnp.sum(log_scales[..., c, :] * component, -1)
    level = sample_discretized_logistic(channel_keys[c], mean, log_scale, num_levels)
    levels.append(level.astype(jnp.int32))
    x = x.at[..., c].set(level * (2.0 / (num_levels - 1)) - 1.0)
  return jnp.stack(levels, axis=-1)


def discretized_logistic_mixture_mean(params: jax.Array, channels: int,
                                      num_mixtures: int) -> jax.Array:
  """The mixture's mean pixel ``[..., C]`` in [-1, 1] units, for pictures: per component the
  logistics' means chained through the coefficients (the tails' clipping at the end bins
  and the rounding ignored), weighted by the components' probabilities."""
  logits, means, _, coeffs = _split_mixture(params, channels, num_mixtures)
  x = jnp.zeros((*params.shape[:-1], channels, num_mixtures), jnp.float32)
  for c in range(channels):
    start = c * (c - 1) // 2
    x = x.at[..., c, :].set(means[..., c, :] + sum(coeffs[..., start + j, :] * x[..., j, :]
                                                    for j in range(c)))
  return jnp.sum(jax.nn.softmax(logits)[..., None, :] * x, axis=-1)
