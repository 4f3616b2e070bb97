"""Region Proposal Network (Ren et al., 2015) on FPN levels, static-shape.

Follows torchvision's ``rpn.py``: anchors per pyramid level, a shared conv head with
per-anchor objectness and box deltas, training targets from anchors matched to ground
truth (IoU 0.7 / 0.3, low-quality matches allowed) with a fixed number of anchors sampled
per image (half positive), and proposals: decode, clip, tiny-box mask, per-level top-k, NMS
per level, the top ``post_nms_top_n`` per image, padded with a ``valid`` mask.

Boxes are ``(x1, y1, x2, y2)`` pixels of the model's input image. Per-image functions are
written for one image and ``jax.vmap``-ed over the batch by the detector.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision import ops
from jaxvision.models.losses import smooth_l1

RPN_OBJECTNESS_TARGETS = ("binary", "iou")
RPN_BOX_LOSSES = ("smooth_l1", "giou")
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def level_anchors(feature_shapes: Sequence[tuple[int, int]], strides: Sequence[int],
                  sizes: Sequence[float], aspect_ratios: Sequence[float],
                  scales: Sequence[float] = (1.0,)) -> list[jax.Array]:
  """Anchors of every pyramid level, ``[H_l * W_l * A, 4]`` each.

  The order is (row, column, anchor), the order in which :class:`RPNHead` flattens its
  outputs. Level ``l`` uses the sizes ``sizes[l] * scale`` for every scale (FPN: the one
  scale 1; RetinaNet: ``2 ** (k / 3)``, k = 0, 1, 2) and every aspect ratio, so
  ``A = len(scales) * len(aspect_ratios)``.
  """
  per_level_sizes = [tuple(size * scale for scale in scales) for size in sizes]
  per_level_ratios = [tuple(aspect_ratios)] * len(sizes)
  anchors = ops.generate_anchors(feature_shapes, strides, per_level_sizes, per_level_ratios)
  counts = ops.num_anchors_per_level(feature_shapes, per_level_sizes, per_level_ratios)
  return jnp.split(anchors, np.cumsum(counts)[:-1])


class RPNHead(nn.Module):
  """Shared 3x3 conv(s) + ReLU, then per-anchor objectness logits and box deltas per level.

  Attributes:
    num_anchors: anchors per feature-map location (scales x aspect ratios).
    num_convs: shared 3x3 conv + ReLU layers before the predictors (1 in Faster R-CNN).
    dtype: compute dtype; the outputs are float32 whatever it is (proposals and losses).
  """
  num_anchors: int
  num_convs: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    """``[N, H_l, W_l, C]`` per level -> logits ``[N, H_l*W_l*A]``, deltas ``[N, H_l*W_l*A, 4]``."""
    init = nn.initializers.normal(0.01)
    if self.num_convs < 1:
      raise ValueError(f"RPNHead needs at least one conv layer; got num_convs={self.num_convs}.")
    # The first layer keeps Faster R-CNN's name, so one-conv heads restore as before.
    convs = [nn.Conv(features[0].shape[-1], (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                     name="conv" if i == 0 else f"conv{i + 1}") for i in range(self.num_convs)]
    objectness = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype,
                         name="objectness")
    box_deltas = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype,
                         name="box_deltas")
    logits, deltas = [], []
    for x in features:
      chex.assert_rank(x, 4)
      hidden = x
      for conv in convs:
        hidden = nn.relu(conv(hidden))
      logits.append(objectness(hidden).reshape(x.shape[0], -1).astype(jnp.float32))
      deltas.append(box_deltas(hidden).reshape(x.shape[0], -1, 4).astype(jnp.float32))
    return logits, deltas


def rpn_targets(anchors: jax.Array, gt_boxes: jax.Array, gt_valid: jax.Array, rng: jax.Array, *,
                foreground_iou: float, background_iou: float, samples_per_image: int,
                positive_fraction: float, objectness_target: str = "binary",
                deltas: jax.Array | None = None) -> dict[str, jax.Array]:
  """Objectness and box targets of one image's anchors.

  Args:
    anchors: ``[A, 4]`` all anchors of the image (every level).
    gt_boxes: ``[G, 4]`` ground-truth boxes, padded.
    gt_valid: ``bool[G]``.
    rng: PRNG key of the balanced sampler.
    foreground_iou: IoU at or above which an anchor is positive (0.7).
    background_iou: IoU below which an anchor is negative (0.3); in between is ignored.
    samples_per_image: anchors sampled for the loss (256).
    positive_fraction: at most this fraction of the sample is positive (0.5).
    objectness_target: ``"binary"`` (Faster R-CNN: 1 for positives) or ``"iou"``: a
      positive's target is the IoU of its *predicted* box with its ground truth, so that the
      highest-scoring proposal of an object, the one NMS keeps, is its best-localized one
      (the localization-quality targets of IoU-Net / GFL). Negatives are 0 either way.
    deltas: ``[A, 4]`` the predicted box deltas; needed for ``objectness_target="iou"``.

  Returns:
    ``objectness``: float ``[A]`` target in [0, 1] (0 for negatives); ``positive``: bool
    ``[A]``; ``sampled``: bool ``[A]`` the anchors in the loss; ``box_targets``: ``[A, 4]``
    deltas of the matched box (meaningful where ``positive``).
  """
  matched_gt, labels = ops.match_boxes(gt_boxes, anchors, foreground_iou, background_iou,
                                       allow_low_quality_matches=True, gt_valid=gt_valid)
  sampled_positive, sampled_negative = ops.sample_balanced(rng, labels, samples_per_image,
                                                           positive_fraction)
  positive = labels == ops.POSITIVE
  matched_boxes = gt_boxes[matched_gt]
  box_targets = ops.encode_boxes(jnp.where(positive[:, None], matched_boxes, anchors), anchors,
                                 RPN_BOX_WEIGHTS)
  if objectness_target == "binary":
    quality = jnp.ones(positive.shape, jnp.float32)
  elif objectness_target == "iou":
    if deltas is None:
      raise ValueError("objectness_target='iou' needs the predicted deltas.")
    chex.assert_equal_shape([deltas, anchors])
    predicted = ops.decode_boxes(jax.lax.stop_gradient(deltas), anchors, RPN_BOX_WEIGHTS)
    quality = ops.paired_box_iou(predicted, matched_boxes)
  else:
    raise ValueError(f"Unknown rpn_objectness_target {objectness_target!r}; use one of "
                     f"{RPN_OBJECTNESS_TARGETS}.")
  return {"objectness": jnp.where(positive, quality, 0.0), "positive": positive,
          "sampled": sampled_positive | sampled_negative,
          "box_targets": box_targets}


def rpn_loss(logits: jax.Array, deltas: jax.Array, targets: dict[str, jax.Array],
             beta: float, box_loss: str = "smooth_l1",
             anchors: jax.Array | None = None) -> dict[str, jax.Array]:
  """Binary cross-entropy over sampled anchors + a box loss over positive ones.

  Both are normalized by the number of sampled anchors in the whole batch, as in
  torchvision. The objectness targets may be soft (``rpn_targets(objectness_target="iou")``).

  Args:
    logits: ``[N, A]`` objectness logits.
    deltas: ``[N, A, 4]`` predicted box deltas.
    targets: :func:`rpn_targets` outputs stacked over the batch.
    beta: smooth-L1 transition point (torchvision: 1/9).
    box_loss: ``"smooth_l1"`` on the deltas (Faster R-CNN) or ``"giou"``: ``1 - GIoU`` of
      the decoded box with its ground truth (Rezatofighi et al. 2019; detectron2's
      ``RPN.BBOX_REG_LOSS_TYPE="giou"``), which weighs every pixel of error by the
      object's size, as IoU-based metrics do.
    anchors: ``[A, 4]`` the anchors, to decode boxes (``box_loss="giou"``).

  Returns:
    ``{"rpn_objectness": scalar, "rpn_box": scalar}``.
  """
  chex.assert_equal_shape([logits, targets["objectness"], targets["sampled"]])
  chex.assert_equal_shape([deltas, targets["box_targets"]])
  sampled = targets["sampled"].astype(jnp.float32)
  count = jnp.maximum(jnp.sum(sampled), 1.0)
  cross_entropy = optax.sigmoid_binary_cross_entropy(logits, targets["objectness"])
  if box_loss == "smooth_l1":
    box_error = jnp.sum(smooth_l1(deltas, targets["box_targets"], beta), axis=-1)
  elif box_loss == "giou":
    if anchors is None:
      raise ValueError("rpn_loss(box_loss='giou') needs the anchors.")
    tiled = jnp.broadcast_to(anchors, deltas.shape)
    predicted = ops.decode_boxes(deltas, tiled, RPN_BOX_WEIGHTS).reshape(-1, 4)
    matched = ops.decode_boxes(targets["box_targets"], tiled, RPN_BOX_WEIGHTS).reshape(-1, 4)
    box_error = 1.0 - ops.paired_generalized_box_iou(predicted, matched).reshape(logits.shape)
  else:
    raise ValueError(f"Unknown RPN box loss {box_loss!r}; use one of {RPN_BOX_LOSSES}.")
  positive = sampled * targets["positive"]
  return {"rpn_objectness": jnp.sum(cross_entropy * sampled) / count,
          "rpn_box": jnp.sum(box_error * positive) / count}


def propose(anchors: Sequence[jax.Array], logits: Sequence[jax.Array],
            deltas: Sequence[jax.Array], image_size: tuple[int, int], *, pre_nms_top_n: int,
            post_nms_top_n: int, nms_threshold: float, min_size: float,
            voting_iou: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One image's proposals from its per-level RPN outputs (torchvision ``filter_proposals``).

  Per level the ``pre_nms_top_n`` highest-scoring anchors are decoded and clipped; boxes
  smaller than ``min_size`` are masked out; NMS runs per level; the ``post_nms_top_n``
  best survivors over all levels are kept. With ``voting_iou > 0`` each survivor is then
  replaced by the score-weighted mean of the candidates (all levels) at IoU >= voting_iou
  with it (:func:`jaxvision.ops.box_voting`); scores and order are unchanged.

  Args:
    anchors: per level ``[A_l, 4]``.
    logits: per level ``[A_l]`` objectness logits.
    deltas: per level ``[A_l, 4]``.
    image_size: ``(height, width)`` to clip to.
    pre_nms_top_n: candidates per level.
    post_nms_top_n: proposals returned (static length).
    nms_threshold: IoU threshold of the per-level NMS (0.7).
    min_size: minimum proposal side in pixels.
    voting_iou: IoU of the box voting after NMS; 0 turns it off (Faster R-CNN).

  Returns:
    ``boxes [P, 4]``, ``scores [P]`` (sigmoid objectness, decreasing), ``valid bool[P]``.
  """
  boxes, scores, levels = [], [], []
  for level, (level_anchor, level_logits, level_deltas) in enumerate(
      zip(anchors, logits, deltas)):
    top_logits, top = jax.lax.top_k(level_logits, min(pre_nms_top_n, level_logits.shape[0]))
    boxes.append(ops.decode_boxes(level_deltas[top], level_anchor[top], RPN_BOX_WEIGHTS))
    scores.append(jax.nn.sigmoid(top_logits))
    levels.append(jnp.full(top.shape, level, jnp.int32))
  boxes = ops.clip_boxes(jnp.concatenate(boxes), image_size)
  scores = jnp.concatenate(scores)
  large_enough = ops.small_box_mask(boxes, min_size)
  keep, valid = ops.batched_nms(boxes, scores, jnp.concatenate(levels), nms_threshold,
                                post_nms_top_n, valid=large_enough)
  keep = jnp.maximum(keep, 0)
  kept = boxes[keep]
  if voting_iou > 0:
    kept = ops.box_voting(kept, boxes, scores, voting_iou, valid=large_enough)
  return jnp.where(valid[:, None], kept, 0.0), jnp.where(valid, scores[keep], 0.0), valid
