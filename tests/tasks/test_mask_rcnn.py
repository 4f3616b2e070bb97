"""Mask R-CNN (``configs/mask_rcnn_shapes.py``): training end to end, segm evaluation,
``predict`` with masks, pictures."""

import os

import chex
import numpy as np
import pytest

from jaxvision.evaluation import coco
from jaxvision.tasks import get_task

import configs.mask_rcnn_shapes as mask_config
import quick_training

SEGM_KEYS = tuple(f"segm_{key}" for key in coco.DETECTION_SUMMARY_KEYS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for a few steps on 2 devices over two batches, evaluated with
  pictures."""
  config = mask_config.get_config("quick")
  picture_dir = str(tmp_path_factory.mktemp("mask_pictures"))
  run = quick_training.train_and_evaluate(config, config.total_steps, picture_dir)
  return config, run.task, run.state, run.history, run.eval_metrics, picture_dir


def test_batches_carry_instance_masks():
  config = mask_config.get_config("quick")
  batch = get_task(config).train_batch(0)
  size, max_boxes = config.data.image_size, config.data.max_boxes
  chex.assert_shape(batch["masks"], (config.batch_size, max_boxes, size, size))
  masks = batch["masks"].astype(bool)
  # Every valid object has visible pixels inside its box; padding slots have none.
  valid = batch["box_valid"].astype(bool)
  assert np.all(masks[valid].any(axis=(1, 2))) and not masks[~valid].any()


def test_mask_loss_trains_with_the_other_losses_and_falls(trained):
  _, _, _, history, _, _ = trained
  for name in ("loss", "rpn_objectness", "rpn_box", "roi_classifier", "roi_box", "roi_mask"):
    values = np.array([m[name] for m in history])
    assert np.all(np.isfinite(values)), (name, values)
  mask_losses = np.array([m["roi_mask"] for m in history])
  # Sigmoid cross-entropy of a fresh head is near log 2; a few steps make it fall.
  assert 0.4 < mask_losses[0] < 1.5, mask_losses
  assert mask_losses[-2:].mean() < 0.9 * mask_losses[:2].mean(), mask_losses
  assert all(0.0 <= m["roi_mask_accuracy"] <= 1.0 for m in history)


def test_evaluation_reports_the_twelve_segm_keys_beside_the_box_keys(trained):
  _, _, _, _, eval_metrics, picture_dir = trained
  assert set(coco.DETECTION_SUMMARY_KEYS) <= set(eval_metrics)
  assert set(SEGM_KEYS) <= set(eval_metrics), sorted(eval_metrics)
  for key in SEGM_KEYS:
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  assert any(name.endswith("detections.png") for name in os.listdir(picture_dir))


def test_predict_returns_thresholded_masks_inside_their_boxes(trained):
  config, task, state, _, _, _ = trained
  images = task.train_batch(0)["image"][:2]
  out = task.predict(task.inference_variables(state), images)
  size, max_detections = config.data.image_size, config.model.max_detections
  chex.assert_shape(out["masks"], (2, max_detections, size, size))
  masks = np.asarray(out["masks"])
  assert masks.dtype == bool
  valid = np.asarray(out["valid"], bool)
  assert not masks[~valid].any()
  # A pasted mask stays inside its box grown by paste_masks' one-pixel border (28 -> 30).
  boxes = np.asarray(out["boxes"])
  ys, xs = np.arange(size)[:, None] + 0.5, np.arange(size)[None, :] + 0.5
  for b, d in zip(*np.nonzero(valid)):
    x1, y1, x2, y2 = boxes[b, d]
    margin_x, margin_y = (x2 - x1) / 28 + 1, (y2 - y1) / 28 + 1
    inside = ((xs >= x1 - margin_x) & (xs <= x2 + margin_x)
              & (ys >= y1 - margin_y) & (ys <= y2 + margin_y))
    assert not (masks[b, d] & ~inside).any()


def test_mask_head_without_masks_in_the_data_is_an_error():
  config = mask_config.get_config("quick")
  config.data.features = tuple(f for f in config.data.features if f != "masks")
  with pytest.raises(ValueError, match="masks"):
    get_task(config)


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="quick"):
    mask_config.get_config("quik")


def test_segm_evaluation_of_more_than_255_detections():
  """pycocotools' ``area`` overflows for more than 255 RLEs under numpy 2; the evaluator
  computes mask areas in chunks. 300 detections: one exact mask (score 1) per object of
  each of 100 images, plus two empty-mask detections of lower score."""
  images, size = 100, 16
  masks = np.zeros((images, 1, size, size), np.uint8)
  masks[:, 0, 2:10, 3:12] = 1
  batch = {"boxes": np.tile(np.array([[[3, 2, 12, 10]]], np.float32), (images, 1, 1)),
           "labels": np.zeros((images, 1), np.int32), "box_valid": np.ones((images, 1), bool),
           "masks": masks, "image_id": np.arange(images), "example_mask": np.ones(images, bool)}
  predicted = np.zeros((images, 3, size, size), bool)
  predicted[:, 0] = masks[:, 0].astype(bool)
  outputs = {"boxes": np.tile(batch["boxes"], (1, 3, 1)),
             "scores": np.tile(np.array([[1.0, 0.5, 0.4]], np.float32), (images, 1)),
             "classes": np.zeros((images, 3), np.int32), "valid": np.ones((images, 3), bool),
             "masks": predicted}
  evaluator = coco.CocoEvaluator(class_names=("a",), iou_type="segm")
  evaluator.add(outputs, batch)
  result = evaluator.result()
  assert result["AP"] == pytest.approx(1.0) and result["AR100"] == pytest.approx(1.0)
