"""The ``detection`` task: training on 2 devices, one compile, evaluation, Fast R-CNN."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.evaluation import coco
from jaxvision.tasks import detection as detection_task
from jaxvision.tasks import get_task

import configs.faster_rcnn_shapes as shapes_config
import quick_training

EVAL_KEYS = coco.DETECTION_SUMMARY_KEYS + ("rpn_AR100", "rpn_recall50", "rpn_recall75")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for 10 steps on a 2-device mesh over two batches (one image of
  the second without any ground truth), then evaluated."""
  config = shapes_config.get_config("quick")
  picture_dir = str(tmp_path_factory.mktemp("detection_pictures"))
  run = quick_training.train_and_evaluate(
      config, 10, picture_dir,
      edit_batches=quick_training.no_ground_truth_in_first_image_of_second_batch)
  return config, run.task, run.state, run.history, run.eval_metrics, picture_dir


def test_quick_config_trains_on_two_devices_with_finite_falling_loss(trained):
  _, _, _, history, _, _ = trained
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.8 * losses[:2].mean(), losses
  # The config refines its proposals: the refiner's two losses train with the rest.
  for name in ("rpn_objectness", "rpn_box", "refine_objectness", "refine_box",
               "roi_classifier", "roi_box"):
    assert all(np.isfinite(m[name]) for m in history), name


def test_evaluation_gives_coco_numbers_rpn_recall_and_pictures(trained):
  _, _, _, _, eval_metrics, picture_dir = trained
  assert set(EVAL_KEYS) <= set(eval_metrics)
  for key in EVAL_KEYS:
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  # Proposals of a briefly trained RPN already cover some objects.
  assert eval_metrics["rpn_AR100"] > 0.0
  pictures = os.listdir(picture_dir)
  assert any(name.endswith("detections.png") for name in pictures), pictures
  assert any(name.endswith("pr_curves.png") for name in pictures), pictures


def test_predict_returns_padded_detections_and_rejects_bad_images(trained):
  config, task, state, _, _, _ = trained
  images = task.train_batch(0)["image"][:2]
  out = task.predict(task.inference_variables(state), images)
  max_detections = config.model.max_detections
  chex.assert_shape(out["boxes"], (2, max_detections, 4))
  chex.assert_shape([out["scores"], out["classes"], out["valid"]], (2, max_detections))
  boxes = np.asarray(out["boxes"])
  assert np.all(boxes[..., 2:] >= boxes[..., :2])
  assert np.all(boxes >= 0) and np.all(boxes <= config.data.image_size)
  with pytest.raises(ValueError, match="images must be"):
    task.predict(task.inference_variables(state), images[:, :32])


def test_unknown_model_field_is_an_error_naming_it():
  config = shapes_config.get_config("quick")
  config.model.rpn_nms_treshold = 0.7
  with pytest.raises(ValueError, match="rpn_nms_treshold"):
    get_task(config)


def test_synthetic_proposals_cover_objects_inside_the_image():
  boxes = np.array([[10, 20, 40, 60], [50, 50, 60, 62], [0, 0, 0, 0]], np.float32)
  valid = np.array([True, True, False])
  proposals, proposal_valid = detection_task.synthetic_proposals(
      boxes, valid, 64, num_proposals=50, jittered_per_object=10, jitter=0.2,
      rng=np.random.default_rng(0))
  assert proposals.shape == (50, 4) and proposal_valid.all()
  assert np.all(proposals >= 0) and np.all(proposals <= 64)
  assert np.all(proposals[:, 2:] > proposals[:, :2])
  iou = np.asarray(ops.box_iou(jnp.asarray(proposals[:20]), jnp.asarray(boxes[:2])))
  # Each jittered copy overlaps its own object (and is listed in object order).
  assert np.all(iou[:10, 0] > 0.2) and np.all(iou[10:20, 1] > 0.2)


def test_fast_rcnn_mode_computes_losses_from_data_proposals():
  config = shapes_config.get_config("quick")
  config.model.proposal_source = "data"
  config.model.refine_proposals = False  # it refines the RPN's proposals
  task = get_task(config)
  batch = task.train_batch(0)
  chex.assert_shape(batch["proposals"], (config.batch_size,
                                         config.data_proposals.num_proposals, 4))
  np.testing.assert_array_equal(batch["proposals"], task.train_batch(0)["proposals"])
  variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
  assert "rpn_head" not in variables["params"]
  loss, (metrics, _) = jax.jit(task.loss_fn)(
      variables["params"], {"batch_stats": variables["batch_stats"]}, batch, jax.random.key(1))
  assert "rpn_objectness" not in metrics
  assert np.isfinite(float(loss)) and float(metrics["roi_classifier"]) > 0
  # Jittered ground truth gives the head foreground RoIs beyond the appended gt boxes.
  sampled_rois = config.batch_size * config.model.roi_samples_per_image
  foreground_rois = float(metrics["roi_foreground_fraction"]) * sampled_rois
  assert foreground_rois > 1.5 * batch["box_valid"].sum()


def test_rpn_recall_counts_objects_found_at_each_iou():
  # One 20 x 20 object; the best proposal lies inside it with IoU 0.625 (20 x 12.5).
  batch = {"boxes": np.array([[[10, 10, 30, 30], [0, 0, 0, 0]]], np.float32),
           "labels": np.array([[2, 0]]), "box_valid": np.array([[True, False]]),
           "area": np.array([[400.0, 0.0]], np.float32), "is_crowd": np.zeros((1, 2), bool),
           "image_id": np.array([7]), "example_mask": np.array([True])}
  proposals = np.array([[[10, 10, 30, 22.5], [60, 60, 70, 70], [0, 0, 0, 0]]], np.float32)
  outputs = {"boxes": np.zeros((1, 1, 4), np.float32), "scores": np.zeros((1, 1), np.float32),
             "classes": np.zeros((1, 1), np.int32), "valid": np.zeros((1, 1), bool),
             "proposal_boxes": proposals, "proposal_scores": np.array([[0.9, 0.8, 0.0]]),
             "proposal_valid": np.array([[True, True, False]])}
  evaluator = detection_task.DetectionEvaluator(class_names=("a", "b", "c"))
  evaluator.add(outputs, batch)
  result = evaluator.result()
  assert result["rpn_recall50"] == 1.0 and result["rpn_recall75"] == 0.0
  # Found at IoU 0.50, 0.55 and 0.60 of the ten COCO thresholds 0.50:0.95.
  np.testing.assert_allclose(result["rpn_AR100"], 0.3)
