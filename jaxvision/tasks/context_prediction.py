"""Task ``context_prediction`` (Doersch et al. 2015): the position of a neighbour patch.

Each training row draws a 3 x 3 grid of ``patch_size`` patches, ``gap`` pixels apart and each
jittered by up to ``jitter`` pixels (``data.transforms.patch_grid``), then one of the 8
neighbours of the centre: ``pair`` uint8 ``[2, p, p, C]`` (centre, neighbour), ``position``
int32 in ``[0, 8)`` (``models.context_prediction.NEIGHBOURS``), ``grid`` int32 ``[9, 2]``
(the patches' top-left corners, for pictures) and ``kept_channel`` int32 ``[2]`` (channel
dropping). The model (two weight-sharing towers, ``ContextPrediction``) classifies the
position with softmax cross-entropy.

Shortcut guards (``model.colour_guard``): ``"project"`` removes the green-magenta component of
every pixel, ``"drop"`` keeps one random channel per patch, ``"none"`` neither; every patch
is then standardized on its own (``normalize``, which the frozen-feature probes also use on
whole images).

Metrics: ``position_accuracy`` (train, and ``eval/`` on held-out images whose grid and
neighbour are fixed by ``(seed, image_id)``).
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import viz
from jaxvision.data import transforms
from jaxvision.models import context_prediction as cp
from jaxvision.tasks import base, pretext

COLOUR_GUARDS = ("project", "drop", "none")
GRID_DEFAULTS = {"patch_size": 16, "gap": 4, "jitter": 2}


class PositionEvaluator(base.Evaluator):
  """Accuracy of the predicted neighbour position over the non-padding rows."""

  def __init__(self):
    self._correct, self._count = 0.0, 0

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    keep = np.asarray(batch["example_mask"], bool)
    self._correct += float((outputs["positions"][keep] == batch["position"][keep]).sum())
    self._count += int(keep.sum())

  def result(self) -> dict[str, float]:
    return {"position_accuracy": self._correct / max(self._count, 1),
            "num_examples": float(self._count)}


@base.register("context_prediction")
class ContextPredictionTask(pretext.DrawnPretextTask):
  """Relative-position prediction between a centre patch and a neighbour."""

  MODEL_FIELDS = ("backbone", "backbone_kwargs", "hidden", "colour_guard", "grid")

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    self.colour_guard = config.model.colour_guard
    if self.colour_guard not in COLOUR_GUARDS:
      raise ValueError(f"Unknown model.colour_guard {self.colour_guard!r}; use one of "
                       f"{COLOUR_GUARDS}.")
    if self.colour_guard != "none" and config.data.channels != 3:
      raise ValueError(f"model.colour_guard={self.colour_guard!r} needs RGB images "
                       f"(data.channels=3); use 'none' for data.channels={config.data.channels}.")
    self.grid = pretext.checked_settings(config.model.get("grid", None), GRID_DEFAULTS,
                                         "config.model.grid")
    # Validates the geometry against the image size now, not in a pipeline worker.
    transforms.patch_grid(np.zeros(self.image_shape, np.uint8), np.random.default_rng(0),
                          cp.GRID_SIZE, **self.grid)

  @functools.cached_property
  def model(self) -> cp.ContextPrediction:
    m = self.config.model
    return cp.ContextPrediction(backbone=m.backbone, backbone_kwargs=dict(m.backbone_kwargs),
                                hidden=m.hidden)

  # --- data ----------------------------------------------------------------------------
  def pretext_row(self, image, rng):
    """Draws the grid (``patch_grid``), the position, then (``drop``) the kept channels."""
    patches, corners = transforms.patch_grid(image, rng, cp.GRID_SIZE, **self.grid)
    position = int(rng.integers(cp.NUM_POSITIONS))
    kept = (rng.integers(image.shape[-1], size=2) if self.colour_guard == "drop"
            else np.zeros(2))
    return {"pair": patches[[cp.CENTRE, cp.NEIGHBOURS[position]]],
            "position": np.int32(position), "grid": corners,
            "kept_channel": kept.astype(np.int32)}

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    if "image" in batch:
      base.validate_images(batch["image"], self.image_shape, "batch['image']")
    if "pair" not in batch:
      if "image" not in batch:
        raise ValueError(f"A context_prediction batch holds 'pair' (training) or 'image' "
                         f"(evaluation); got {sorted(batch)}.")
      return
    size, channels = self.grid.patch_size, self.image_shape[-1]
    pair = np.asarray(batch["pair"])
    if pair.shape[1:] != (2, size, size, channels):
      raise ValueError(f"batch['pair'] must be [B, 2, {size}, {size}, {channels}] (centre and "
                       f"neighbour patches of model.grid.patch_size), got {pair.shape}.")
    position = np.asarray(batch["position"])
    if position.min() < 0 or position.max() >= cp.NUM_POSITIONS:
      raise ValueError(f"batch['position'] must lie in [0, {cp.NUM_POSITIONS}); got "
                       f"[{position.min()}, {position.max()}].")

  def normalize(self, images: jax.Array) -> jax.Array:
    """The colour guard's projection (``project``), then per-image (per-patch)
    standardization; the probes see whole images through the same."""
    images = images.astype(jnp.float32) / 255.0
    if self.colour_guard == "project":
      images = cp.project_out_green_magenta(images)
    return cp.normalize_patches(images)

  def _pairs(self, batch) -> jax.Array:
    pair = batch["pair"]
    patches = self.normalize(pair.reshape((-1,) + pair.shape[2:]))
    if self.colour_guard == "drop":
      patches = cp.keep_one_channel(patches, batch["kept_channel"].reshape(-1))
    return patches.reshape(pair.shape)

  # --- model and loss ------------------------------------------------------------------
  def init_variables(self, rng, batch):
    return self.model.init(rng, self._pairs(jax.tree.map(jnp.asarray, batch)), train=False)

  def loss_fn(self, params, model_state, batch, rng):
    del rng  # The grid and position are drawn in the data pipeline.
    logits, new_state = self.model.apply({"params": params, **model_state}, self._pairs(batch),
                                         train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["position"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["position"])
    return loss, ({"position_accuracy": accuracy}, new_state)

  # --- evaluation ----------------------------------------------------------------------
  def eval_outputs(self, variables, batch):
    logits = self.model.apply(variables, self._pairs(batch), train=False)
    return {"positions": jnp.argmax(logits, -1).astype(jnp.int32),
            "scores": jnp.max(jax.nn.softmax(logits), -1)}

  def make_evaluator(self) -> PositionEvaluator:
    return PositionEvaluator()

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Each held-out image with its centre patch (white), the true neighbour (green) and the
    predicted one (red)."""
    del variables
    count = min(len(batch["image"]), self.config.get("num_pictures", 16))
    scale = max(1, 256 // self.image_shape[0])
    size = self.grid.patch_size

    def box(corner):
      row, col = corner
      return np.array([[col, row, col + size, row + size]], np.float32)

    images = []
    for i in range(count):
      grid = batch["grid"][i]
      image = batch["image"][i]
      if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
      image = viz.draw_boxes(image, box(grid[cp.CENTRE]), [""], (255, 255, 255), scale)
      true_cell = cp.NEIGHBOURS[int(batch["position"][i])]
      image = viz.draw_boxes(image, box(grid[true_cell]) * scale, ["true"], viz.TRUE_COLOUR)
      predicted_cell = cp.NEIGHBOURS[int(outputs["positions"][i])]
      image = viz.draw_boxes(image, box(grid[predicted_cell]) * scale,
                             [f"{outputs['scores'][i]:.2f}"], viz.PREDICTED_COLOUR)
      images.append(image)
    return [viz.save_image_grid(images, f"{directory}/step_{step:07d}_positions.png")]
