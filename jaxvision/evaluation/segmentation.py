"""Semantic segmentation: a confusion matrix summed inside jit, mean IoU, pixel accuracy.

``confusion_matrix`` is a pure, jit-able function of label and prediction maps; on
batch-sharded inputs XLA sums the per-device partial counts itself, so the same call works
on one device or a pod (with the project's mesh, ``parallel.make_mesh``, whose axes are
``Auto``; under a mesh with ``Explicit`` axes JAX asks for an explicit output sharding of
the scatter, so reshard the inputs or call it inside ``shard_map`` and ``psum``).
``segmentation_metrics`` turns accumulated counts into the usual numbers, and
``SegmentationEvaluator`` accumulates them over an evaluation split.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.evaluation.base import Evaluator


def confusion_matrix(labels: jax.Array, predictions: jax.Array, num_classes: int,
                     ignore_label: int = 255, valid: jax.Array | None = None) -> jax.Array:
  """Pixel counts per (true class, predicted class); jit-able with static ``num_classes``.

  Args:
    labels: int [...] true class per pixel, e.g. [B, H, W].
    predictions: int [...] predicted class per pixel, same shape.
    num_classes: C.
    ignore_label: label of pixels that are not counted (e.g. 255 for VOC's boundaries).
    valid: optional bool, broadcastable to ``labels`` (e.g. [B, 1, 1] from the batch's
      ``example_mask``): False pixels are not counted.

  Returns:
    int32 [C, C]: row = true class, column = predicted class. Pixels whose label is
    ``ignore_label`` or outside [0, C), or whose prediction is outside [0, C), are not
    counted.
  """
  chex.assert_equal_shape([labels, predictions])
  counted = ((labels != ignore_label) & (labels >= 0) & (labels < num_classes)
             & (predictions >= 0) & (predictions < num_classes))
  if valid is not None:
    counted &= jnp.broadcast_to(valid, labels.shape)
  index = jnp.where(counted, labels * num_classes + predictions, 0).astype(jnp.int32)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index.ravel()].add(
      counted.ravel().astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def segmentation_metrics(confusion: np.ndarray) -> dict[str, float | np.ndarray]:
  """mIoU, per-class IoU, pixel accuracy and mean class accuracy of a confusion matrix.

  Args:
    confusion: [C, C] counts, row = true class, column = predicted class.

  Returns:
    ``per_class_iou`` float64 [C]: ``tp / (tp + fp + fn)``, NaN for a class absent from
    both the labels and the predictions; ``mean_iou``: the mean over the other classes (the
    usual practice, e.g. mmsegmentation's ``nanmean``), so a class that never occurs does
    not count as 0 or 1; ``pixel_accuracy``: correct / counted pixels;
    ``mean_class_accuracy``: mean over classes present in the labels of their recall
    ``tp / (tp + fn)``. Means over no class are NaN.
  """
  confusion = np.asarray(confusion, np.float64)
  true_positive = np.diag(confusion)
  labelled = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)
  union = labelled + predicted - true_positive
  with np.errstate(divide="ignore", invalid="ignore"):
    per_class_iou = np.where(union > 0, true_positive / union, np.nan)
    class_accuracy = np.where(labelled > 0, true_positive / labelled, np.nan)
    pixel_accuracy = true_positive.sum() / confusion.sum()
  return {"mean_iou": _nanmean(per_class_iou), "per_class_iou": per_class_iou,
          "pixel_accuracy": float(pixel_accuracy),
          "mean_class_accuracy": _nanmean(class_accuracy)}


def _nanmean(values: np.ndarray) -> float:
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if len(defined) else float("nan")


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_label"))
def _batch_confusion(labels, predictions, valid, num_classes, ignore_label):
  return confusion_matrix(labels, predictions, num_classes, ignore_label, valid)


class SegmentationEvaluator(Evaluator):
  """Accumulates a confusion matrix over a split; ``result`` gives mIoU and accuracies.

  ``add`` reads ``batch["semantic"]`` (int [B, H, W] labels) and ``outputs["semantic"]``:
  int [B, H, W] predicted classes or float [B, H, W, C] scores (argmax taken); rows with
  ``batch["example_mask"] == False`` are padding. Counts are summed in int64 on the host.
  """

  def __init__(self, num_classes: int, ignore_label: int = 255,
               class_names: Sequence[str] | None = None):
    self.num_classes = num_classes
    self.ignore_label = ignore_label
    self.class_names = tuple(class_names or (f"class_{i}" for i in range(num_classes)))
    if len(self.class_names) != num_classes:
      raise ValueError(f"{len(self.class_names)} class_names for num_classes={num_classes}.")
    self.confusion = np.zeros((num_classes, num_classes), np.int64)

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    labels = np.asarray(batch["semantic"])
    predictions = np.asarray(outputs["semantic"])
    if predictions.ndim == labels.ndim + 1:
      predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
      raise ValueError(f"outputs['semantic'] has shape {predictions.shape} but the labels "
                       f"batch['semantic'] have {labels.shape}; predict at label resolution.")
    valid = np.asarray(batch["example_mask"], bool).reshape((-1,) + (1,) * (labels.ndim - 1))
    self.confusion += np.asarray(_batch_confusion(labels, predictions, valid,
                                                  self.num_classes, self.ignore_label))

  def result(self) -> dict[str, float]:
    """``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy`` and ``iou_<class name>`` for
    the classes present in labels or predictions."""
    metrics = segmentation_metrics(self.confusion)
    result = {key: metrics[key] for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy")}
    for name, iou in zip(self.class_names, metrics["per_class_iou"]):
      if not np.isnan(iou):
        result[f"iou_{name}"] = float(iou)
    return result
