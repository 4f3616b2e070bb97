"""Task ``classify_localize``: one object per image, its class and its box, losses summed.

Loss = ``class_loss_weight * CE + box_loss_weight * box_loss + regularizer_weight * R(W)``
where the box loss is L2 (default), smooth-L1 or GIoU on boxes normalized by the image size,
and ``R`` is a multitask regularizer on the stacked head matrix (see
``jaxvision.models.classify_localize``). Metrics on held-out data: ``accuracy``,
``mean_iou`` and ``localization_accuracy`` (class right and IoU >= 0.5).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import data as data_lib
from jaxvision import ops, viz
from jaxvision.models.classify_localize import (ClassifyLocalize, multitask_regularizer,
                                                normalized_to_pixels, stacked_head_weights)
from jaxvision.models.losses import smooth_l1
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base

BOX_LOSSES = ("l2", "smooth_l1", "giou")


def box_loss(predicted: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-example loss between normalized ``(x1, y1, x2, y2)`` boxes ``[N, 4]`` -> ``[N]``."""
  if kind == "l2":
    return jnp.sum((predicted - target) ** 2, axis=-1)
  if kind == "smooth_l1":
    return jnp.sum(smooth_l1(predicted, target, beta=1.0 / 9.0), axis=-1)
  if kind == "giou":
    return 1.0 - ops.paired_generalized_box_iou(predicted, target)
  raise ValueError(f"Unknown model.box_loss {kind!r}; use one of {BOX_LOSSES}.")


class ClassifyLocalizeEvaluator(base.Evaluator):
  """Accuracy, mean box IoU and localization accuracy over the non-padding rows."""

  def __init__(self):
    self._correct, self._iou, self._localized, self._count = 0.0, 0.0, 0.0, 0

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    keep = np.asarray(batch["example_mask"], bool)
    correct = outputs["classes"][keep] == batch["labels"][keep, 0]
    iou = outputs["iou"][keep]
    self._correct += float(correct.sum())
    self._iou += float(iou.sum())
    self._localized += float((correct & (iou >= 0.5)).sum())
    self._count += int(keep.sum())

  def result(self) -> dict[str, float]:
    n = max(self._count, 1)
    return {"accuracy": self._correct / n, "mean_iou": self._iou / n,
            "localization_accuracy": self._localized / n, "num_examples": float(self._count)}


@base.register("classify_localize")
class ClassifyLocalizeTask(base.SupervisedTask):
  """Single-object classification + box regression on the shapes dataset."""

  compute_dtypes = ("float32", "bfloat16")

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    if config.model.box_loss not in BOX_LOSSES:
      raise ValueError(f"Unknown model.box_loss {config.model.box_loss!r}; use one of {BOX_LOSSES}.")
    if config.model.regularizer != "none":
      multitask_regularizer(jnp.zeros((2, 2)), config.model.regularizer)  # Validates the name.
    if config.data.max_boxes != 1:
      raise ValueError("classify_localize predicts one object per image: set data.max_boxes=1 "
                       f"(got {config.data.max_boxes}).")
    self.image_size = config.data.image_size
    self.backbone_module = build_backbone(config.model.backbone, dtype=self.compute_dtype,
                                          **dict(config.model.backbone_kwargs))
    self._predict = jax.jit(self._forward)

  @functools.cached_property
  def model(self) -> ClassifyLocalize:
    """Its classes are the data source's (``model.num_classes`` overrides their count)."""
    return ClassifyLocalize(
        num_classes=self.config.model.get("num_classes", None) or len(self.class_names),
        backbone=self.config.model.backbone,
        backbone_kwargs=dict(self.config.model.backbone_kwargs),
        neck_channels=self.config.model.neck_channels, hidden=self.config.model.hidden,
        roi_feature=self.config.model.get("roi_feature", "C3"), dtype=self.compute_dtype)

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")
    data_lib.validate_boxes(batch)
    real = batch.get("example_mask", np.ones(len(batch["image"]), bool))
    if not np.all(batch["box_valid"][real, 0]):
      raise ValueError("classify_localize needs one valid box per image; batch['box_valid'][:, 0] "
                       "is False for some examples.")

  def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
    return self.model.init(rng, self.normalize(jnp.asarray(batch["image"])), train=False)

  def loss_fn(self, params, model_state, batch, rng):
    del rng  # Deterministic model; augmentation randomness lives in the data pipeline.
    outputs, new_state = self.model.apply(
        {"params": params, **model_state}, self.normalize(batch["image"]), train=True,
        mutable=["batch_stats"])
    labels = batch["labels"][:, 0]
    target = batch["boxes"][:, 0] / self.image_size
    class_loss = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], labels).mean()
    localization_loss = box_loss(outputs["boxes"], target, self.config.model.box_loss).mean()
    locator_loss = box_loss(outputs["coarse_boxes"], target, self.config.model.box_loss).mean()
    loss = (self.config.model.class_loss_weight * class_loss
            + self.config.model.box_loss_weight * (localization_loss + locator_loss))
    metrics = {"class_loss": class_loss, "box_loss": localization_loss,
               "locator_loss": locator_loss,
               "accuracy": jnp.mean(jnp.argmax(outputs["logits"], -1) == labels)}
    if self.config.model.regularizer != "none":
      penalty = multitask_regularizer(stacked_head_weights(params), self.config.model.regularizer)
      loss = loss + self.config.model.regularizer_weight * penalty
      metrics["regularizer"] = penalty
    return loss, (metrics, new_state)

  def _forward(self, variables, images):
    outputs = self.model.apply(variables, self.normalize(images), train=False)
    probabilities = jax.nn.softmax(outputs["logits"])
    boxes = normalized_to_pixels(outputs["boxes"], self.image_size)
    return {"classes": jnp.argmax(probabilities, -1).astype(jnp.int32),
            "scores": jnp.max(probabilities, -1), "boxes": boxes}

  def eval_outputs(self, variables, batch):
    outputs = self._forward(variables, batch["image"])
    outputs["iou"] = ops.paired_box_iou(outputs["boxes"], batch["boxes"][:, 0])
    return outputs

  def make_evaluator(self) -> ClassifyLocalizeEvaluator:
    return ClassifyLocalizeEvaluator()

  def predict(self, variables, images) -> dict[str, jax.Array]:
    """``classes [B]``, ``scores [B]`` and ``boxes [B, 4]`` (xyxy pixels) for NHWC images."""
    base.validate_images(images, self.image_shape, "predict")
    return self._predict(variables, jnp.asarray(images))

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    del variables
    count = min(len(batch["image"]), self.config.get("num_pictures", 16))
    scale = max(1, 256 // self.image_size)
    images = []
    for i in range(count):
      true_label = self.class_names[int(batch["labels"][i, 0])]
      image = viz.draw_boxes(batch["image"][i], batch["boxes"][i, :1], [true_label],
                             viz.TRUE_COLOUR, scale)
      predicted = f"{self.class_names[int(outputs['classes'][i])]} {outputs['scores'][i]:.2f}"
      # ``image`` is already enlarged: scale the predicted box to it.
      image = viz.draw_boxes(image, outputs["boxes"][i][None] * scale, [predicted],
                             viz.PREDICTED_COLOUR)
      images.append(image)
    return [viz.save_image_grid(images, f"{directory}/step_{step:07d}_predictions.png")]
