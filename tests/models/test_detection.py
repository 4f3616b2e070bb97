"""Faster R-CNN pieces: parity with torchvision's detection code, hand-made target cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models import detection

torch = pytest.importorskip("torch")
tv_rpn = pytest.importorskip("torchvision.models.detection.rpn")
tv_roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
tv_utils = pytest.importorskip("torchvision.models.detection._utils")

IMAGE_SIZE = (96, 128)  # (height, width): not square, so a swapped axis would show


def _random_boxes(rng: np.random.Generator, count: int, size: float, max_side: float = 48.0
                  ) -> np.ndarray:
  top_left = rng.uniform(-8, size, (count, 2))
  sides = rng.uniform(1, max_side, (count, 2))
  return np.concatenate([top_left, top_left + sides], 1).astype(np.float32)


def _rpn_level_inputs(rng: np.random.Generator, counts: list[int]):
  anchors = [_random_boxes(rng, n, 110) for n in counts]
  logits = [rng.normal(size=n).astype(np.float32) for n in counts]
  deltas = [rng.normal(scale=0.3, size=(n, 4)).astype(np.float32) for n in counts]
  return anchors, logits, deltas


def test_propose_matches_torchvision_filter_proposals():
  rng = np.random.default_rng(0)
  counts = [300, 120, 40]  # the last level has fewer anchors than pre_nms_top_n
  anchors, logits, deltas = _rpn_level_inputs(rng, counts)
  pre_nms_top_n, post_nms_top_n = 60, 80

  boxes, scores, valid = jax.jit(functools.partial(
      detection.propose, image_size=IMAGE_SIZE, pre_nms_top_n=pre_nms_top_n,
      post_nms_top_n=post_nms_top_n, nms_threshold=0.7, min_size=2.0))(anchors, logits, deltas)

  reference = tv_rpn.RegionProposalNetwork(
      None, None, 0.7, 0.3, 256, 0.5, dict(training=pre_nms_top_n, testing=pre_nms_top_n),
      dict(training=post_nms_top_n, testing=post_nms_top_n), 0.7)
  reference.min_size = 2.0
  reference.eval()
  decoded = tv_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(
      torch.from_numpy(np.concatenate(deltas)), torch.from_numpy(np.concatenate(anchors)))
  want_boxes, want_scores = reference.filter_proposals(
      decoded[None], torch.from_numpy(np.concatenate(logits))[None], [IMAGE_SIZE], counts)
  want_boxes, want_scores = want_boxes[0].numpy(), want_scores[0].numpy()

  assert boxes.shape == (post_nms_top_n, 4)
  assert int(valid.sum()) == len(want_boxes)
  assert not np.any(valid[len(want_boxes):])
  np.testing.assert_allclose(boxes[:len(want_boxes)], want_boxes, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(scores[:len(want_boxes)], want_scores, rtol=1e-6)


def test_detect_matches_torchvision_postprocess_detections():
  rng = np.random.default_rng(1)
  num_rois, num_classes = 60, 4
  rois = _random_boxes(rng, num_rois, 100)
  rois[:, 2:] = np.maximum(rois[:, 2:], rois[:, :2] + 2)
  logits = rng.normal(scale=2.0, size=(num_rois, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(scale=0.5, size=(num_rois, num_classes + 1, 4)).astype(np.float32)
  # Near-duplicate RoIs with the same class so NMS has work to do.
  rois[30:], logits[30:] = rois[:30] + 1.0, logits[:30] + 0.1
  roi_valid = np.ones(num_rois, bool)
  roi_valid[-5:] = False  # padding RoIs must never give detections

  out = jax.jit(functools.partial(
      detection.detect, image_size=IMAGE_SIZE, box_weights=(10.0, 10.0, 5.0, 5.0),
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
  rng = np.random.default_rng(2)
  batch, samples, num_classes = 2, 16, 3
  logits = rng.normal(size=(batch, samples, num_classes + 1)).astype(np.float32)
  deltas = rng.normal(size=(batch, samples, num_classes + 1, 4)).astype(np.float32)
  classes = rng.integers(0, num_classes + 1, (batch, samples)).astype(np.int32)
  box_targets = rng.normal(size=(batch, samples, 4)).astype(np.float32)
  valid = np.ones((batch, samples), bool)
  valid[1, 12:] = False  # the second image had fewer candidates than samples_per_image

  losses = detection.box_head_loss(
      jnp.asarray(logits), jnp.asarray(deltas),
      {"classes": jnp.asarray(classes), "valid": jnp.asarray(valid),
       "box_targets": jnp.asarray(box_targets)}, beta=1 / 9)

  want_classifier, want_box = tv_roi_heads.fastrcnn_loss(
      torch.from_numpy(logits[valid]), torch.from_numpy(deltas[valid].reshape(-1, 16)),
      [torch.from_numpy(classes[valid]).long()], [torch.from_numpy(box_targets[valid])])
  np.testing.assert_allclose(losses["roi_classifier"], want_classifier.item(), rtol=1e-5)
  np.testing.assert_allclose(losses["roi_box"], want_box.item(), rtol=1e-5)


def test_rpn_loss_matches_torchvision_compute_loss():
  rng = np.random.default_rng(3)
  batch, num_anchors = 2, 50
  logits = rng.normal(size=(batch, num_anchors)).astype(np.float32)
  deltas = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)
  objectness = (rng.uniform(size=(batch, num_anchors)) < 0.3).astype(np.float32)
  sampled = rng.uniform(size=(batch, num_anchors)) < 0.6
  box_targets = rng.normal(size=(batch, num_anchors, 4)).astype(np.float32)

  losses = detection.rpn_loss(jnp.asarray(logits), jnp.asarray(deltas),
                              {"objectness": jnp.asarray(objectness),
                               "sampled": jnp.asarray(sampled),
                               "box_targets": jnp.asarray(box_targets)}, beta=1 / 9)

  class FixedSampler:
    """torchvision's loss with our sample instead of its own random one."""

    def __call__(self, labels):
      del labels
      positive = torch.from_numpy(sampled & (objectness == 1))
      negative = torch.from_numpy(sampled & (objectness == 0))
      return list(positive), list(negative)

  reference = tv_rpn.RegionProposalNetwork(None, None, 0.7, 0.3, 256, 0.5, {}, {}, 0.7)
  reference.fg_bg_sampler = FixedSampler()
  want_objectness, want_box = reference.compute_loss(
      torch.from_numpy(logits.reshape(-1)), torch.from_numpy(deltas.reshape(-1, 4)),
      list(torch.from_numpy(objectness)), list(torch.from_numpy(box_targets)))
  np.testing.assert_allclose(losses["rpn_objectness"], want_objectness.item(), rtol=1e-5)
  np.testing.assert_allclose(losses["rpn_box"], want_box.item(), rtol=1e-5)
