"""RoI head pieces: parity with torchvision's ``roi_heads.py``, hand-made target cases, pooling."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models import roi_heads
from random_inputs import random_boxes

IMAGE_SIZE = (96, 128)  # (height, width): not square, so a swapped axis would show


def test_detect_matches_torchvision_postprocess_detections():
  torch = pytest.importorskip("torch")
  tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
  rng = np.random.default_rng(1)
  num_rois, num_classes = 60, 4
  rois = random_boxes(rng, num_rois, 100)
  rois[:, 2:] = np.maximum(rois[:, 2:], rois[:, :2] + 2)
  logits = rng.normal(scale=2.0, size=(num_rois, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(scale=0.5, size=(num_rois, num_classes + 1, 4)).astype(np.float32)
  # Near-duplicate RoIs with the same class so NMS has work to do.
  rois[30:], logits[30:] = rois[:30] + 1.0, logits[:30] + 0.1
  roi_valid = np.ones(num_rois, bool)
  roi_valid[-5:] = False  # padding RoIs must never give detections

  out = jax.jit(functools.partial(
      roi_heads.detect, image_size=IMAGE_SIZE, box_weights=(10.0, 10.0, 5.0, 5.0),
      score_threshold=0.05, nms_threshold=0.5, max_detections=40,
      candidates_per_image=num_rois * num_classes))(rois, roi_valid, logits, deltas)

  reference = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0),
                                    0.05, 0.5, 40)
  kept = slice(0, num_rois - 5)
  want_boxes, want_scores, want_labels = reference.postprocess_detections(
      torch.from_numpy(logits[kept]), torch.from_numpy(deltas[kept].reshape(-1, 4 * 5)),
      [torch.from_numpy(rois[kept])], [IMAGE_SIZE])
  want_boxes, want_scores, want_labels = (x[0].numpy() for x in (want_boxes, want_scores,
                                                                 want_labels))

  count = len(want_boxes)
  assert 10 < count <= 40
  assert int(out["valid"].sum()) == count
  np.testing.assert_allclose(out["scores"][:count], want_scores, rtol=1e-5)
  np.testing.assert_allclose(out["boxes"][:count], want_boxes, rtol=1e-4, atol=1e-3)
  np.testing.assert_array_equal(out["classes"][:count], want_labels - 1)  # 0-based classes
  assert np.all(out["scores"][count:] == 0)


def test_box_head_loss_matches_torchvision_fastrcnn_loss():
  torch = pytest.importorskip("torch")
  tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
  rng = np.random.default_rng(2)
  batch, samples, num_classes = 2, 16, 3
  logits = rng.normal(size=(batch, samples, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(size=(batch, samples, num_classes + 1, 4)).astype(np.float32)
  classes = rng.integers(0, num_classes + 1, (batch, samples)).astype(np.int32)
  box_targets = rng.normal(size=(batch, samples, 4)).astype(np.float32)
  valid = np.ones((batch, samples), bool)
  valid[1, 12:] = False  # the second image had fewer candidates than samples_per_image

  losses = roi_heads.box_head_loss(
      jnp.asarray(logits), jnp.asarray(deltas),
      {"classes": jnp.asarray(classes), "valid": jnp.asarray(valid),
       "box_targets": jnp.asarray(box_targets)}, beta=1 / 9)

  want_classifier, want_box = tv_roi_heads.fastrcnn_loss(
      torch.from_numpy(logits[valid]), torch.from_numpy(deltas[valid].reshape(-1, 16)),
      [torch.from_numpy(classes[valid]).long()], [torch.from_numpy(box_targets[valid])])
  np.testing.assert_allclose(losses["roi_classifier"], want_classifier.item(), rtol=1e-5)
  np.testing.assert_allclose(losses["roi_box"], want_box.item(), rtol=1e-5)


ROI_SETTINGS = dict(foreground_iou=0.5, background_iou=0.5, samples_per_image=24,
                    positive_fraction=0.25, box_weights=(10.0, 10.0, 5.0, 5.0))
# Compiled once and shared by the tests below (their inputs have one shape).
jit_roi_targets = jax.jit(functools.partial(roi_heads.roi_targets, **ROI_SETTINGS))


def test_roi_targets_add_gt_boxes_as_perfect_positives():
  gt_boxes = jnp.array([[4.0, 6.0, 30.0, 40.0], [40.0, 8.0, 60.0, 20.0], [0.0, 0.0, 0.0, 0.0]])
  gt_labels = jnp.array([3, 0, 0])
  gt_valid = jnp.array([True, True, False])
  # Only background proposals (and two padding slots): the gt boxes are the only positives.
  proposals = jnp.array([[0.0, 44.0, 10.0, 60.0]] * 28 + [[0.0, 0.0, 1.0, 1.0]] * 2)
  proposal_valid = jnp.arange(30) < 28
  targets = jit_roi_targets(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
                            jax.random.key(0))
  chex.assert_shape(targets["rois"], (ROI_SETTINGS["samples_per_image"], 4))
  assert int(targets["valid"].sum()) == ROI_SETTINGS["samples_per_image"]
  foreground = np.asarray(targets["classes"] > 0)
  assert foreground.sum() == 2
  np.testing.assert_array_equal(np.sort(targets["classes"][foreground]), [1, 4])  # label + 1
  np.testing.assert_array_equal(targets["box_targets"][foreground], np.zeros((2, 4)))
  np.testing.assert_allclose(np.sort(np.asarray(targets["rois"][foreground])[:, 0]), [4, 40])


def test_roi_targets_without_gt_are_background_with_finite_loss():
  proposals = random_boxes(np.random.default_rng(4), 30, 50)
  targets = jit_roi_targets(jnp.asarray(proposals), jnp.ones(30, bool), jnp.zeros((3, 4)),
                            jnp.zeros(3, jnp.int32), jnp.zeros(3, bool), jax.random.key(1))
  assert not np.any(targets["classes"])
  assert int(targets["valid"].sum()) == ROI_SETTINGS["samples_per_image"]
  batched = jax.tree.map(lambda x: x[None], targets)
  samples = ROI_SETTINGS["samples_per_image"]
  losses = jax.jit(functools.partial(roi_heads.box_head_loss, beta=1 / 9))(
      jnp.zeros((1, samples, 4)), jnp.ones((1, samples, 4, 4)), batched)
  np.testing.assert_allclose(losses["roi_classifier"], np.log(4), rtol=1e-6)
  assert float(losses["roi_box"]) == 0.0


def test_pool_rois_pools_every_image_from_its_own_levels_p2_to_p5():
  size = 512  # RoIs from 16 to 500 pixels wide, so that every level P2..P5 pools some
  # P6 is there as in RPN mode; RoIs are never pooled from it. (Drawn in one compiled function.)
  pyramid = jax.jit(lambda keys: {f"P{k}": jax.random.normal(key, (2, size >> k, size >> k, 3))
                                  for k, key in zip(range(2, 7), keys)})(
      jax.random.split(jax.random.key(0), 5))
  sides = np.geomspace(16, 500, 12)[None, :, None] * np.ones((2, 1, 2))
  corners = np.random.default_rng(5).uniform(size=(2, 12, 2)) * (size - sides)
  rois = jnp.asarray(np.concatenate([corners, corners + sides], -1), jnp.float32)
  assert set(np.asarray(ops.fpn_level_index(rois.reshape(-1, 4), 2, 5)).tolist()) == {0, 1, 2, 3}

  pooled = jax.jit(functools.partial(roi_heads.pool_rois, output_size=5, sampling_ratio=2))(
      pyramid, rois)

  chex.assert_shape(pooled, (2, 12, 5, 5, 3))
  one_image = jax.jit(functools.partial(ops.multilevel_roi_align, output_size=(5, 5),
                                        min_level=2, sampling_ratio=2))
  for image in range(2):
    want = one_image([pyramid[f"P{k}"][image] for k in range(2, 6)], rois[image])
    np.testing.assert_allclose(pooled[image], want, rtol=1e-6, atol=1e-6)
