"""The ``retinanet`` task: dense heads' targets and decoding, training on 2 devices,
evaluation, predictions, and ``configs/retinanet_coco.py`` at a reduced image size."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import ops, parallel, trainer
from jaxvision.evaluation import coco
from jaxvision.models import retinanet as retinanet_lib
from jaxvision.models.rpn import level_anchors
from jaxvision.tasks import get_task

import configs.retinanet_coco as coco_config
import configs.retinanet_shapes as shapes_config
import quick_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for 10 steps on a 2-device mesh over two batches (one image of
  the second without any ground truth), then evaluated."""
  config = shapes_config.get_config("quick")
  picture_dir = str(tmp_path_factory.mktemp("retinanet_pictures"))
  run = quick_training.train_and_evaluate(
      config, 10, picture_dir,
      edit_batches=quick_training.no_ground_truth_in_first_image_of_second_batch)
  return config, run.task, run.state, run.history, run.eval_metrics, picture_dir


def test_quick_config_trains_on_two_devices_with_finite_falling_loss(trained):
  _, _, _, history, _, _ = trained
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.8 * losses[:2].mean(), losses
  for name in ("focal", "box"):
    values = np.array([m[name] for m in history])
    assert np.all(np.isfinite(values)) and values[-2:].mean() < values[:2].mean(), (name, values)
  # Every object gets at least its best anchor (low-quality matches).
  assert all(m["num_positive_anchors"] >= 1 for m in history)


def test_evaluation_gives_coco_numbers_and_pictures(trained):
  _, _, _, _, eval_metrics, picture_dir = trained
  assert set(coco.DETECTION_SUMMARY_KEYS) <= set(eval_metrics)
  assert not any(key.startswith("rpn_") for key in eval_metrics)  # no proposals
  for key in coco.DETECTION_SUMMARY_KEYS:
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  pictures = os.listdir(picture_dir)
  assert any(name.endswith("detections.png") for name in pictures), pictures
  assert any(name.endswith("pr_curves.png") for name in pictures), pictures


def test_predictions_are_well_formed(trained):
  config, task, state, _, _, _ = trained
  images = task.train_batch(0)["image"][:2]
  out = jax.device_get(task.predict(task.inference_variables(state), images))
  max_detections = config.model.max_detections
  chex.assert_shape(out["boxes"], (2, max_detections, 4))
  chex.assert_shape([out["scores"], out["classes"], out["valid"]], (2, max_detections))
  assert out["valid"].dtype == bool and out["valid"].any()
  valid = out["valid"]
  boxes = out["boxes"][valid]
  assert np.all(boxes[:, 2:] > boxes[:, :2])
  assert np.all(boxes >= 0) and np.all(boxes <= config.data.image_size)
  scores = out["scores"]
  assert np.all(scores[valid] > config.model.score_threshold) and np.all(scores <= 1)
  assert np.all(np.diff(scores, axis=1) <= 0)  # decreasing, padding (0) last
  assert np.all((out["classes"][valid] >= 0) & (out["classes"][valid] < task.num_classes))
  # Padding entries are zero and come after every real one.
  assert np.all(out["boxes"][~valid] == 0) and np.all(scores[~valid] == 0)
  assert np.all(np.diff(valid.astype(int), axis=1) <= 0)
  with pytest.raises(ValueError, match="images must be"):
    task.predict(task.inference_variables(state), images[:, :32])


def test_class_head_starts_at_the_prior_probability():
  model = retinanet_lib.RetinaNetHead(num_anchors=9, num_classes=3, num_convs=2)
  features = [jnp.ones((1, 8, 8, 16)), jnp.ones((1, 4, 4, 16))]
  variables = model.init(jax.random.key(0), features)
  logits, deltas = model.apply(variables, features)
  chex.assert_shape(logits, [(1, 8 * 8 * 9, 3), (1, 4 * 4 * 9, 3)])
  chex.assert_shape(deltas, [(1, 8 * 8 * 9, 4), (1, 4 * 4 * 9, 4)])
  np.testing.assert_allclose(jax.nn.sigmoid(jnp.concatenate(logits, 1)).mean(), 0.01, rtol=0.05)
  # One set of subnet weights for every level: 2 + 2 convs and 2 predictors.
  assert len(variables["params"]) == 6


def test_targets_match_at_the_papers_thresholds_and_decode_back():
  anchors = jnp.array([[0, 0, 10, 10], [0, 0, 10, 14], [0, 0, 10, 20], [30, 30, 40, 40],
                       [50, 50, 60, 60]], jnp.float32)
  gt = jnp.array([[0, 0, 10, 10], [31, 31, 41, 41], [0, 0, 0, 0]], jnp.float32)
  targets = retinanet_lib.retinanet_targets(
      anchors, gt, jnp.array([2, 1, 0]), jnp.array([True, True, False]), num_classes=3,
      foreground_iou=0.5, background_iou=0.4, box_weights=(1, 1, 1, 1))
  # IoUs with gt 0: 1, 0.714, 0.5 (positive); anchor 3 with gt 1: 0.68; anchor 4: 0.
  np.testing.assert_array_equal(targets["positive"], [True, True, True, True, False])
  np.testing.assert_array_equal(targets["valid"], [True] * 5)
  np.testing.assert_array_equal(targets["classes"].argmax(-1)[:4], [2, 2, 2, 1])
  np.testing.assert_array_equal(targets["classes"][4], [0, 0, 0])
  np.testing.assert_allclose(ops.decode_boxes(targets["box_targets"][:4], anchors[:4]),
                             gt[jnp.array([0, 0, 0, 1])], atol=1e-4)
  # An anchor at IoU in [0.4, 0.5) is ignored: out of both losses.
  ignored = retinanet_lib.retinanet_targets(
      jnp.array([[0, 0, 10, 22], [50, 50, 60, 60]], jnp.float32), gt[:1], jnp.array([0]),
      jnp.array([True]), num_classes=3, foreground_iou=0.5, background_iou=0.4,
      box_weights=(1, 1, 1, 1))
  # 10 x 22 vs 10 x 10: IoU 0.45, but it is the object's best anchor: low-quality positive.
  assert bool(ignored["positive"][0])
  two = jnp.array([[0, 0, 10, 10], [0, 0, 10, 22]], jnp.float32)
  middle = retinanet_lib.retinanet_targets(
      two, gt[:1], jnp.array([0]), jnp.array([True]), num_classes=3, foreground_iou=0.5,
      background_iou=0.4, box_weights=(1, 1, 1, 1))
  np.testing.assert_array_equal(middle["positive"], [True, False])
  np.testing.assert_array_equal(middle["valid"], [True, False])


def test_dense_detection_decodes_the_scored_anchor_and_class():
  anchors = level_anchors([(4, 4), (2, 2)], [8, 16], [8.0, 16.0], (0.5, 1.0, 2.0), (1.0,))
  logits = [jnp.full((a.shape[0], 3), -10.0) for a in anchors]
  deltas = [jnp.zeros((a.shape[0], 4)) for a in anchors]
  # Level 1, anchor 7 (row 1, column 0, ratio 1.0), class 2; level 0, anchor 20, class 0.
  logits[1] = logits[1].at[7, 2].set(3.0)
  logits[0] = logits[0].at[20, 0].set(1.0)
  out = retinanet_lib.detect_dense(anchors, logits, deltas, (32, 32), box_weights=(1, 1, 1, 1),
                                   score_threshold=0.05, pre_nms_top_n=5, nms_threshold=0.5,
                                   max_detections=4)
  np.testing.assert_array_equal(out["valid"], [True, True, False, False])
  np.testing.assert_array_equal(out["classes"][:2], [2, 0])
  np.testing.assert_allclose(out["scores"][:2], jax.nn.sigmoid(jnp.array([3.0, 1.0])), rtol=1e-6)
  np.testing.assert_allclose(out["boxes"][0], ops.clip_boxes(anchors[1][7], (32, 32)))
  np.testing.assert_allclose(out["boxes"][1], ops.clip_boxes(anchors[0][20], (32, 32)))


def test_unknown_model_field_is_an_error_naming_it():
  config = shapes_config.get_config("quick")
  config.model.focal_gama = 2.0
  with pytest.raises(ValueError, match="focal_gama"):
    get_task(config)


def test_anchor_sizes_must_match_the_levels():
  config = shapes_config.get_config("quick")
  config.model.max_level = 7  # one more level than anchor_sizes has
  task = get_task(config)
  with pytest.raises(ValueError, match="one size per level"):
    task.init_variables(jax.random.key(0), task.train_batch(0))


@pytest.mark.slow
def test_coco_config_r50_fpn_p3_p7_one_train_step():
  """The real R50-FPN with P3..P7 and 80 classes, one step on a fake batch at 256 px.

  The COCO recipe as configured, but a 256 px image (1024 px in the config) so that it
  runs in seconds on CPU: the levels, heads and losses are the same programs.
  """
  config = coco_config.get_config()
  config.data.image_size = 256
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  size, max_boxes = config.data.image_size, config.data.max_boxes
  rng = np.random.default_rng(0)
  boxes = np.zeros((1, max_boxes, 4), np.float32)
  boxes[0, :3] = [[25, 30, 100, 125], [150, 12, 225, 75], [5, 175, 22, 190]]
  batch = {"image": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
           "boxes": boxes, "labels": np.array([[0, 17, 79] + [0] * (max_boxes - 3)], np.int32),
           "box_valid": np.arange(max_boxes)[None] < 3,
           "area": np.zeros((1, max_boxes), np.float32),
           "is_crowd": np.zeros((1, max_boxes), bool), "image_id": np.zeros((1,), np.int32)}
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  params = state["params"]
  backbone_params = sum(x.size for x in jax.tree.leaves(params["backbone"]))
  assert 23e6 < backbone_params < 24e6  # ResNet-50 without its classifier: 23.5M
  assert {"fpn_P6", "fpn_P7"} <= set(params)  # the paper's extra levels
  # 9 anchors x 80 classes per location.
  assert params["head"]["class_logits"]["kernel"].shape == (3, 3, 256, 9 * 80)
  _, metrics = trainer.make_train_step(task, config)(state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["focal"]) > 0
  assert float(metrics["num_positive_anchors"]) >= 3
