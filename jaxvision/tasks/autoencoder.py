"""Task ``autoencoder``: reconstruct the image through the backbone's C5 map and a conv decoder.

Rows are the standard ones (letterboxed image, random flips when ``data.flip``). The encoder
sees the normalized image (``data.mean``/``data.std``); the decoder's sigmoid output is
compared with the image in [0, 1] units: the loss is the mean squared error per pixel and
channel, and ``eval/reconstruction_mse`` is the same on held-out images. Pictures: input |
reconstruction pairs of the first held-out batch.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision import viz
from jaxvision.models.autoencoder import Autoencoder
from jaxvision.tasks import base, pretext


def reconstruction_errors(images: jax.Array, reconstructions: jax.Array) -> jax.Array:
  """Per-image mean squared error ``[B]`` of uint8 (or [0, 255]) images and [0, 1]
  reconstructions, in [0, 1] pixel units."""
  target = images.astype(jnp.float32) / 255.0
  return jnp.mean((reconstructions - target) ** 2, axis=(1, 2, 3))


class ReconstructionEvaluator(base.Evaluator):
  """Mean per-image reconstruction MSE over the non-padding rows."""

  def __init__(self):
    self._total, self._count = 0.0, 0

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    keep = np.asarray(batch["example_mask"], bool)
    self._total += float(np.sum(outputs["mse"][keep], dtype=np.float64))
    self._count += int(keep.sum())

  def result(self) -> dict[str, float]:
    return {"reconstruction_mse": self._total / max(self._count, 1),
            "num_examples": float(self._count)}


@base.register("autoencoder")
class AutoencoderTask(pretext.PretextTask):
  """Backbone encoder + conv decoder, trained to reconstruct its input."""

  MODEL_FIELDS = ("backbone", "backbone_kwargs", "bottleneck", "decoder_channels",
                  "min_channels")

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    stride = self.backbone_module.strides["C5"]
    if config.data.image_size % stride:
      raise ValueError(f"data.image_size={config.data.image_size} must be a multiple of the "
                       f"encoder's stride {stride} (model.backbone={config.model.backbone!r}, "
                       f"stem {self.backbone_module.stem!r}).")
    self._predict = jax.jit(self._reconstruct)

  @functools.cached_property
  def model(self) -> Autoencoder:
    m = self.config.model
    return Autoencoder(backbone=m.backbone, backbone_kwargs=dict(m.backbone_kwargs),
                       bottleneck=m.bottleneck, decoder_channels=m.decoder_channels,
                       min_channels=m.min_channels, out_channels=self.image_shape[-1])

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")

  def init_variables(self, rng, batch):
    return self.model.init(rng, self.normalize(jnp.asarray(batch["image"])), train=False)

  def loss_fn(self, params, model_state, batch, rng):
    del rng  # Deterministic model; the flips are drawn in the data pipeline.
    outputs, new_state = self.model.apply({"params": params, **model_state},
                                          self.normalize(batch["image"]), train=True,
                                          mutable=["batch_stats"])
    loss = jnp.mean(reconstruction_errors(batch["image"], outputs["reconstruction"]))
    return loss, ({}, new_state)

  def _reconstruct(self, variables, images):
    outputs = self.model.apply(variables, self.normalize(images), train=False)
    return outputs["reconstruction"] * 255.0

  def eval_outputs(self, variables, batch):
    reconstruction = self._reconstruct(variables, batch["image"])
    return {"reconstruction": reconstruction,
            "mse": reconstruction_errors(batch["image"], reconstruction / 255.0)}

  def make_evaluator(self) -> ReconstructionEvaluator:
    return ReconstructionEvaluator()

  def predict(self, variables, images) -> dict[str, jax.Array]:
    """``reconstruction``: float32 NHWC in [0, 255] of uint8 or [0, 255] float images."""
    base.validate_images(images, self.image_shape, "predict")
    return {"reconstruction": self._predict(variables, jnp.asarray(images))}

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Input | reconstruction, side by side, for the first held-out images."""
    del variables
    count = min(len(batch["image"]), self.config.get("num_pictures", 16))
    reconstructions = np.clip(np.round(outputs["reconstruction"]), 0, 255).astype(np.uint8)
    tiles = []
    for i in range(count):
      for tile in (batch["image"][i], reconstructions[i]):
        tiles.append(np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile)
    return [viz.save_image_grid(tiles, f"{directory}/step_{step:07d}_reconstructions.png",
                                columns=4)]
