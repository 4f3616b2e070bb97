"""Anchor/proposal to ground-truth matching and balanced sampling, static shapes.

``match_iou`` is torchvision's ``Matcher`` (Faster R-CNN): every anchor is assigned its
highest-IoU ground truth; it is positive when that IoU is ``>= high_threshold``, negative
below ``low_threshold`` and ignored in between. With ``allow_low_quality_matches`` every
ground truth additionally makes positive the anchors that reach its highest IoU (ties
included), each keeping its own best ground truth as the match. As in torchvision, a ground
truth that overlaps no anchor at all (highest IoU 0) makes every zero-IoU anchor positive.

Padding: ground truths with ``gt_valid == False`` never match (an image without any valid
ground truth yields only negatives); anchors with ``anchor_valid == False`` are ignored.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxvision.ops import boxes as box_ops

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


def match_iou(
    iou: chex.Array,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
    gt_valid: chex.Array | None = None,
    anchor_valid: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array]:
  """Matches anchors to ground truths given their IoU matrix.

  Args:
    iou: ``[G, A]`` quality of ground truth g for anchor a (e.g. ``box_iou(gt, anchors)``).
    high_threshold: IoU at or above which an anchor is positive.
    low_threshold: IoU below which an anchor is negative (``<= high_threshold``).
    allow_low_quality_matches: also make each ground truth's best anchors positive.
    gt_valid: optional ``bool[G]``; False rows are padding.
    anchor_valid: optional ``bool[A]``; False columns get label ``IGNORE``.

  Returns:
    ``(matched_gt, labels)``: ``int32[A]`` index of each anchor's best valid ground truth
    (0 when there is none; meaningful where ``labels == POSITIVE``), and ``int32[A]`` labels
    ``POSITIVE`` (1), ``NEGATIVE`` (0) or ``IGNORE`` (-1).
  """
  chex.assert_rank(iou, 2)
  if low_threshold > high_threshold:
    raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold "
                     f"({high_threshold}).")
  num_gt, num_anchors = iou.shape
  if gt_valid is not None:
    chex.assert_shape(gt_valid, (num_gt,))
  if anchor_valid is not None:
    chex.assert_shape(anchor_valid, (num_anchors,))
  if num_gt == 0:
    matched_gt = jnp.zeros((num_anchors,), jnp.int32)
    labels = jnp.full((num_anchors,), NEGATIVE, jnp.int32)
  else:
    gt_valid = jnp.ones((num_gt,), bool) if gt_valid is None else gt_valid.astype(bool)
    # Padding rows score -1, below any real IoU, so they never win a column.
    quality = jnp.where(gt_valid[:, None], iou, -1.0)
    matched_gt = jnp.argmax(quality, axis=0).astype(jnp.int32)
    best_quality = jnp.max(quality, axis=0)
    labels = jnp.where(best_quality >= high_threshold, POSITIVE,
                       jnp.where(best_quality < low_threshold, NEGATIVE, IGNORE))
    if allow_low_quality_matches:
      best_per_gt = jnp.max(quality, axis=1, keepdims=True)
      is_best_for_a_gt = jnp.any((quality == best_per_gt) & gt_valid[:, None], axis=0)
      labels = jnp.where(is_best_for_a_gt, POSITIVE, labels)
    labels = labels.astype(jnp.int32)
  if anchor_valid is not None:
    labels = jnp.where(anchor_valid, labels, IGNORE)
  return matched_gt, labels


def match_boxes(
    gt_boxes: chex.Array,
    anchors: chex.Array,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
    gt_valid: chex.Array | None = None,
    anchor_valid: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array]:
  """``match_iou(box_iou(gt_boxes, anchors), ...)``.

  Args:
    gt_boxes: ``[G, 4]`` ground-truth boxes (padded, see ``gt_valid``).
    anchors: ``[A, 4]`` anchors or proposals.
    high_threshold, low_threshold, allow_low_quality_matches, gt_valid, anchor_valid: see
      ``match_iou``. Faster R-CNN: RPN 0.7 / 0.3 with low-quality matches; box head
      0.5 / 0.5 without.

  Returns:
    ``(matched_gt int32[A], labels int32[A])``, see ``match_iou``.
  """
  chex.assert_rank([gt_boxes, anchors], 2)
  return match_iou(box_ops.box_iou(gt_boxes, anchors), high_threshold, low_threshold,
                   allow_low_quality_matches, gt_valid, anchor_valid)


def sample_balanced(
    rng: chex.PRNGKey,
    labels: chex.Array,
    num_samples: int,
    positive_fraction: float,
    valid: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array]:
  """Static-shape ``BalancedPositiveNegativeSampler``: a random, class-balanced minibatch.

  Draws uniformly without replacement ``min(#positives, int(num_samples *
  positive_fraction))`` positives, then ``min(#negatives, num_samples - drawn positives)``
  negatives.

  Args:
    rng: PRNG key.
    labels: ``int[A]`` with ``POSITIVE`` (1), ``NEGATIVE`` (0), anything else ignored.
    num_samples: static minibatch size (e.g. 256 anchors per image, 512 RoIs).
    positive_fraction: target fraction of positives (e.g. 0.5, 0.25).
    valid: optional ``bool[A]``; False entries are never drawn.

  Returns:
    ``(positive_mask, negative_mask)``, ``bool[A]`` each, disjoint, together at most
    ``num_samples`` True. For fixed-size indices use
    ``jnp.nonzero(positive_mask | negative_mask, size=num_samples, fill_value=-1)``.
  """
  chex.assert_rank(labels, 1)
  if not isinstance(num_samples, int) or num_samples <= 0:
    raise ValueError(f"num_samples must be a positive int; got {num_samples!r}.")
  if not 0.0 <= positive_fraction <= 1.0:
    raise ValueError(f"positive_fraction must be in [0, 1]; got {positive_fraction}.")
  labels = jnp.asarray(labels)
  num_anchors = labels.shape[0]
  is_positive = labels == POSITIVE
  is_negative = labels == NEGATIVE
  if valid is not None:
    chex.assert_shape(valid, (num_anchors,))
    is_positive &= jnp.asarray(valid, bool)
    is_negative &= jnp.asarray(valid, bool)
  max_positives = int(num_samples * positive_fraction)
  positive_key, negative_key = jax.random.split(rng)
  positive_mask = _draw(positive_key, is_positive, min(max_positives, num_anchors),
                        max_positives)
  num_negatives = num_samples - jnp.sum(positive_mask, dtype=jnp.int32)
  negative_mask = _draw(negative_key, is_negative, min(num_samples, num_anchors),
                        num_negatives)
  return positive_mask, negative_mask


def _draw(rng, eligible, static_count, count):
  """Uniformly draws ``min(count, sum(eligible))`` eligible entries (``count <= static_count``)."""
  if static_count == 0:
    return jnp.zeros_like(eligible)
  # Random priorities; ineligible entries can only be reached after every eligible one.
  priority = jnp.where(eligible, jax.random.uniform(rng, eligible.shape), 2.0)
  _, chosen = jax.lax.top_k(-priority, static_count)
  take = (jnp.arange(static_count) < count) & eligible[chosen]
  return jnp.zeros_like(eligible).at[chosen].set(take)
