"""Semantic segmentation metrics: hand-computed cases, a numpy reference, sharded jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import parallel
from jaxvision.evaluation import segmentation


def numpy_confusion(labels, predictions, num_classes, ignore_label):
  """Independent reference: a Python loop over the counted pixels."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  for label, prediction in zip(labels.ravel(), predictions.ravel()):
    if label != ignore_label and 0 <= label < num_classes:
      confusion[label, prediction] += 1
  return confusion


def test_hand_computed_case():
  # 2x3 image, classes {0, 1, 2}, one ignored pixel; class 2 is never labelled.
  labels = np.array([[0, 0, 1], [1, 255, 1]])
  predictions = np.array([[0, 1, 1], [1, 0, 2]])
  confusion = np.asarray(segmentation.confusion_matrix(jnp.asarray(labels),
                                                       jnp.asarray(predictions), 3))
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 1], [0, 0, 0]])
  metrics = segmentation.segmentation_metrics(confusion)
  # IoU_0 = 1 / (2 + 1 - 1) = 1/2; IoU_1 = 2 / (3 + 3 - 2) = 1/2; IoU_2 = 0 / (0 + 1 - 0) = 0.
  np.testing.assert_allclose(metrics["per_class_iou"], [0.5, 0.5, 0.0])
  assert metrics["mean_iou"] == pytest.approx(1 / 3)
  assert metrics["pixel_accuracy"] == pytest.approx(3 / 5)
  # Class 2 has no labelled pixel: accuracy over classes 0 (1/2) and 1 (2/3).
  assert metrics["mean_class_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_classes_absent_everywhere_are_left_out_of_the_mean():
  confusion = np.array([[3, 1, 0], [1, 5, 0], [0, 0, 0]])
  metrics = segmentation.segmentation_metrics(confusion)
  assert np.isnan(metrics["per_class_iou"][2])
  assert metrics["mean_iou"] == pytest.approx((3 / 5 + 5 / 7) / 2)


def test_random_maps_match_numpy_reference():
  rng = np.random.default_rng(0)
  num_classes = 5
  labels = rng.integers(0, num_classes, (3, 17, 13))
  labels[rng.random(labels.shape) < 0.1] = 255
  labels[0, 0, :3] = num_classes + 2  # out of range labels are not counted either
  predictions = rng.integers(0, num_classes, labels.shape)
  confusion = np.asarray(jax.jit(segmentation.confusion_matrix, static_argnums=2)(
      labels, predictions, num_classes))
  expected = numpy_confusion(labels, predictions, num_classes, 255)
  np.testing.assert_array_equal(confusion, expected)
  metrics = segmentation.segmentation_metrics(confusion)
  intersection = np.diag(expected)
  union = expected.sum(0) + expected.sum(1) - intersection
  assert metrics["mean_iou"] == pytest.approx(np.mean(intersection / union))
  assert metrics["pixel_accuracy"] == pytest.approx(intersection.sum() / expected.sum())


def test_sharded_over_eight_devices_equals_single_device():
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, (16, 9, 7))
  labels[rng.random(labels.shape) < 0.2] = 255
  predictions = rng.integers(0, 4, labels.shape)
  valid = np.arange(16)[:, None, None] < 13  # three padding rows
  sharding = parallel.data_sharding(parallel.make_mesh())
  sharded = [jax.device_put(x, sharding) for x in (labels, predictions, valid)]
  count = jax.jit(segmentation.confusion_matrix, static_argnums=2,
                  static_argnames="ignore_label")
  on_eight = count(sharded[0], sharded[1], 4, valid=sharded[2])
  on_one = count(*(jax.device_put(x, jax.devices()[0]) for x in (labels, predictions)), 4,
                 valid=valid)
  np.testing.assert_array_equal(np.asarray(on_eight), np.asarray(on_one))
  np.testing.assert_array_equal(np.asarray(on_one),
                                numpy_confusion(labels[:13], predictions[:13], 4, 255))


def test_evaluator_accumulates_batches_and_skips_padding():
  rng = np.random.default_rng(2)
  evaluator = segmentation.SegmentationEvaluator(3, class_names=["bg", "a", "b"])
  all_labels, all_predictions = [], []
  for _ in range(3):
    labels = rng.integers(0, 3, (4, 8, 8))
    logits = rng.normal(size=(4, 8, 8, 3))
    example_mask = np.array([True, True, True, False])
    evaluator.add({"semantic": logits}, {"semantic": labels, "example_mask": example_mask})
    all_labels.append(labels[:3])
    all_predictions.append(logits[:3].argmax(-1))
  expected = numpy_confusion(np.concatenate(all_labels), np.concatenate(all_predictions), 3, 255)
  np.testing.assert_array_equal(evaluator.confusion, expected)
  result = evaluator.result()
  metrics = segmentation.segmentation_metrics(expected)
  assert set(result) == {"mean_iou", "pixel_accuracy", "mean_class_accuracy", "iou_bg",
                         "iou_a", "iou_b"}
  assert result["mean_iou"] == pytest.approx(metrics["mean_iou"])
  assert result["mean_class_accuracy"] == pytest.approx(metrics["mean_class_accuracy"])
  assert result["iou_b"] == pytest.approx(metrics["per_class_iou"][2])
  with pytest.raises(ValueError, match="label resolution"):
    evaluator.add({"semantic": np.zeros((4, 4, 4), int)},
                  {"semantic": labels, "example_mask": example_mask})
