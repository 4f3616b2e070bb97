"""RoI heads of two-stage detectors: features pooled per region, then per-region predictions.

Follows torchvision's ``roi_heads.py`` with every variable-length step made static-shape:

* RoI targets (:func:`roi_targets`): proposals plus the ground-truth boxes, matched at IoU
  0.5 and sampled to a fixed ``samples_per_image`` (a quarter positive);
* pooling (:func:`pool_rois`): RoIAlign of every RoI on the FPN level its size assigns it
  (P2..P5), the input of every head here;
* the box head (:class:`RoIBoxHead`, :func:`box_head_loss`): class logits and per-class box
  deltas; with one class it is also the detector's class-agnostic proposal refiner;
* detections (:func:`detect`): softmax, per-class decoding, score threshold, per-class NMS,
  the top ``max_detections``, padded with a ``valid`` mask.

Mask and keypoint heads join the box head here: they pool their own features with
:func:`pool_rois` and take their positives from the same :func:`roi_targets` sample as the
box head (its foreground RoIs and their matched ground truth, :func:`foreground_rois`), as
in Mask R-CNN:

* the mask head (:class:`MaskHead`, :func:`mask_targets`, :func:`mask_loss`): per-class
  ``2S x 2S`` mask logits from ``S x S`` pooled features, trained by the sigmoid
  cross-entropy of the true class's mask against the ground-truth mask RoIAligned inside
  the RoI.

Conventions: boxes are ``(x1, y1, x2, y2)`` pixels of the model's input image. Class ids
are :data:`BACKGROUND` (``0``) for background and ``1..num_classes`` for objects inside the
heads; :func:`detect` returns the dataset's ``0..num_classes-1`` ids. Per-image functions
are written for one image and ``jax.vmap``-ed over the batch by the detector.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxvision import ops
from jaxvision.models.losses import smooth_l1

BACKGROUND = 0  # class id of background RoIs
# The FPN levels RoIs are pooled from (FPN paper: P2..P5; P6 only feeds the RPN).
_MIN_POOL_LEVEL, _MAX_POOL_LEVEL = 2, 5


def pool_rois(pyramid: Mapping[str, jax.Array], rois: jax.Array, output_size: int,
              sampling_ratio: int) -> jax.Array:
  """Multi-level RoIAlign of a batch of RoIs on ``P2..P5``.

  Each RoI is pooled from the level its size assigns it
  (:func:`jaxvision.ops.multilevel_roi_align`).

  Args:
    pyramid: FPN features by level name, ``"P2"``..``"P5"`` of ``[N, H_l, W_l, C]`` at
      strides ``4..32`` (more levels may be present; they are not pooled from).
    rois: ``[N, R, 4]`` boxes in image pixels.
    output_size: side ``S`` of the pooled grid (7 for the box head).
    sampling_ratio: RoIAlign samples per bin per axis.

  Returns:
    ``[N, R, S, S, C]``.
  """
  chex.assert_rank(rois, 3)
  levels = [pyramid[f"P{k}"] for k in range(_MIN_POOL_LEVEL, _MAX_POOL_LEVEL + 1)]
  pool = lambda boxes, *maps: ops.multilevel_roi_align(
      maps, boxes, (output_size, output_size), min_level=_MIN_POOL_LEVEL,
      sampling_ratio=sampling_ratio)
  return jax.vmap(pool)(rois, *levels)


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
    ``box_targets [S, 4]`` (meaningful where ``classes > 0``) and ``matched_gt int32[S]``
    (the ground-truth slot of each RoI, meaningful where ``classes > 0``: the object whose
    mask / keypoints the mask and keypoint heads learn there). Foreground RoIs come first.
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
  classes = jnp.where(is_foreground, gt_labels[match] + 1, BACKGROUND)
  # Padding RoIs are unit boxes so the encoding and RoIAlign stay finite.
  safe_rois = jnp.where(valid[:, None], rois, jnp.array([0.0, 0.0, 1.0, 1.0]))
  box_targets = ops.encode_boxes(jnp.where(is_foreground[:, None], matched_boxes, safe_rois),
                                 safe_rois, box_weights)
  return {"rois": safe_rois, "valid": valid, "classes": classes.astype(jnp.int32),
          "box_targets": box_targets, "matched_gt": match.astype(jnp.int32)}


def foreground_rois(roi_batch: Mapping[str, jax.Array], positive_fraction: float
                    ) -> dict[str, jax.Array]:
  """The slots of a :func:`roi_targets` sample that can hold foreground RoIs.

  :func:`roi_targets` puts the sampled positives first and draws at most
  ``floor(positive_fraction * S)`` of them, so the first that many slots hold every
  foreground RoI: the mask and keypoint heads (Mask R-CNN: trained on positives only) run
  on this static slice instead of all ``S`` RoIs.

  Args:
    roi_batch: :func:`roi_targets` outputs stacked over the batch (``[N, S, ...]``).
    positive_fraction: the sampler's ``positive_fraction``.

  Returns:
    ``rois [N, F, 4]``, ``classes int32[N, F]``, ``matched_gt int32[N, F]`` and
    ``foreground bool[N, F]`` (the real positives; the rest are background or padding,
    whose losses the heads weight by zero).
  """
  samples = roi_batch["rois"].shape[1]
  count = max(1, min(samples, int(positive_fraction * samples)))
  sliced = {k: roi_batch[k][:, :count] for k in ("rois", "classes", "matched_gt", "valid")}
  sliced["foreground"] = sliced.pop("valid") & (sliced["classes"] > BACKGROUND)
  return sliced


class RoIBoxHead(nn.Module):
  """Two fully connected layers, then class logits ``C + 1`` and per-class box deltas.

  Attributes:
    num_classes: object classes (without background).
    hidden: width of the two FC layers (1024 for COCO).
    dtype: compute dtype; the outputs are float32 whatever it is (losses, decoding).
  """
  num_classes: int
  hidden: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, roi_features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[N, R, S, S, C]`` pooled features -> logits ``[N, R, C+1]``, deltas ``[N, R, C+1, 4]``."""
    chex.assert_rank(roi_features, 5)
    x = roi_features.reshape(roi_features.shape[:2] + (-1,))
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    x = nn.relu(dense(self.hidden, name="fc1")(x))
    x = nn.relu(dense(self.hidden, name="fc2")(x))
    # Detectron2's initialization of the predictors: small logits and deltas at the start.
    logits = dense(self.num_classes + 1, kernel_init=nn.initializers.normal(0.01),
                      name="class_logits")(x)
    deltas = dense(4 * (self.num_classes + 1), kernel_init=nn.initializers.normal(0.001),
                      name="box_deltas")(x)
    return (logits.astype(jnp.float32),
            deltas.reshape(deltas.shape[:2] + (self.num_classes + 1, 4)).astype(jnp.float32))


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
  foreground = valid * (classes > BACKGROUND)
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


class MaskHead(nn.Module):
  """Mask R-CNN's mask head: ``S x S`` pooled features -> per-class ``2S x 2S`` mask logits.

  Four 3x3 convolutions + ReLU, a 2x2 stride-2 transposed convolution + ReLU, a 1x1
  convolution to one logit map per class (torchvision ``MaskRCNNHeads`` +
  ``MaskRCNNPredictor``; with ``S = 14`` the masks are 28 x 28).

  Attributes:
    num_classes: object classes (without background): one mask per class.
    channels: width of the convolutions and the transposed convolution (256 for COCO).
    num_convs: 3x3 convolutions before the upsampling (4).
    dtype: compute dtype; the logits are float32 whatever it is (loss, sigmoid, pasting).
  """
  num_classes: int
  channels: int = 256
  num_convs: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, roi_features: jax.Array) -> jax.Array:
    """``[N, R, S, S, C_in]`` pooled features -> logits ``float32[N, R, 2S, 2S, num_classes]``."""
    chex.assert_rank(roi_features, 5)
    leading = roi_features.shape[:2]
    x = roi_features.reshape((-1,) + roi_features.shape[2:])
    # torchvision's initialization of the mask head: He normal (fan out), zero biases.
    init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    for k in range(self.num_convs):
      x = nn.relu(nn.Conv(self.channels, (3, 3), padding="SAME", kernel_init=init,
                          dtype=self.dtype, name=f"conv{k + 1}")(x))
    x = nn.relu(nn.ConvTranspose(self.channels, (2, 2), strides=(2, 2), padding="VALID",
                                 kernel_init=init, dtype=self.dtype, name="upsample")(x))
    logits = nn.Conv(self.num_classes, (1, 1), kernel_init=init, dtype=self.dtype,
                     name="mask_logits")(x)
    return logits.reshape(leading + logits.shape[1:]).astype(jnp.float32)


def mask_targets(rois: jax.Array, matched_gt: jax.Array, gt_masks: jax.Array,
                 resolution: int, *, sampling_ratio: int = 2, aligned: bool = True
                 ) -> jax.Array:
  """One image's mask targets: each RoI's matched ground-truth mask RoIAligned inside it.

  :func:`jaxvision.ops.crop_and_resize_masks` of mask ``matched_gt[f]`` over ``rois[f]``.
  The pixel model is Detectron2's (``aligned=True``, as its ``BitMasks.crop_and_resize``):
  pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, so a RoI equal to an object's box
  whose side is ``k * resolution`` pixels, sampled ``k x k`` per bin, gets exactly the
  ``k x k`` block means of the mask (the mask resampled without a shift). torchvision's
  ``project_masks_on_boxes`` uses the legacy ``aligned=False`` (a half-pixel shift) and an
  adaptive, data-dependent sampling ratio; here the ratio is fixed for static shapes.
  As in torchvision the targets stay soft (fractions in ``[0, 1]`` at the mask's edge;
  Detectron2 thresholds them at 0.5).

  Args:
    rois: ``[F, 4]`` RoIs (e.g. :func:`foreground_rois` of one image) in image pixels.
    matched_gt: ``int[F]`` the ground-truth slot of each RoI.
    gt_masks: ``[G, H, W]`` binary instance masks at image size (bool / uint8 / float).
    resolution: static side ``M`` of the targets (28).
    sampling_ratio: static RoIAlign samples per bin per axis.
    aligned: the half-pixel model above (False: torchvision's legacy one).

  Returns:
    ``float32[F, M, M]`` in ``[0, 1]``.
  """
  chex.assert_rank([rois, matched_gt, gt_masks], [2, 1, 3])
  return ops.crop_and_resize_masks(gt_masks, matched_gt, rois, resolution,
                                   sampling_ratio=sampling_ratio, aligned=aligned)


def mask_loss(logits: jax.Array, classes: jax.Array, targets: jax.Array,
              foreground: jax.Array) -> jax.Array:
  """Sigmoid cross-entropy of the true class's mask, averaged over foreground RoIs' pixels.

  torchvision's ``maskrcnn_loss``: only the logit map of the RoI's class is trained; every
  other class's map and every non-foreground RoI (background, padding) weighs zero. The
  mean runs over all pixels of all foreground RoIs of the batch; without any it is 0.

  Args:
    logits: ``[N, F, M, M, C]`` per-class mask logits.
    classes: ``int[N, F]`` RoI classes, ``1..C`` foreground (``0`` background).
    targets: ``[N, F, M, M]`` mask targets in ``[0, 1]`` (:func:`mask_targets`).
    foreground: ``bool[N, F]`` the RoIs that count.

  Returns:
    The scalar loss.
  """
  chex.assert_rank([logits, classes, targets, foreground], [5, 2, 4, 2])
  chex.assert_equal_shape([logits[..., 0], targets])
  chex.assert_equal_shape([classes, foreground])
  channel = jnp.clip(classes - 1, 0, logits.shape[-1] - 1)
  class_logits = jnp.take_along_axis(logits, channel[:, :, None, None, None], axis=-1)[..., 0]
  weight = foreground.astype(jnp.float32)
  # Zero the ignored slots' inputs too, so that a non-finite logit there cannot leak a NaN.
  safe_logits = jnp.where(foreground[..., None, None], class_logits, 0.0)
  cross_entropy = optax.sigmoid_binary_cross_entropy(safe_logits,
                                                     targets.astype(jnp.float32))
  pixels = targets.shape[-2] * targets.shape[-1]
  return (jnp.sum(cross_entropy * weight[..., None, None])
          / jnp.maximum(jnp.sum(weight) * pixels, 1.0))
