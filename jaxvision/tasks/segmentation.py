"""Task ``semantic_segmentation``: a class for every pixel, an FCN or the sliding-window baseline.

Classes are ``"background"`` plus the data source's classes (the shapes dataset's
``semantic`` map: 0 background, ``label + 1`` on an object), the source's own semantic
classes when it names them (shapes with ``data.stuff_classes = S > 0``: ``"void"``, unused,
then the C things and the S stuff classes, ``C + s`` on stuff ``s``), or
``model.class_names`` when the config names them (PASCAL VOC's 21). Pixels labelled
``data.ignore_label`` (letterbox padding, and with ``model.boundary_ignore_width > 0`` a band
around every class boundary, marked on the host in
:meth:`SemanticSegmentationTask.preprocess`) are neither trained on nor scored.

Models (``model.name``):

* ``fcn``: :class:`jaxvision.models.fcn.FCN`, per-pixel logits at the input resolution with the
  upsampler ``model.upsampler``; the loss is the per-pixel softmax cross-entropy of every
  pixel of the batch.
* ``sliding_window``: :class:`jaxvision.models.fcn.PatchClassifier`, the class of a pixel from
  the ``model.patch_size`` patch around it. Training classifies ``model.pixels_per_image``
  pixels per image per step, drawn uniformly among the image's scored pixels; inference
  classifies every pixel, ``model.rows_per_chunk`` image rows at a time.

Loss: :func:`pixel_cross_entropy`, weighted by ``model.class_weights`` when given. Metrics on
held-out data (``jaxvision.evaluation.segmentation``): ``mean_iou``, ``pixel_accuracy``,
``mean_class_accuracy`` and ``iou_<class name>``. Pictures: image | truth | prediction with a
colour legend.

Augmentation (training only): ``augment.random_resized_crop`` (crop ``augment.crop_scale`` of
the image's area with aspect ratio in ``augment.crop_ratio``, resized to ``data.image_size``;
the map moves with it), then the standard letterbox and flip (``data.flip``).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from jaxvision import viz
from jaxvision.data import transforms
from jaxvision.evaluation.segmentation import SegmentationEvaluator
from jaxvision.models import fcn
from jaxvision.models.losses import pixel_cross_entropy
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base

MODEL_NAMES = ("fcn", "sliding_window")
_COMMON_FIELDS = frozenset({"name", "backbone", "backbone_kwargs", "class_names",
                            "class_weights", "boundary_ignore_width"})
_MODEL_FIELDS = {
    "fcn": _COMMON_FIELDS | {"upsampler", "decoder_channels", "skips"},
    "sliding_window": _COMMON_FIELDS | {"patch_size", "pixels_per_image", "rows_per_chunk"},
}
AUGMENT_DEFAULTS = {"random_resized_crop": False, "crop_scale": (0.5, 1.0),
                    "crop_ratio": (3 / 4, 4 / 3)}


def boundary_band(semantic: np.ndarray, width: int, ignore_label: int) -> np.ndarray:
  """``semantic`` with every pixel within ``width`` pixels of another class set to ignore.

  A scored pixel is in the band when a scored pixel of another class lies within Chebyshev
  distance ``width`` (its ``(2 width + 1)``-square neighbourhood), so a boundary gets a band
  ``2 * width`` pixels wide, ``width`` on each side, like PASCAL VOC's void outlines. Ignored
  pixels (e.g. letterbox padding) do not make a boundary.

  Args:
    semantic: int ``[H, W]`` class map.
    width: band half-width in pixels; 0 returns ``semantic`` unchanged.
    ignore_label: label of the pixels left out.

  Returns:
    int ``[H, W]``, the dtype of ``semantic``.
  """
  if width <= 0:
    return semantic
  scored = semantic != ignore_label

  def window(values: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over each pixel's ``(2 width + 1)``-square window; separable; the image's
    edge is repeated, which adds no class."""
    values = np.pad(values, width, mode="edge")
    values = reduce(sliding_window_view(values, 2 * width + 1, axis=0), axis=-1)
    return reduce(sliding_window_view(values, 2 * width + 1, axis=1), axis=-1)

  # Ignored neighbours get a value that never differs from the centre in that direction.
  largest = window(np.where(scored, semantic, np.iinfo(np.int32).min), np.max)
  smallest = window(np.where(scored, semantic, np.iinfo(np.int32).max), np.min)
  band = scored & ((largest > semantic) | (smallest < semantic))
  return np.where(band, ignore_label, semantic).astype(semantic.dtype)


def sample_pixels(rng: jax.Array, scored: jax.Array, count: int
                  ) -> tuple[jax.Array, jax.Array]:
  """``count`` pixels per image, uniformly among its scored pixels, with replacement.

  Args:
    rng: PRNG key.
    scored: bool ``[B, H, W]``.
    count: pixels per image (static).

  Returns:
    ``rows, cols`` int32 ``[B, count]``. An image without scored pixels gets pixel (0, 0),
    which is not scored, so it adds nothing to the loss.
  """
  batch, height, width = scored.shape
  logits = jnp.where(scored.reshape(batch, -1), 0.0, -jnp.inf)
  flat = jax.random.categorical(rng, logits, shape=(count, batch)).T.astype(jnp.int32)
  return flat // width, flat % width


@base.register("semantic_segmentation")
class SemanticSegmentationTask(base.SupervisedTask):
  """Semantic segmentation on any source with ``semantic`` maps (shapes; VOC-style arrays)."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    model = config.model
    if model.get("name") not in MODEL_NAMES:
      raise ValueError(f"Unknown model.name {model.get('name')!r}; use one of {MODEL_NAMES} "
                       "(the FCN or the sliding-window baseline).")
    unknown = sorted(set(model.keys()) - _MODEL_FIELDS[model.name])
    if unknown:
      raise ValueError(f"Unknown config.model fields {unknown} for model.name={model.name!r}; "
                       f"it takes {sorted(_MODEL_FIELDS[model.name])}.")
    if model.name == "fcn":
      fcn.check_upsampler(model.upsampler)
    else:
      fcn.check_patch_size(model.patch_size)
    if "semantic" not in config.data.features:
      raise ValueError(f"semantic_segmentation trains on semantic maps: add 'semantic' to "
                       f"data.features (got {tuple(config.data.features)}).")
    unknown = sorted(set(config.get("augment", {})) - set(AUGMENT_DEFAULTS))
    if unknown:
      raise ValueError(f"Unknown config.augment fields {unknown}; known: "
                       f"{sorted(AUGMENT_DEFAULTS)}.")
    self.augment = ml_collections.ConfigDict({**AUGMENT_DEFAULTS,
                                              **dict(config.get("augment", {}))})
    self.ignore_label = config.data.ignore_label
    self.backbone_module = build_backbone(model.backbone, **dict(model.backbone_kwargs))
    self._predict = jax.jit(self._forward)

  # --- classes and model ---------------------------------------------------------------
  @property
  def class_names(self) -> tuple[str, ...]:
    """``model.class_names`` when set, else the source's semantic classes (default
    ``"background"`` + its classes; shapes with stuff: things then stuff)."""
    names = self.config.model.get("class_names", None)
    if names:
      return tuple(names)
    if self.source.metadata.semantic_class_names is not None:
      return tuple(self.source.metadata.semantic_class_names)
    return ("background",) + tuple(self.source.metadata.class_names)

  @functools.cached_property
  def num_classes(self) -> int:
    num_classes = len(self.class_names)
    if 0 <= self.ignore_label < num_classes:
      raise ValueError(f"data.ignore_label={self.ignore_label} is one of the {num_classes} "
                       "classes; choose a label outside [0, num_classes), e.g. 255.")
    return num_classes

  @functools.cached_property
  def class_weights(self) -> np.ndarray | None:
    """``model.class_weights`` as float32 ``[C]``, or None (every class weighs 1)."""
    weights = self.config.model.get("class_weights", None)
    if not weights:
      return None
    weights = np.asarray(weights, np.float32)
    if weights.shape != (self.num_classes,) or np.any(weights < 0):
      raise ValueError(f"model.class_weights must be {self.num_classes} non-negative numbers "
                       f"(one per class of {self.class_names}); got {weights.tolist()}.")
    return weights

  @functools.cached_property
  def model(self) -> fcn.FCN | fcn.PatchClassifier:
    """The FCN, or the sliding-window baseline's patch classifier (``model.name``)."""
    model = self.config.model
    common = dict(num_classes=self.num_classes, backbone=model.backbone,
                  backbone_kwargs=dict(model.backbone_kwargs))
    if model.name == "fcn":
      channels = model.decoder_channels
      return fcn.FCN(upsampler=model.upsampler, skips=model.skips,
                     decoder_channels=channels if isinstance(channels, int) else tuple(channels),
                     **common)
    return fcn.PatchClassifier(**common)

  # --- data ----------------------------------------------------------------------------
  def preprocess(self, example, rng):
    """Optional random resized crop, the standard row (letterbox, flip), the boundary band."""
    if rng is not None and self.augment.random_resized_crop:
      example = transforms.random_resized_crop(
          example, rng, self.config.data.image_size, tuple(self.augment.crop_scale),
          tuple(self.augment.crop_ratio))
    row = super().preprocess(example, rng)
    row["semantic"] = boundary_band(row["semantic"],
                                    self.config.model.get("boundary_ignore_width", 0),
                                    self.ignore_label)
    return row

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")
    semantic = np.asarray(batch["semantic"])
    if semantic.shape != batch["image"].shape[:3]:
      raise ValueError(f"batch['semantic'] must be [B, H, W] = {batch['image'].shape[:3]} "
                       f"(one class per image pixel), got {semantic.shape}.")
    if not np.issubdtype(semantic.dtype, np.integer):
      raise ValueError(f"batch['semantic'] must hold integer classes, got {semantic.dtype}.")
    real = np.asarray(batch.get("example_mask", np.ones(len(semantic), bool)), bool)
    labels = semantic[real]
    bad = (labels != self.ignore_label) & ((labels < 0) | (labels >= self.num_classes))
    if bad.any():
      raise ValueError(f"batch['semantic'] holds {sorted(set(labels[bad].tolist()))[:5]}; "
                       f"classes are 0..{self.num_classes - 1} ({self.class_names}) and "
                       f"{self.ignore_label} (data.ignore_label) marks unscored pixels.")

  # --- model ---------------------------------------------------------------------------
  def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
    images = self.normalize(jnp.asarray(batch["image"]))
    if self.config.model.name == "sliding_window":
      size = self.config.model.patch_size
      images = jnp.zeros((1, size, size, images.shape[-1]), images.dtype)
    return self.model.init(rng, images, train=False)

  def loss_fn(self, params, model_state, batch, rng):
    images, labels = self.normalize(batch["image"]), batch["semantic"]
    variables = {"params": params, **model_state}
    if self.config.model.name == "fcn":
      logits, new_state = self.model.apply(variables, images, train=True,
                                           mutable=["batch_stats"])
    else:
      logits, labels, new_state = self._sampled_patch_logits(variables, images, labels, rng)
    loss = pixel_cross_entropy(logits, labels, self.ignore_label, self.class_weights)
    scored = labels != self.ignore_label
    correct = scored & (jnp.argmax(logits, -1) == labels)
    accuracy = jnp.sum(correct) / jnp.maximum(jnp.sum(scored), 1)
    return loss, ({"pixel_accuracy": accuracy}, new_state)

  def _sampled_patch_logits(self, variables, images, labels, rng):
    """Logits ``[B, K, C]`` and labels ``[B, K]`` of ``pixels_per_image`` sampled pixels."""
    model = self.config.model
    batch, _, width, channels = images.shape
    rows, cols = sample_pixels(rng, labels != self.ignore_label, model.pixels_per_image)
    patches = fcn.patches_at(fcn.pad_for_patches(images, model.patch_size), rows, cols,
                             model.patch_size)
    logits, new_state = self.model.apply(
        variables, patches.reshape((-1,) + patches.shape[2:]), train=True,
        mutable=["batch_stats"])
    sampled = jnp.take_along_axis(labels.reshape(batch, -1), rows * width + cols, axis=1)
    return logits.reshape(batch, model.pixels_per_image, -1), sampled, new_state

  def _logits(self, variables, images) -> jax.Array:
    """``[B, H, W, C]`` logits of every pixel."""
    images = self.normalize(images)
    if self.config.model.name == "fcn":
      return self.model.apply(variables, images, train=False)
    return fcn.sliding_window_logits(
        lambda patches: self.model.apply(variables, patches, train=False), images,
        self.config.model.patch_size, self.config.model.rows_per_chunk)

  def _forward(self, variables, images):
    probabilities = jax.nn.softmax(self._logits(variables, images), axis=-1)
    return {"labels": jnp.argmax(probabilities, -1).astype(jnp.int32),
            "probabilities": probabilities}

  # --- evaluation ----------------------------------------------------------------------
  def eval_outputs(self, variables, batch):
    """``semantic``: int32 ``[B, H, W]`` predicted classes."""
    logits = self._logits(variables, batch["image"])
    return {"semantic": jnp.argmax(logits, -1).astype(jnp.int32)}

  def make_evaluator(self) -> SegmentationEvaluator:
    return SegmentationEvaluator(self.num_classes, self.ignore_label, self.class_names)

  def predict(self, variables, images) -> dict[str, jax.Array]:
    """Per-pixel ``labels`` int32 ``[B, H, W]`` and ``probabilities`` float32 ``[B, H, W, C]``
    for NHWC images (uint8 or float32 in [0, 255])."""
    base.validate_images(images, self.image_shape, "predict")
    return self._predict(variables, jnp.asarray(images))

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Image | truth | prediction for the first ``num_pictures`` held-out images."""
    del variables
    real = np.flatnonzero(np.asarray(batch["example_mask"], bool))
    shown = real[:self.config.get("num_pictures", 8)]
    if not len(shown):
      return []
    path = os.path.join(directory, f"step_{step:07d}_segmentation.png")
    return [viz.draw_segmentations(
        batch["image"][shown], batch["semantic"][shown], outputs["semantic"][shown],
        self.class_names, path, self.ignore_label,
        scale=max(1, 128 // self.config.data.image_size))]
