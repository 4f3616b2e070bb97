"""Two-stage detection: Region Proposal Network + Fast/Faster R-CNN box head on an FPN.

The pieces follow torchvision's ``FasterRCNN`` (``rpn.py``, ``roi_heads.py``) with every
variable-length step made static-shape:

* RPN targets: anchors matched to ground truth (IoU 0.7 / 0.3, low-quality matches
  allowed), a fixed number of anchors sampled per image (half positive);
* proposals: decode, clip, tiny-box mask, per-level top-k, NMS per level, the top
  ``post_nms_top_n`` per image, padded with a ``valid`` mask;
* proposal refinement (``refine_proposals``, off in Faster R-CNN): a one-class box head on
  RoIAlign features regresses every proposal once more, a second proposal stage (Cascade
  R-CNN's stage; with one sample per bin its first layer is Cascade RPN's adaptive
  convolution: a linear map of bilinear samples on a grid inside the box);
* RoI targets: proposals plus the ground-truth boxes, matched at IoU 0.5 and sampled to a
  fixed ``roi_samples_per_image`` (a quarter positive);
* detections: softmax, per-class decoding, score threshold, per-class NMS, the top
  ``max_detections``, padded with a ``valid`` mask.

Conventions: boxes are ``(x1, y1, x2, y2)`` pixels of the model's input image. Class ids
inside this module are ``0`` for background and ``1..num_classes`` for objects; the
detections it returns use the dataset's ``0..num_classes-1`` ids. Per-image functions are
written for one image and ``jax.vmap``-ed over the batch.

With ``proposal_source="data"`` the RPN is absent and the proposals are supplied with the
batch: the Fast R-CNN setting (Girshick, 2015), for comparing the stages on the same data.
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
from jaxvision.models.fpn import FPN
from jaxvision.models.resnet import build_backbone

PROPOSAL_SOURCES = ("rpn", "data")
RPN_OBJECTNESS_TARGETS = ("binary", "iou")
RPN_BOX_LOSSES = ("smooth_l1", "giou")
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_BACKGROUND = 0  # class id of background RoIs


def smooth_l1(predicted: jax.Array, target: jax.Array, beta: float) -> jax.Array:
  """Elementwise smooth-L1 (torchvision's convention): quadratic below ``beta``, L1 above.

  ``beta == 0`` is the plain L1 loss.
  """
  if beta == 0:
    return jnp.abs(predicted - target)
  return optax.huber_loss(predicted, target, delta=beta) / beta


# --- RPN ---------------------------------------------------------------------------------


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
  """
  num_anchors: int
  num_convs: int = 1

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    """``[N, H_l, W_l, C]`` per level -> logits ``[N, H_l*W_l*A]``, deltas ``[N, H_l*W_l*A, 4]``."""
    init = nn.initializers.normal(0.01)
    if self.num_convs < 1:
      raise ValueError(f"RPNHead needs at least one conv layer; got num_convs={self.num_convs}.")
    # The first layer keeps Faster R-CNN's name, so one-conv heads restore as before.
    convs = [nn.Conv(features[0].shape[-1], (3, 3), padding=1, kernel_init=init,
                     name="conv" if i == 0 else f"conv{i + 1}") for i in range(self.num_convs)]
    objectness = nn.Conv(self.num_anchors, (1, 1), kernel_init=init, name="objectness")
    box_deltas = nn.Conv(4 * self.num_anchors, (1, 1), kernel_init=init, name="box_deltas")
    logits, deltas = [], []
    for x in features:
      chex.assert_rank(x, 4)
      hidden = x
      for conv in convs:
        hidden = nn.relu(conv(hidden))
      logits.append(objectness(hidden).reshape(x.shape[0], -1))
      deltas.append(box_deltas(hidden).reshape(x.shape[0], -1, 4))
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


# --- RoI box head --------------------------------------------------------------------------


def roi_targets(proposals: jax.Array, proposal_valid: jax.Array, gt_boxes: jax.Array,
                gt_labels: jax.Array, gt_valid: jax.Array, rng: jax.Array, *,
                foreground_iou: float, background_iou: float, samples_per_image: int,
                positive_fraction: float, box_weights: Sequence[float]) -> dict[str, jax.Array]:
  """Samples one image's training RoIs and their targets (torchvision ``select_training_samples``).

  The ground-truth boxes are appended to the proposals, so every object has at least one
  perfect positive RoI from the first step on.

  Args:
    proposals: ``[P, 4]``.
    proposal_valid: ``bool[P]``.
    gt_boxes: ``[G, 4]``.
    gt_labels: ``int[G]`` object classes ``0..C-1``.
    gt_valid: ``bool[G]``.
    rng: PRNG key of the sampler.
    foreground_iou: IoU at or above which a RoI is foreground (0.5).
    background_iou: IoU below which a RoI is background (0.5).
    samples_per_image: RoIs returned (static; 512 in the paper).
    positive_fraction: at most this fraction is foreground (0.25).
    box_weights: box-coder weights (10, 10, 5, 5).

  Returns:
    ``rois [S, 4]``, ``valid bool[S]`` (False where the image has too few candidates),
    ``classes int32[S]`` (0 background, ``label + 1`` foreground) and
    ``box_targets [S, 4]`` (meaningful where ``classes > 0``).
  """
  if proposals.shape[0] + gt_boxes.shape[0] < samples_per_image:
    raise ValueError(f"roi_samples_per_image={samples_per_image} exceeds the {proposals.shape[0]} "
                     f"proposals + {gt_boxes.shape[0]} ground-truth slots per image; lower it or "
                     "supply more proposals (rpn_post_nms_top_n_train, data_proposals).")
  candidates = jnp.concatenate([proposals, gt_boxes])
  candidate_valid = jnp.concatenate([proposal_valid, gt_valid])
  matched_gt, labels = ops.match_boxes(gt_boxes, candidates, foreground_iou, background_iou,
                                       gt_valid=gt_valid, anchor_valid=candidate_valid)
  sampled_positive, sampled_negative = ops.sample_balanced(rng, labels, samples_per_image,
                                                           positive_fraction)
  # Static-size gather of the sampled candidates: positives, then negatives, then padding.
  rank = jnp.where(sampled_positive, 0, jnp.where(sampled_negative, 1, 2))
  index = jnp.argsort(rank, stable=True)[:samples_per_image]
  valid = (sampled_positive | sampled_negative)[index]
  rois = candidates[index]
  match = matched_gt[index]
  is_foreground = sampled_positive[index]
  matched_boxes = gt_boxes[match]
  classes = jnp.where(is_foreground, gt_labels[match] + 1, _BACKGROUND)
  # Padding RoIs are unit boxes so the encoding and RoIAlign stay finite.
  safe_rois = jnp.where(valid[:, None], rois, jnp.array([0.0, 0.0, 1.0, 1.0]))
  box_targets = ops.encode_boxes(jnp.where(is_foreground[:, None], matched_boxes, safe_rois),
                                 safe_rois, box_weights)
  return {"rois": safe_rois, "valid": valid, "classes": classes.astype(jnp.int32),
          "box_targets": box_targets}


class RoIBoxHead(nn.Module):
  """Two fully connected layers, then class logits ``C + 1`` and per-class box deltas.

  Attributes:
    num_classes: object classes (without background).
    hidden: width of the two FC layers (1024 for COCO).
  """
  num_classes: int
  hidden: int = 1024

  @nn.compact
  def __call__(self, roi_features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[N, R, S, S, C]`` pooled features -> logits ``[N, R, C+1]``, deltas ``[N, R, C+1, 4]``."""
    chex.assert_rank(roi_features, 5)
    x = roi_features.reshape(roi_features.shape[:2] + (-1,))
    x = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
    x = nn.relu(nn.Dense(self.hidden, name="fc2")(x))
    # Detectron2's initialization of the predictors: small logits and deltas at the start.
    logits = nn.Dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01),
                      name="class_logits")(x)
    deltas = nn.Dense(4 * (self.num_classes + 1), kernel_init=nn.initializers.normal(0.001),
                      name="box_deltas")(x)
    return logits, deltas.reshape(deltas.shape[:2] + (self.num_classes + 1, 4))


def box_head_loss(logits: jax.Array, deltas: jax.Array, targets: dict[str, jax.Array],
                  beta: float) -> dict[str, jax.Array]:
  """Cross-entropy over sampled RoIs + smooth-L1 on the true class's deltas of foreground ones.

  Both are normalized by the number of sampled RoIs in the batch (torchvision).

  Args:
    logits: ``[N, S, C+1]``.
    deltas: ``[N, S, C+1, 4]``.
    targets: :func:`roi_targets` outputs stacked over the batch.
    beta: smooth-L1 transition point.

  Returns:
    ``{"roi_classifier": scalar, "roi_box": scalar, "roi_accuracy": scalar}``.
  """
  classes = targets["classes"]
  valid = targets["valid"].astype(jnp.float32)
  count = jnp.maximum(jnp.sum(valid), 1.0)
  cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
  class_deltas = jnp.take_along_axis(deltas, classes[..., None, None], axis=2)[..., 0, :]
  box_error = jnp.sum(smooth_l1(class_deltas, targets["box_targets"], beta), axis=-1)
  foreground = valid * (classes > _BACKGROUND)
  correct = (jnp.argmax(logits, -1) == classes).astype(jnp.float32)
  return {"roi_classifier": jnp.sum(cross_entropy * valid) / count,
          "roi_box": jnp.sum(box_error * foreground) / count,
          "roi_accuracy": jnp.sum(correct * valid) / count}


def detect(rois: jax.Array, roi_valid: jax.Array, logits: jax.Array, deltas: jax.Array,
           image_size: tuple[int, int], *, box_weights: Sequence[float], score_threshold: float,
           nms_threshold: float, max_detections: int, candidates_per_image: int,
           min_size: float = 1e-2) -> dict[str, jax.Array]:
  """One image's final detections (torchvision ``postprocess_detections``).

  Every (RoI, class) pair is a candidate box with the class's softmax score; candidates
  under ``score_threshold`` or smaller than ``min_size`` are dropped, the
  ``candidates_per_image`` best enter a per-class NMS, and the top ``max_detections``
  survive. The pre-NMS cap keeps the NMS static and cheap; it changes nothing as long as
  it exceeds the number of candidates above the score threshold.

  Args:
    rois: ``[R, 4]`` proposals.
    roi_valid: ``bool[R]``.
    logits: ``[R, C+1]``.
    deltas: ``[R, C+1, 4]``.
    image_size: ``(height, width)`` to clip to.
    box_weights: box-coder weights.
    score_threshold: minimum class probability (0.05).
    nms_threshold: per-class NMS IoU threshold (0.5).
    max_detections: static output length (100).
    candidates_per_image: static pre-NMS cap.
    min_size: minimum box side.

  Returns:
    ``boxes [D, 4]``, ``scores [D]`` (decreasing), ``classes int32[D]`` (``0..C-1``),
    ``valid bool[D]``; padding entries are zero.
  """
  num_classes = logits.shape[-1] - 1
  probabilities = jax.nn.softmax(logits, axis=-1)[:, 1:]
  boxes = ops.decode_boxes(deltas[:, 1:], jnp.broadcast_to(rois[:, None], deltas[:, 1:].shape),
                           box_weights)
  boxes = ops.clip_boxes(boxes, image_size).reshape(-1, 4)
  scores = probabilities.reshape(-1)
  classes = jnp.tile(jnp.arange(num_classes, dtype=jnp.int32), rois.shape[0])
  candidate = (jnp.repeat(roi_valid, num_classes) & (scores > score_threshold)
               & ops.small_box_mask(boxes, min_size))
  top_scores, top = jax.lax.top_k(jnp.where(candidate, scores, -1.0),
                                  min(candidates_per_image, scores.shape[0]))
  boxes, classes, candidate = boxes[top], classes[top], candidate[top]
  keep, valid = ops.batched_nms(boxes, top_scores, classes, nms_threshold, max_detections,
                                valid=candidate)
  keep = jnp.maximum(keep, 0)
  return {"boxes": jnp.where(valid[:, None], boxes[keep], 0.0),
          "scores": jnp.where(valid, top_scores[keep], 0.0),
          "classes": jnp.where(valid, classes[keep], 0),
          "valid": valid}


# --- the detector ------------------------------------------------------------------------


class FasterRCNN(nn.Module):
  """ResNet + FPN + RPN + RoI box head (or Fast R-CNN with supplied proposals).

  Attributes:
    num_classes: object classes (without background).
    backbone: preset name for :func:`~jaxvision.models.resnet.build_backbone`.
    backbone_kwargs: overrides of the preset (``norm``, ``stem``, ...).
    fpn_channels: channels of every pyramid level (256).
    proposal_source: ``"rpn"`` (Faster R-CNN) or ``"data"`` (Fast R-CNN: proposals are
      arguments of ``__call__``).
    anchor_sizes: one anchor size (pixels) per RPN level ``P2..P6``.
    anchor_scales: multipliers of each level's size; every one gives anchors at every
      location (FPN: ``(1.0,)``; RetinaNet: ``(1, 2 ** (1 / 3), 2 ** (2 / 3))``).
    aspect_ratios: anchor height / width ratios at every location.
    rpn_head_convs: shared 3x3 conv layers of the RPN head (1 in Faster R-CNN).
    rpn_foreground_iou, rpn_background_iou: anchor matching thresholds (0.7 / 0.3).
    rpn_samples_per_image, rpn_positive_fraction: anchor sampling (256, 0.5).
    rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test: candidates per level before NMS.
    rpn_post_nms_top_n_train, rpn_post_nms_top_n_test: proposals per image.
    rpn_nms_threshold: IoU of the proposal NMS (0.7).
    rpn_min_size: minimum proposal side (pixels).
    rpn_objectness_target: ``"binary"`` or ``"iou"`` (see :func:`rpn_targets`).
    rpn_box_voting_iou: box voting of the proposals after NMS (see :func:`propose`); 0
      (Faster R-CNN) turns it off.
    refine_proposals: one class-agnostic refinement of the RPN's proposals (False in
      Faster R-CNN; RPN mode only): a :class:`RoIBoxHead` with one class on RoIAlign
      features of each proposal regresses it once more, as a stage of Cascade R-CNN (Cai &
      Vasconcelos, 2018) does. Features pooled inside the proposal localize much better than
      the RPN's sliding window at the anchor. Scores and order stay the RPN's. Trained like
      the RoI head, on ``roi_samples_per_image`` samples of the proposals + ground truth
      (the RoI head's thresholds), losses ``refine_objectness, refine_box`` (which also
      train the features it pools); in training the RoI head then samples from these RoIs
      regressed (Cascade R-CNN), at inference it takes every refined proposal, and so does
      ``proposal_boxes``.
    refine_sampling_ratio: RoIAlign samples per bin per axis of the refiner (2, as the RoI
      head's; 1 pools a quarter of the samples: RoIAlign's backward pass, a scatter-add, is
      most of the refiner's cost on CPU).
    roi_foreground_iou, roi_background_iou: RoI matching thresholds (0.5 / 0.5).
    roi_samples_per_image, roi_positive_fraction: RoI sampling (512, 0.25).
    roi_pool_size, roi_sampling_ratio: RoIAlign output side and samples per bin (7, 2).
    box_head_hidden: width of the head's two FC layers (1024).
    box_weights: box-coder weights of the head (10, 10, 5, 5).
    smooth_l1_beta: smooth-L1 transition point of both box losses (1/9).
    rpn_box_loss: ``"smooth_l1"`` or ``"giou"`` (see :func:`rpn_loss`).
    rpn_box_loss_weight: factor of the RPN's box loss (1 in Faster R-CNN). Normalized by
      all sampled anchors, the box loss of an image with few objects is small next to the
      other three; a larger weight trains tighter proposals.
    score_threshold, nms_threshold, max_detections, detection_candidates: inference.
  """
  num_classes: int
  backbone: str = "resnet50"
  backbone_kwargs: Any = None
  fpn_channels: int = 256
  proposal_source: str = "rpn"
  anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0)
  anchor_scales: Sequence[float] = (1.0,)
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  rpn_head_convs: int = 1
  rpn_foreground_iou: float = 0.7
  rpn_background_iou: float = 0.3
  rpn_samples_per_image: int = 256
  rpn_positive_fraction: float = 0.5
  rpn_pre_nms_top_n_train: int = 2000
  rpn_pre_nms_top_n_test: int = 1000
  rpn_post_nms_top_n_train: int = 2000
  rpn_post_nms_top_n_test: int = 1000
  rpn_nms_threshold: float = 0.7
  rpn_min_size: float = 1e-3
  rpn_objectness_target: str = "binary"
  rpn_box_voting_iou: float = 0.0
  refine_proposals: bool = False
  refine_sampling_ratio: int = 2
  roi_foreground_iou: float = 0.5
  roi_background_iou: float = 0.5
  roi_samples_per_image: int = 512
  roi_positive_fraction: float = 0.25
  roi_pool_size: int = 7
  roi_sampling_ratio: int = 2
  box_head_hidden: int = 1024
  box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
  smooth_l1_beta: float = 1.0 / 9.0
  rpn_box_loss: str = "smooth_l1"
  rpn_box_loss_weight: float = 1.0
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  max_detections: int = 100
  detection_candidates: int = 1000

  def setup(self):
    if self.proposal_source not in PROPOSAL_SOURCES:
      raise ValueError(f"Unknown proposal_source {self.proposal_source!r}; use one of "
                       f"{PROPOSAL_SOURCES}.")
    if self.rpn_box_loss not in RPN_BOX_LOSSES:
      raise ValueError(f"Unknown rpn_box_loss {self.rpn_box_loss!r}; use one of "
                       f"{RPN_BOX_LOSSES}.")
    if self.rpn_objectness_target not in RPN_OBJECTNESS_TARGETS:
      raise ValueError(f"Unknown rpn_objectness_target {self.rpn_objectness_target!r}; use one "
                       f"of {RPN_OBJECTNESS_TARGETS}.")
    if not 0.0 <= self.rpn_box_voting_iou <= 1.0:
      raise ValueError(f"rpn_box_voting_iou must be in [0, 1] (0: no voting), got "
                       f"{self.rpn_box_voting_iou}.")
    self.backbone_module = build_backbone(self.backbone, name="backbone",
                                          **(self.backbone_kwargs or {}))
    self.fpn = FPN(self.fpn_channels, extra_max_pool_level=self.proposal_source == "rpn")
    if self.proposal_source == "rpn":
      self.rpn_head = RPNHead(len(self.anchor_scales) * len(self.aspect_ratios),
                              self.rpn_head_convs)
    if self.refine_proposals:
      if self.proposal_source != "rpn":
        raise ValueError("refine_proposals=True refines the RPN's proposals; it needs "
                         "proposal_source='rpn'.")
      self.proposal_refiner = RoIBoxHead(1, self.box_head_hidden)
    self.box_head = RoIBoxHead(self.num_classes, self.box_head_hidden)

  def __call__(self, images: jax.Array, *, train: bool, gt_boxes: jax.Array | None = None,
               gt_labels: jax.Array | None = None, gt_valid: jax.Array | None = None,
               proposals: jax.Array | None = None,
               proposal_valid: jax.Array | None = None) -> dict[str, Any]:
    """Training losses (``train=True``) or detections (``train=False``).

    Args:
      images: ``[N, H, W, 3]`` normalized float images.
      train: training mode: needs the ground truth and the ``sampling`` PRNG stream.
      gt_boxes: ``[N, G, 4]`` (training).
      gt_labels: ``int[N, G]`` classes ``0..C-1`` (training).
      gt_valid: ``bool[N, G]`` (training).
      proposals: ``[N, P, 4]`` (``proposal_source="data"`` only).
      proposal_valid: ``bool[N, P]`` (``proposal_source="data"`` only).

    Returns:
      Training: ``{"losses": {name: scalar}, "metrics": {name: scalar}}`` with losses
      ``rpn_objectness, rpn_box`` (RPN mode) and ``roi_classifier, roi_box``.
      Inference: ``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``,
      ``valid [N, D]`` and the proposals ``proposal_boxes [N, P, 4]``,
      ``proposal_scores [N, P]``, ``proposal_valid [N, P]``.
    """
    chex.assert_rank(images, 4)
    if self.backbone_module.strides["C2"] != 4:
      raise ValueError(f"FasterRCNN needs C2 at stride 4 (the FPN levels P2..P6 at strides "
                       f"4..64); backbone {self.backbone!r} with {self.backbone_kwargs} has "
                       f"{self.backbone_module.strides}. Use stem='imagenet'.")
    batch_size = images.shape[0]
    image_size = images.shape[1:3]
    pyramid = self.fpn(self.backbone_module(images, train))
    losses, metrics = {}, {}
    if train:
      if gt_boxes is None or gt_labels is None or gt_valid is None:
        raise ValueError("FasterRCNN(train=True) needs gt_boxes, gt_labels and gt_valid.")
      chex.assert_shape(gt_boxes, (batch_size, None, 4))
      chex.assert_equal_shape([gt_labels, gt_valid])
      rpn_rng, roi_rng = jax.random.split(self.make_rng("sampling"))

    if self.proposal_source == "rpn":
      rpn_levels = sorted(pyramid, key=lambda name: int(name[1:]))
      if len(rpn_levels) != len(self.anchor_sizes):
        raise ValueError(f"anchor_sizes has {len(self.anchor_sizes)} entries but the RPN "
                         f"runs on {len(rpn_levels)} levels {rpn_levels}; give one size per level.")
      features = [pyramid[name] for name in rpn_levels]
      logits, deltas = self.rpn_head(features)
      anchors = level_anchors([x.shape[1:3] for x in features],
                              [2 ** int(name[1:]) for name in rpn_levels], self.anchor_sizes,
                              self.aspect_ratios, self.anchor_scales)
      pre_nms = self.rpn_pre_nms_top_n_train if train else self.rpn_pre_nms_top_n_test
      post_nms = self.rpn_post_nms_top_n_train if train else self.rpn_post_nms_top_n_test
      proposals, proposal_scores, proposal_valid = jax.vmap(
          lambda l, d: propose(anchors, l, d, image_size, pre_nms_top_n=pre_nms,
                               post_nms_top_n=post_nms, nms_threshold=self.rpn_nms_threshold,
                               min_size=self.rpn_min_size, voting_iou=self.rpn_box_voting_iou))(
              jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas))
      if train:
        all_anchors = jnp.concatenate(anchors)
        all_deltas = jnp.concatenate(deltas, 1)
        targets = jax.vmap(lambda b, v, key, d: rpn_targets(
            all_anchors, b, v, key, foreground_iou=self.rpn_foreground_iou,
            background_iou=self.rpn_background_iou, samples_per_image=self.rpn_samples_per_image,
            positive_fraction=self.rpn_positive_fraction,
            objectness_target=self.rpn_objectness_target, deltas=d))(
                gt_boxes, gt_valid, jax.random.split(rpn_rng, batch_size), all_deltas)
        rpn_losses = rpn_loss(jnp.concatenate(logits, 1), all_deltas, targets,
                              self.smooth_l1_beta, self.rpn_box_loss, all_anchors)
        rpn_losses["rpn_box"] = self.rpn_box_loss_weight * rpn_losses["rpn_box"]
        losses.update(rpn_losses)
    else:
      if proposals is None or proposal_valid is None:
        raise ValueError("proposal_source='data' (Fast R-CNN) needs proposals and "
                         "proposal_valid in every batch.")
      chex.assert_shape(proposals, (batch_size, None, 4))
      chex.assert_shape(proposal_valid, proposals.shape[:2])
      proposal_scores = proposal_valid.astype(jnp.float32)

    if self.refine_proposals:
      if train:
        # As in Cascade R-CNN, the refiner trains on a sample of the proposals (+ ground
        # truth) and the RoI head on that sample, regressed and matched again.
        refine_rng, roi_rng = jax.random.split(roi_rng)
        refine_batch = self._sample_rois(proposals, proposal_valid, gt_boxes,
                                         jnp.zeros_like(gt_labels), gt_valid, refine_rng)
        proposals, proposal_valid = refine_batch["rois"], refine_batch["valid"]
      refine_logits, refine_deltas = self.proposal_refiner(
          self._pool(pyramid, proposals, self.refine_sampling_ratio))
      if train:
        refine_losses = box_head_loss(refine_logits, refine_deltas, refine_batch,
                                      self.smooth_l1_beta)
        metrics["refine_accuracy"] = refine_losses["roi_accuracy"]
        losses["refine_objectness"] = refine_losses["roi_classifier"]
        losses["refine_box"] = refine_losses["roi_box"]
      # The refined boxes are inputs of the RoI head, not a path for its gradients.
      refined = ops.decode_boxes(jax.lax.stop_gradient(refine_deltas[:, :, 1]), proposals,
                                 self.box_weights)
      proposals = jnp.where(proposal_valid[..., None], ops.clip_boxes(refined, image_size), 0.0)

    if train:
      roi_batch = self._sample_rois(proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
                                    roi_rng)
      rois, roi_valid = roi_batch["rois"], roi_batch["valid"]
    else:
      rois, roi_valid = proposals, proposal_valid
    class_logits, box_deltas = self.box_head(self._pool(pyramid, rois, self.roi_sampling_ratio))

    if train:
      head_losses = box_head_loss(class_logits, box_deltas, roi_batch, self.smooth_l1_beta)
      metrics["roi_accuracy"] = head_losses.pop("roi_accuracy")
      metrics["roi_foreground_fraction"] = (
          jnp.sum(roi_batch["classes"] > _BACKGROUND) / jnp.maximum(jnp.sum(roi_valid), 1))
      losses.update(head_losses)
      return {"losses": losses, "metrics": metrics}

    detections = jax.vmap(lambda r, v, l, d: detect(
        r, v, l, d, image_size, box_weights=self.box_weights,
        score_threshold=self.score_threshold, nms_threshold=self.nms_threshold,
        max_detections=self.max_detections, candidates_per_image=self.detection_candidates))(
            rois, roi_valid, class_logits, box_deltas)
    return {**detections, "proposal_boxes": proposals, "proposal_scores": proposal_scores,
            "proposal_valid": proposal_valid}

  def _sample_rois(self, proposals, proposal_valid, gt_boxes, gt_labels, gt_valid, rng):
    """:func:`roi_targets` of the batch with the RoI head's thresholds and sampling."""
    return jax.vmap(lambda p, pv, b, l, v, key: roi_targets(
        p, pv, b, l, v, key, foreground_iou=self.roi_foreground_iou,
        background_iou=self.roi_background_iou, samples_per_image=self.roi_samples_per_image,
        positive_fraction=self.roi_positive_fraction, box_weights=self.box_weights))(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
            jax.random.split(rng, proposals.shape[0]))

  def _pool(self, pyramid: dict[str, jax.Array], rois: jax.Array,
            sampling_ratio: int) -> jax.Array:
    """Multi-level RoIAlign on ``P2..P5``: ``[N, R, 4]`` -> ``[N, R, S, S, C]``."""
    levels = [pyramid[f"P{k}"] for k in range(2, 6)]
    pool = lambda boxes, *maps: ops.multilevel_roi_align(
        maps, boxes, (self.roi_pool_size, self.roi_pool_size), min_level=2,
        sampling_ratio=sampling_ratio)
    return jax.vmap(pool)(rois, *levels)
