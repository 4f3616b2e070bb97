"""Matcher and balanced sampler against plain numpy (and torchvision's Matcher)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops


def reference_match(iou, high, low, allow_low_quality):
  """torchvision's Matcher on the valid rows, as labels 1 / 0 / -1 and matched rows."""
  num_anchors = iou.shape[1]
  if iou.shape[0] == 0:
    return np.zeros(num_anchors, int), np.zeros(num_anchors, int)
  matched = iou.argmax(axis=0)
  best = iou.max(axis=0)
  labels = np.where(best >= high, 1, np.where(best < low, 0, -1))
  if allow_low_quality:
    for row in iou:
      labels[row == row.max()] = 1
  return matched, labels


def ious_with_ties(rng, num_gt, num_anchors):
  iou = np.round(rng.random((num_gt, num_anchors)) ** 3, 2).astype(np.float32)
  iou[0, :5] = iou[0].max()  # a ground truth with several equally good anchors
  iou[1] = np.minimum(iou[1], 0.2)  # a ground truth matched only through low quality
  return iou


@pytest.mark.parametrize("allow_low_quality", [False, True])
def test_match_iou_matches_reference_with_padding(allow_low_quality):
  rng = np.random.default_rng(0)
  iou = ious_with_ties(rng, 6, 50)
  gt_valid = np.array([1, 1, 1, 0, 1, 0], bool)
  padded_iou = iou.copy()
  padded_iou[~gt_valid] = 1.0  # padding rows must be ignored whatever they hold
  matched, labels = ops.match_iou(padded_iou, 0.7, 0.3, allow_low_quality, gt_valid=gt_valid)
  expected_matched, expected_labels = reference_match(iou[gt_valid], 0.7, 0.3,
                                                      allow_low_quality)
  np.testing.assert_array_equal(labels, expected_labels)
  positive = expected_labels == 1
  np.testing.assert_array_equal(np.asarray(matched)[positive],
                                np.nonzero(gt_valid)[0][expected_matched[positive]])
  assert (expected_labels == -1).any() and positive.any() and (expected_labels == 0).any()


def test_no_valid_ground_truth_gives_only_negatives():
  iou = np.random.default_rng(1).random((4, 30)).astype(np.float32)
  for gt_valid in (np.zeros(4, bool), None):
    matrix = iou if gt_valid is not None else iou[:0]
    matched, labels = ops.match_iou(matrix, 0.7, 0.3, True, gt_valid=gt_valid)
    np.testing.assert_array_equal(labels, 0)
    np.testing.assert_array_equal(matched, 0)


def test_match_boxes_and_anchor_padding():
  gt = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]], np.float32)
  anchors = np.array([[0, 0, 10, 11], [21, 20, 40, 40], [50, 50, 60, 60], [0, 0, 10, 10],
                      [0, 0, 6, 10]], np.float32)
  matched, labels = ops.match_boxes(gt, anchors, 0.7, 0.3, gt_valid=np.array([1, 1, 0], bool),
                                    anchor_valid=np.array([1, 1, 1, 0, 1], bool))
  np.testing.assert_array_equal(labels, [1, 1, 0, -1, -1])
  np.testing.assert_array_equal(np.asarray(matched)[:2], [0, 1])


def test_sampler_counts_and_membership():
  rng = np.random.default_rng(2)
  labels = rng.choice([1, 0, -1], 400, p=[0.05, 0.8, 0.15])
  valid = rng.random(400) < 0.9
  sample = jax.jit(ops.sample_balanced, static_argnums=(2, 3))
  for seed in range(5):
    positive, negative = (np.asarray(m) for m in
                          sample(jax.random.key(seed), labels, 64, 0.5, valid))
    num_positives = min(((labels == 1) & valid).sum(), 32)
    assert positive.sum() == num_positives
    assert negative.sum() == 64 - num_positives
    assert (labels[positive] == 1).all() and (labels[negative] == 0).all()
    assert valid[positive | negative].all()
  # Too few candidates: everything eligible is taken.
  few = valid & (np.arange(400) < 20)
  positive, negative = sample(jax.random.key(0), labels, 64, 0.5, few)
  np.testing.assert_array_equal(positive, (labels == 1) & few)
  np.testing.assert_array_equal(negative, (labels == 0) & few)


def test_sampler_is_uniform_and_keyed():
  labels = np.array([1] * 8 + [0] * 24)
  draw = jax.jit(jax.vmap(lambda key: ops.sample_balanced(key, labels, 8, 0.25)))
  positive, negative = draw(jax.random.split(jax.random.key(3), 2000))
  positive_rate = np.asarray(positive)[:, :8].mean(axis=0)  # 2 of 8 positives per draw
  negative_rate = np.asarray(negative)[:, 8:].mean(axis=0)  # 6 of 24 negatives per draw
  np.testing.assert_allclose(positive_rate, 0.25, atol=0.04)  # 4 standard deviations
  np.testing.assert_allclose(negative_rate, 0.25, atol=0.04)
  first, second = draw(jnp.stack([jax.random.key(5)] * 2))[0]
  np.testing.assert_array_equal(first, second)


def test_bad_thresholds_raise():
  with pytest.raises(ValueError, match="low_threshold"):
    ops.match_iou(np.zeros((2, 3), np.float32), 0.3, 0.7)


def test_matches_torchvision_matcher():
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  from torchvision.models.detection import _utils as det_utils  # pylint: disable=g-import-not-at-top
  iou = ious_with_ties(np.random.default_rng(4), 5, 60)
  for allow_low_quality in (False, True):
    expected = det_utils.Matcher(0.7, 0.3, allow_low_quality)(torch.from_numpy(iou)).numpy()
    matched, labels = ops.match_iou(iou, 0.7, 0.3, allow_low_quality)
    np.testing.assert_array_equal(labels, np.where(expected >= 0, 1, np.where(expected == -1,
                                                                                0, -1)))
    np.testing.assert_array_equal(np.asarray(matched)[expected >= 0], expected[expected >= 0])
