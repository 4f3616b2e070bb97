"""Keypoint R-CNN (``configs/keypoint_rcnn_shapes.py``): training end to end, the keypoint
evaluation, ``predict`` with keypoints, pictures, config checks; the COCO flip permutation."""

import os

import chex
import numpy as np
import pytest

from jaxvision.data import coco_json
from jaxvision.evaluation import coco
from jaxvision.tasks import get_task

import configs.keypoint_rcnn_coco as keypoint_coco_config
import configs.keypoint_rcnn_shapes as keypoint_config
import quick_training

KEYPOINT_KEYS = tuple(f"keypoints_{key}" for key in coco.KEYPOINT_SUMMARY_KEYS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for 12 steps on 2 devices over two batches, evaluated with
  pictures."""
  config = keypoint_config.get_config("quick")
  picture_dir = str(tmp_path_factory.mktemp("keypoint_pictures"))
  run = quick_training.train_and_evaluate(config, 12, picture_dir)
  return config, run.task, run.state, run.history, run.eval_metrics, picture_dir


def test_keypoint_loss_trains_with_the_other_losses_and_falls(trained):
  _, _, _, history, _, _ = trained
  for name in ("loss", "rpn_objectness", "rpn_box", "roi_classifier", "roi_box",
               "roi_keypoint"):
    values = np.array([m[name] for m in history])
    assert np.all(np.isfinite(values)), (name, values)
  keypoint_losses = np.array([m["roi_keypoint"] for m in history])
  # Softmax over 56 x 56 positions starts near log(3136) = 8.05.
  assert 7.0 < keypoint_losses[0] < 9.0, keypoint_losses
  # From a uniform heatmap it falls slowly at first (the quick head is 8 channels wide).
  assert keypoint_losses[-2:].mean() < 0.96 * keypoint_losses[:2].mean(), keypoint_losses
  assert all(0.0 <= m["roi_keypoint_accuracy"] <= 1.0 for m in history)


def test_evaluation_reports_the_ten_keypoint_keys_beside_the_box_keys(trained):
  _, _, _, _, eval_metrics, picture_dir = trained
  assert set(coco.DETECTION_SUMMARY_KEYS) <= set(eval_metrics)
  assert len(KEYPOINT_KEYS) == 10 and set(KEYPOINT_KEYS) <= set(eval_metrics), sorted(
      eval_metrics)
  for key in KEYPOINT_KEYS:
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  assert any(name.endswith("detections.png") for name in os.listdir(picture_dir))


def test_predict_returns_keypoints_inside_their_boxes(trained):
  config, task, state, _, _, _ = trained
  images = task.train_batch(0)["image"][:2]
  out = task.predict(task.inference_variables(state), images)
  chex.assert_shape(out["keypoints"], (2, config.model.max_detections,
                                       config.model.num_keypoints, 3))
  keypoints, boxes = np.asarray(out["keypoints"]), np.asarray(out["boxes"])
  valid = np.asarray(out["valid"], bool)
  assert not keypoints[~valid].any()
  # Decoded at pixel centres of the box resized to ceil(w) x ceil(h): inside the box.
  xy = keypoints[valid][..., :2]
  low, high = boxes[valid][:, None, :2], np.maximum(boxes[valid][:, None, 2:],
                                                     boxes[valid][:, None, :2] + 1)
  assert np.all((xy >= low - 1e-3) & (xy <= high + 1e-3))


def test_keypoint_config_errors():
  config = keypoint_config.get_config("quick")
  config.data.features = tuple(f for f in config.data.features if f != "keypoints")
  with pytest.raises(ValueError, match="keypoints"):
    get_task(config)
  for sigmas in ((0.05,) * 3, (0.05, 0.05, 0.0, 0.05)):
    config = keypoint_config.get_config("quick")
    config.keypoint_sigmas = sigmas
    with pytest.raises(ValueError, match="keypoint_sigmas"):
      get_task(config)
  with pytest.raises(ValueError, match="quick"):
    keypoint_config.get_config("quik")


def test_shapes_sigmas_are_the_issues_figure():
  config = keypoint_config.get_config()
  assert config.keypoint_sigmas == (0.05,) * config.model.num_keypoints == (0.05,) * 4
  assert config.keypoint_skeleton == ((0, 1), (1, 2), (2, 3), (3, 0))


def test_coco_person_keypoints_swap_left_and_right_under_a_flip():
  """The coco_json source's flip permutation of the 17 person keypoints (torchvision's
  ``flip_inds``), which the keypoint COCO config relies on."""
  permutation = coco_json._flip_permutation(keypoint_coco_config.COCO_PERSON_KEYPOINTS)
  np.testing.assert_array_equal(
      permutation, [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15])
