"""Task ``simclr``: contrastive pretraining on two augmented views per image (Chen et al. 2020).

Every training row holds ``views`` uint8 ``[2, H, W, C]``: two independent augmentations of
one image (``config.augment``: random resized crop, flip, colour jitter with a probability,
random grayscale, Gaussian blur; see ``AUGMENT_DEFAULTS``). The backbone and the projection
head (``jaxvision.models.simclr.SimCLR``) embed both views; the NT-Xent loss is taken over
the **global** batch: inside the train step, ``jax.shard_map`` over the mesh's data axis
gathers every device's embeddings as candidates (``global_nt_xent``), so each device's
anchors see the 2N - 2 negatives of the whole batch, and gradients flow back through the
gather. On any number of devices the step equals the one-device step of the same batch.

BatchNorm statistics are those of the global batch of both views: the backbone and head run
under ``jax.jit`` on the global, data-sharded batch (outside the ``shard_map``), where a mean
over the batch axis is a mean over every device's rows (XLA inserts the all-reduce). Only
the loss is per-device code.

Metrics: ``contrastive_accuracy`` (train and ``eval/``): the fraction of the 2N anchors whose
most similar candidate in the global batch is their positive; held-out views are drawn with
a generator seeded by ``(seed, image_id)``, so every evaluation sees the same views. The
representation for the ``knn`` and ``linear_probe`` evaluators is the backbone's unaugmented
global pool (before the head), as the issue's protocol asks.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxvision import data as data_lib
from jaxvision import parallel, viz
from jaxvision.data import transforms
from jaxvision.models.simclr import (SimCLR, contrastive_terms, global_nt_xent, l2_normalize,
                                     pair_indices)
from jaxvision.tasks import base, pretext

NUM_VIEWS = 2
# Augmentation settings (``config.augment``); SimCLR's ImageNet recipe, the crop scale and
# blur range sized for small images by the configs.
AUGMENT_DEFAULTS = {
    "crop_scale": (0.08, 1.0),      # random resized crop: area fraction range
    "crop_ratio": (3 / 4, 4 / 3),   # and aspect-ratio range
    "flip": True,                   # random horizontal flip
    "jitter_probability": 0.8,      # colour jitter applied with this probability
    "jitter_strength": 1.0,         # s: brightness, contrast, saturation 0.8 s, hue 0.2 s
    "grayscale_probability": 0.2,
    "blur_probability": 0.5,
    "blur_sigma": (0.1, 2.0),       # pixels
}


class ViewAugmentation:
  """One SimCLR view of a letterboxed uint8 image ``[H, W, C]``, drawn from ``rng``.

  Draws, in order: the crop (``sample_crop_box``), the flip coin, the jitter coin and (if
  jittering) the jitter's numbers, the grayscale coin, the blur coin and sigma.
  """

  def __init__(self, settings: ml_collections.ConfigDict, image_size: int):
    self.settings = settings
    self.image_size = image_size
    for name in ("jitter_probability", "grayscale_probability", "blur_probability"):
      if not 0 <= settings[name] <= 1:
        raise ValueError(f"augment.{name} must be a probability in [0, 1]; got "
                         f"{settings[name]}.")
    if settings.jitter_strength < 0:
      raise ValueError(f"augment.jitter_strength must be >= 0; got {settings.jitter_strength}.")

  def __call__(self, example: data_lib.Example, rng: np.random.Generator) -> data_lib.Example:
    s = self.settings
    example = transforms.random_resized_crop({"image": example["image"]}, rng, self.image_size,
                                             tuple(s.crop_scale), tuple(s.crop_ratio))
    example = transforms.random_flip(example, rng, 0.5 if s.flip else 0.0)
    image = example["image"]
    if rng.random() < s.jitter_probability:
      strength = s.jitter_strength
      image = transforms.color_jitter(image, rng, brightness=0.8 * strength,
                                      contrast=0.8 * strength, saturation=0.8 * strength,
                                      hue=min(0.2 * strength, 0.5))
    image = transforms.random_grayscale(image, rng, s.grayscale_probability)
    image = transforms.gaussian_blur(image, rng, tuple(s.blur_sigma), s.blur_probability)
    return {"image": image}


class ContrastiveEvaluator(base.Evaluator):
  """Mean NT-Xent and top-1 contrastive accuracy over the non-padding anchors of a split."""

  def __init__(self):
    self._loss, self._correct, self._count = 0.0, 0.0, 0

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    keep = np.asarray(batch["example_mask"], bool)
    self._loss += float(outputs["contrastive_loss"][keep].sum())
    self._correct += float(outputs["contrastive_correct"][keep].sum())
    self._count += int(keep.sum())

  def result(self) -> dict[str, float]:
    n = max(self._count, 1)
    return {"contrastive_accuracy": self._correct / n, "contrastive_loss": self._loss / n,
            "num_examples": float(self._count)}


@base.register("simclr")
class SimCLRTask(pretext.DrawnPretextTask):
  """SimCLR pretraining; see the module docstring."""

  MODEL_FIELDS = ("backbone", "backbone_kwargs", "hidden", "projection_dim", "temperature")
  # NT-Xent's negatives are the whole global batch: micro-batches would change the loss.
  accumulates_gradients = False

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    if config.model.temperature <= 0:
      raise ValueError(f"model.temperature must be positive; got {config.model.temperature}.")
    self.augment = pretext.checked_settings(config.get("augment", None), AUGMENT_DEFAULTS,
                                            "config.augment")
    self._augmentation = ViewAugmentation(self.augment, config.data.image_size)

  @functools.cached_property
  def model(self) -> SimCLR:
    m = self.config.model
    return SimCLR(backbone=m.backbone, backbone_kwargs=dict(m.backbone_kwargs), hidden=m.hidden,
                  projection_dim=m.projection_dim)

  # --- data ----------------------------------------------------------------------------
  def pretext_row(self, image, rng):
    """``views`` [2, H, W, C]: two independent augmentations of ``image`` (a function of the
    row's seed: see ``transforms.make_views``)."""
    views = transforms.make_views({"image": image}, rng, NUM_VIEWS, self._augmentation)
    return {"views": np.stack([view["image"] for view in views])}

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    if "views" in batch:
      views = np.asarray(batch["views"])
      if views.ndim != 5 or views.shape[1] != NUM_VIEWS:
        raise ValueError(f"batch['views'] must be [B, {NUM_VIEWS}, H, W, C] (two views per "
                         f"image), got shape {views.shape}.")
      base.validate_images(views.reshape((-1,) + views.shape[2:]), self.image_shape,
                           "batch['views']")
    elif "image" not in batch:
      raise ValueError(f"A simclr batch holds 'views' (training) or 'image' (evaluation); got "
                       f"{sorted(batch)}.")
    if "image" in batch:
      base.validate_images(batch["image"], self.image_shape, "batch['image']")

  # --- model and loss ------------------------------------------------------------------
  def _views(self, batch) -> jax.Array:
    """``batch["views"]`` [B, 2, H, W, C] as normalized images [2B, H, W, C], each image's
    views adjacent, so each device's rows stay on it."""
    views = batch["views"]
    return self.normalize(views.reshape((-1,) + views.shape[2:]))

  def init_variables(self, rng, batch):
    return self.model.init(rng, self._views(jax.tree.map(jnp.asarray, batch)), train=False)

  def _view_projections(self, outputs) -> tuple[jax.Array, jax.Array]:
    projection = outputs["projection"].reshape(-1, NUM_VIEWS, outputs["projection"].shape[-1])
    return projection[:, 0], projection[:, 1]

  def contrastive_loss(self, z_a: jax.Array, z_b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """NT-Xent and contrastive accuracy of the global batch of data-sharded ``[N, D]``
    projections: per-device anchors against every device's gathered embeddings."""
    temperature = self.config.model.temperature

    @functools.partial(jax.shard_map, mesh=self.mesh,
                       in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)),
                       out_specs=(P(), P()))
    def loss(z_a, z_b):
      return global_nt_xent(z_a, z_b, temperature, parallel.DATA_AXIS)

    return loss(z_a, z_b)

  def loss_fn(self, params, model_state, batch, rng):
    del rng  # The views are drawn in the data pipeline.
    outputs, new_state = self.model.apply({"params": params, **model_state},
                                          self._views(batch), train=True,
                                          mutable=["batch_stats"])
    loss, accuracy = self.contrastive_loss(*self._view_projections(outputs))
    return loss, ({"contrastive_accuracy": accuracy}, new_state)

  # --- evaluation ----------------------------------------------------------------------
  def eval_outputs(self, variables, batch):
    """Per image: the mean over its two views of the NT-Xent term and of the top-1 hit,
    among the non-padding rows of the global eval batch."""
    outputs = self.model.apply(variables, self._views(batch), train=False)
    z_a, z_b = self._view_projections(outputs)
    count = z_a.shape[0]
    z = l2_normalize(jnp.concatenate([z_a, z_b]))
    positives, selves = pair_indices(count, 0, count)
    mask = jnp.concatenate([batch["example_mask"]] * NUM_VIEWS)
    loss, hits = contrastive_terms(z, z, positives, selves, self.config.model.temperature,
                                   candidate_mask=mask)
    return {"contrastive_loss": loss.reshape(NUM_VIEWS, count).mean(0),
            "contrastive_correct": hits.reshape(NUM_VIEWS, count).mean(0)}

  def make_evaluator(self) -> ContrastiveEvaluator:
    return ContrastiveEvaluator()

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Each held-out image beside its two augmented views."""
    del variables, outputs
    count = min(len(batch["views"]), self.config.get("num_pictures", 16))
    tiles = []
    for i in range(count):
      row = [batch["image"][i], *batch["views"][i]]
      tiles.extend(np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile for tile in row)
    return [viz.save_image_grid(tiles, f"{directory}/step_{step:07d}_views.png",
                                columns=1 + NUM_VIEWS)]
