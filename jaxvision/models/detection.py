"""Faster R-CNN (and Fast R-CNN) on an FPN: the detector that composes the stages.

:class:`FasterRCNN` is a short sequence of stages, each a method: backbone + FPN
(``_pyramid``); proposals (``_proposals``: the Region Proposal Network of
:mod:`jaxvision.models.rpn` with its losses in training, or the proposals supplied with
the batch); an optional refinement of the proposals (``_refine``, trained by
``_refiner_losses``); then the RoI heads of :mod:`jaxvision.models.roi_heads`: in training
their losses on the RoIs that ``_sample_rois`` draws (``_box_head_losses``), at inference
the detections on every proposal (``_detections``). ``_losses`` and ``_inference`` run the
two sequences; a new head (mask, keypoints) is one more stage in each, on the same RoIs.

* Proposal refinement (``refine_proposals``, off in Faster R-CNN): a one-class box head on
  RoIAlign features regresses every proposal once more, a second proposal stage (Cascade
  R-CNN's stage; with one sample per bin its first layer is Cascade RPN's adaptive
  convolution: a linear map of bilinear samples on a grid inside the box).
* With ``proposal_source="data"`` the RPN is absent and the proposals are supplied with the
  batch: the Fast R-CNN setting (Girshick, 2015), for comparing the stages on the same data.

Conventions: boxes are ``(x1, y1, x2, y2)`` pixels of the model's input image; the
detections use the dataset's ``0..num_classes-1`` class ids.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops
from jaxvision.models.fpn import FPN
from jaxvision.ops.panoptic import combine_panoptic
from jaxvision.models.keypoint_head import (KeypointHead, heatmaps_to_keypoints,
                                            keypoint_loss, keypoint_targets)
from jaxvision.models.panoptic_head import (SemanticFPNHead, check_semantic_upsampler,
                                            semantic_loss, semantic_targets)
from jaxvision.models.resnet import build_backbone
from jaxvision.models.roi_heads import (BACKGROUND, MaskHead, RoIBoxHead, box_head_loss,
                                        detect, foreground_rois, mask_loss, mask_targets,
                                        pool_rois, roi_targets)
from jaxvision.models.rpn import (RPN_BOX_LOSSES, RPN_OBJECTNESS_TARGETS, RPNHead,
                                  level_anchors, propose, rpn_loss, rpn_targets)

PROPOSAL_SOURCES = ("rpn", "data")


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
    rpn_objectness_target: ``"binary"`` or ``"iou"`` (see
      :func:`~jaxvision.models.rpn.rpn_targets`).
    rpn_box_voting_iou: box voting of the proposals after NMS (see
      :func:`~jaxvision.models.rpn.propose`); 0 (Faster R-CNN) turns it off.
    refine_proposals: one class-agnostic refinement of the RPN's proposals (False in Faster
      R-CNN; RPN mode only): a :class:`~jaxvision.models.roi_heads.RoIBoxHead` with one class
      on RoIAlign features of each proposal regresses it once more, as a stage of Cascade
      R-CNN (Cai & Vasconcelos, 2018) does. Features pooled inside the proposal localize much
      better than the RPN's sliding window at the anchor. Scores and order stay the RPN's.
      Trained like the RoI head, on ``roi_samples_per_image`` samples of the proposals +
      ground truth (the RoI head's thresholds), losses ``refine_objectness, refine_box``
      (which also train the features it pools); in training the RoI head then samples from
      these RoIs regressed (Cascade R-CNN), at inference it takes every refined proposal, and
      so does ``proposal_boxes``.
    refine_sampling_ratio: RoIAlign samples per bin per axis of the refiner (2, as the RoI
      head's; 1 pools a quarter of the samples: RoIAlign's backward pass, a scatter-add, is
      most of the refiner's cost on CPU).
    roi_foreground_iou, roi_background_iou: RoI matching thresholds (0.5 / 0.5).
    roi_samples_per_image, roi_positive_fraction: RoI sampling (512, 0.25).
    roi_pool_size, roi_sampling_ratio: RoIAlign output side and samples per bin (7, 2).
    box_head_hidden: width of the head's two FC layers (1024).
    box_weights: box-coder weights of the head (10, 10, 5, 5).
    smooth_l1_beta: smooth-L1 transition point of both box losses (1/9).
    rpn_box_loss: ``"smooth_l1"`` or ``"giou"`` (see :func:`~jaxvision.models.rpn.rpn_loss`).
    rpn_box_loss_weight: factor of the RPN's box loss (1 in Faster R-CNN). Normalized by
      all sampled anchors, the box loss of an image with few objects is small next to the
      other three; a larger weight trains tighter proposals.
    score_threshold, nms_threshold, max_detections, detection_candidates: inference.
    mask_head: add Mask R-CNN's mask head (``_mask_losses`` / ``_mask_predictions``): a
      :class:`~jaxvision.models.roi_heads.MaskHead` on ``mask_pool_size``-square RoIAlign
      features of the box head's foreground RoIs (training) or of the final detections
      (inference), ``2 * mask_pool_size``-square per-class mask logits.
    mask_pool_size: RoIAlign side of the mask head's features (14: 28 x 28 masks).
    mask_head_channels: width of the mask head's convolutions (256).
    mask_head_convs: its 3x3 convolutions before the upsampling (4).
    mask_sampling_ratio: RoIAlign samples per bin per axis of its features (2).
    mask_target_sampling_ratio: RoIAlign samples per bin per axis of the ground-truth masks
      resampled into the targets (2; see :func:`~jaxvision.models.roi_heads.mask_targets`).
    keypoint_head: add Keypoint R-CNN's keypoint head (``_keypoint_losses`` /
      ``_keypoint_predictions``): a :class:`~jaxvision.models.keypoint_head.KeypointHead`
      on ``keypoint_pool_size``-square RoIAlign features of the sample's foreground RoIs
      (training) or of the detections (inference), one heatmap per keypoint.
    num_keypoints: keypoints per object (K; 17 for COCO persons).
    keypoint_pool_size: RoIAlign side of the keypoint head's features (14).
    keypoint_sampling_ratio: RoIAlign samples per bin per axis of its features (2).
    keypoint_head_channels: width of its 3x3 convolutions (512).
    keypoint_head_convs: its 3x3 convolutions before the upsampling (8).
    keypoint_heatmap_size: side of the heatmaps, ``4 * keypoint_pool_size`` (56).
    keypoint_loss_weight: factor of the ``roi_keypoint`` loss (1, torchvision).
    keypoint_decode_upsample: decoding cells per image pixel when the detections' heatmaps
      become keypoints (1: torchvision's whole-pixel decoding; ``u``: to ``1 / u`` pixel;
      see :func:`~jaxvision.models.keypoint_head.heatmaps_to_keypoints`).
    semantic_head: add Panoptic FPN's semantic head (``_semantic_losses`` /
      ``_panoptic_predictions``; needs ``mask_head``): a
      :class:`~jaxvision.models.panoptic_head.SemanticFPNHead` on ``P2..P5`` predicting
      "things" (class 0) and ``num_stuff_classes`` stuff classes per pixel, trained on the
      whole image (loss ``semantic``), merged at inference with the detections' masks into a
      panoptic map (:func:`~jaxvision.ops.panoptic.combine_panoptic`).
    num_stuff_classes: S (the semantic head predicts ``S + 1`` classes).
    semantic_channels: width of the semantic head's stages (128 in Panoptic FPN).
    semantic_norm: its norm layers (``"group"``, the paper's; ``"batch"``, ``"frozen"``).
    semantic_upsampler: its 2x / 4x upsamplings, an FCN upsampler (``"bilinear"``, the
      paper's; ``"nearest"``, ``"bed_of_nails"``, ``"transposed"``).
    semantic_loss_weight: factor of the ``semantic`` loss (0.5: Panoptic FPN's lambda_s on
      COCO, detectron2's and mmdetection's setting).
    panoptic_score_threshold, panoptic_overlap_threshold, panoptic_mask_threshold: the
      merge's instance filters (0.5 each, detectron2): detections scoring below the first
      are left out, a mask (binarized at the third) whose fraction already taken by
      higher-scoring ones exceeds the second is dropped.
    stuff_area_threshold: a stuff class keeps its region only with at least this many
      unassigned pixels (4096 on COCO at 800 px, detectron2).
    dtype: compute dtype of the backbone, FPN, RPN head and RoI heads (``jnp.bfloat16``:
      mixed precision). Parameters, BatchNorm statistics, the heads' outputs and everything
      after them (anchors, proposals, RoIAlign coordinates, losses, detections) stay float32.
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
  # --- mask head (Mask R-CNN) ---
  mask_head: bool = False
  mask_pool_size: int = 14
  mask_head_channels: int = 256
  mask_head_convs: int = 4
  mask_sampling_ratio: int = 2
  mask_target_sampling_ratio: int = 2
  # --- keypoint head (Keypoint R-CNN) ---
  keypoint_head: bool = False
  num_keypoints: int = 17
  keypoint_pool_size: int = 14
  keypoint_sampling_ratio: int = 2
  keypoint_head_channels: int = 512
  keypoint_head_convs: int = 8
  keypoint_heatmap_size: int = 56
  keypoint_loss_weight: float = 1.0
  keypoint_decode_upsample: int = 1
  # --- semantic head (Panoptic FPN) ---
  semantic_head: bool = False
  num_stuff_classes: int = 0
  semantic_channels: int = 128
  semantic_norm: str = "group"
  semantic_upsampler: str = "bilinear"
  semantic_loss_weight: float = 0.5
  panoptic_score_threshold: float = 0.5
  panoptic_overlap_threshold: float = 0.5
  panoptic_mask_threshold: float = 0.5
  stuff_area_threshold: int = 4096
  dtype: Any = jnp.float32

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
    self.backbone_module = build_backbone(self.backbone, name="backbone", dtype=self.dtype,
                                          **(self.backbone_kwargs or {}))
    self.fpn = FPN(self.fpn_channels, extra_max_pool_level=self.proposal_source == "rpn",
                   dtype=self.dtype)
    if self.proposal_source == "rpn":
      self.rpn_head = RPNHead(len(self.anchor_scales) * len(self.aspect_ratios),
                              self.rpn_head_convs, dtype=self.dtype)
    if self.refine_proposals:
      if self.proposal_source != "rpn":
        raise ValueError("refine_proposals=True refines the RPN's proposals; it needs "
                         "proposal_source='rpn'.")
      self.proposal_refiner = RoIBoxHead(1, self.box_head_hidden, dtype=self.dtype)
    self.box_head = RoIBoxHead(self.num_classes, self.box_head_hidden, dtype=self.dtype)
    if self.mask_head:
      self._setup_mask_head()
    if self.keypoint_head:
      self._setup_keypoint_head()
    if self.semantic_head:
      self._setup_semantic_head()

  def __call__(self, images: jax.Array, *, train: bool, gt_boxes: jax.Array | None = None,
               gt_labels: jax.Array | None = None, gt_valid: jax.Array | None = None,
               proposals: jax.Array | None = None,
               proposal_valid: jax.Array | None = None, gt_masks: jax.Array | None = None,
               gt_keypoints: jax.Array | None = None,
               gt_semantic: jax.Array | None = None) -> dict[str, Any]:
    """Training losses (``train=True``) or detections (``train=False``).

    Args:
      images: ``[N, H, W, 3]`` normalized float images.
      train: training mode: needs the ground truth and the ``sampling`` PRNG stream.
      gt_boxes: ``[N, G, 4]`` (training).
      gt_labels: ``int[N, G]`` classes ``0..C-1`` (training).
      gt_valid: ``bool[N, G]`` (training).
      proposals: ``[N, P, 4]`` (``proposal_source="data"`` only).
      proposal_valid: ``bool[N, P]`` (``proposal_source="data"`` only).
      gt_masks: ``[N, G, H, W]`` binary instance masks at image size (training with
        ``mask_head``).
      gt_keypoints: ``[N, G, K, 3]`` ``(x, y, visibility)`` (training with ``keypoint_head``).
      gt_semantic: ``int[N, H, W]`` semantic map (training with ``semantic_head``).

    Returns:
      Training: ``{"losses": {name: scalar}, "metrics": {name: scalar}}`` with losses
      ``rpn_objectness, rpn_box`` (RPN mode), ``refine_objectness, refine_box``
      (``refine_proposals``), ``roi_classifier, roi_box`` and ``roi_mask`` (``mask_head``).
      Inference: ``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``,
      ``valid [N, D]`` (with ``mask_head`` also ``masks float32[N, D, H, W]``) and the
      proposals ``proposal_boxes [N, P, 4]``,
      ``proposal_scores [N, P]``, ``proposal_valid [N, P]``.
      With ``semantic_head`` also the loss ``semantic`` (metric ``semantic_accuracy``) and
      at inference ``semantic [N, H, W]`` and ``panoptic [N, H, W]``
      (see ``_panoptic_predictions``).
      With ``keypoint_head`` also the loss ``roi_keypoint`` (metric
      ``roi_keypoint_accuracy``) and at inference ``keypoints float32[N, D, K, 3]``
      (``(x, y, score)`` in pixels).
    """
    chex.assert_rank(images, 4)
    batch_size = images.shape[0]
    if self.proposal_source == "data":
      if proposals is None or proposal_valid is None:
        raise ValueError("proposal_source='data' (Fast R-CNN) needs proposals and "
                         "proposal_valid in every batch.")
      chex.assert_shape(proposals, (batch_size, None, 4))
      chex.assert_shape(proposal_valid, proposals.shape[:2])
    if not train:
      return self._inference(images, proposals, proposal_valid)
    if gt_boxes is None or gt_labels is None or gt_valid is None:
      raise ValueError("FasterRCNN(train=True) needs gt_boxes, gt_labels and gt_valid.")
    chex.assert_shape(gt_boxes, (batch_size, None, 4))
    chex.assert_equal_shape([gt_labels, gt_valid])
    truth = {"boxes": gt_boxes, "labels": gt_labels, "valid": gt_valid}
    for name, value, needed in (("masks", gt_masks, self.mask_head),
                                ("keypoints", gt_keypoints, self.keypoint_head),
                                ("semantic", gt_semantic, self.semantic_head)):
      if needed and value is None:
        raise ValueError(f"FasterRCNN with its {name} head needs gt_{name} in training.")
      if needed:
        chex.assert_equal_shape_prefix([value, gt_boxes], 1)
        truth[name] = value
    return self._losses(images, truth, proposals, proposal_valid)

  def _losses(self, images: jax.Array, truth: dict[str, jax.Array],
              proposals: jax.Array | None, proposal_valid: jax.Array | None
              ) -> dict[str, dict[str, jax.Array]]:
    """Training: the losses and metrics of every stage (see ``__call__``)."""
    image_size = images.shape[1:3]
    rpn_rng, refine_rng, roi_rng = self._sampling_rngs()
    pyramid = self._pyramid(images, train=True)
    proposals, _, proposal_valid, losses = self._proposals(
        pyramid, image_size, proposals, proposal_valid, truth, rpn_rng)
    metrics = {}
    if self.refine_proposals:
      proposals, proposal_valid, refine_losses, refine_metrics = self._refiner_losses(
          pyramid, image_size, proposals, proposal_valid, truth, refine_rng)
      losses.update(refine_losses)
      metrics.update(refine_metrics)
    roi_batch = self._sample_rois(proposals, proposal_valid, truth, roi_rng)
    box_losses, box_metrics = self._box_head_losses(pyramid, roi_batch)
    losses.update(box_losses)
    metrics.update(box_metrics)
    # The heads of Mask / Keypoint R-CNN train on the box head's sample; Panoptic FPN's
    # semantic head on the whole image.
    for enabled, head_losses in ((self.mask_head, self._mask_losses),
                                 (self.keypoint_head, self._keypoint_losses)):
      if enabled:
        extra_losses, extra_metrics = head_losses(pyramid, roi_batch, truth)
        losses.update(extra_losses)
        metrics.update(extra_metrics)
    if self.semantic_head:
      extra_losses, extra_metrics = self._semantic_losses(pyramid, image_size, truth)
      losses.update(extra_losses)
      metrics.update(extra_metrics)
    return {"losses": losses, "metrics": metrics}

  def _inference(self, images: jax.Array, proposals: jax.Array | None,
                 proposal_valid: jax.Array | None) -> dict[str, jax.Array]:
    """Detections and the proposals they come from (see ``__call__``)."""
    image_size = images.shape[1:3]
    pyramid = self._pyramid(images, train=False)
    proposals, proposal_scores, proposal_valid, _ = self._proposals(
        pyramid, image_size, proposals, proposal_valid)
    if self.refine_proposals:
      proposals, _, _ = self._refine(pyramid, image_size, proposals, proposal_valid)
    detections = self._detections(pyramid, image_size, proposals, proposal_valid)
    if self.mask_head:
      detections.update(self._mask_predictions(pyramid, image_size, detections))
    if self.keypoint_head:
      detections.update(self._keypoint_predictions(pyramid, image_size, detections))
    if self.semantic_head:
      detections.update(self._panoptic_predictions(pyramid, image_size, detections))
    return {**detections, "proposal_boxes": proposals, "proposal_scores": proposal_scores,
            "proposal_valid": proposal_valid}

  # --- stages ----------------------------------------------------------------------------

  def _sampling_rngs(self) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """PRNG keys of the anchor, refiner and RoI samplers, from the ``sampling`` stream."""
    rpn_rng, roi_rng = jax.random.split(self.make_rng("sampling"))
    refine_rng = None
    if self.refine_proposals:
      # Split off the RoI head's key, so that a model without the refiner samples as before.
      refine_rng, roi_rng = jax.random.split(roi_rng)
    return rpn_rng, refine_rng, roi_rng

  def _pyramid(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    """Backbone + FPN: ``[N, H, W, 3]`` -> ``{"P2": [N, H/4, W/4, C], ...}`` (P6 in RPN mode)."""
    if self.backbone_module.strides["C2"] != 4:
      raise ValueError(f"FasterRCNN needs C2 at stride 4 (the FPN levels P2..P6 at strides "
                       f"4..64); backbone {self.backbone!r} with {self.backbone_kwargs} has "
                       f"{self.backbone_module.strides}. Use stem='imagenet'.")
    return self.fpn(self.backbone_module(images, train))

  def _proposals(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                 proposals: jax.Array | None, proposal_valid: jax.Array | None,
                 truth: dict[str, jax.Array] | None = None, rng: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
    """The RPN's proposals, or the supplied ones (Fast R-CNN), and in training the RPN's losses.

    Args:
      pyramid: the FPN levels.
      image_size: ``(height, width)`` of the input images.
      proposals, proposal_valid: the supplied proposals (``proposal_source="data"``).
      truth: the ground truth ``{"boxes", "labels", "valid"}``; given in training only.
      rng: PRNG key of the anchor sampler (training).

    Returns:
      ``boxes [N, P, 4]``, ``scores [N, P]``, ``valid bool[N, P]`` and the losses
      ``{"rpn_objectness", "rpn_box"}`` (empty at inference and without the RPN).
    """
    if self.proposal_source == "data":
      return proposals, proposal_valid.astype(jnp.float32), proposal_valid, {}
    train = truth is not None
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
    boxes, scores, valid = jax.vmap(
        lambda l, d: propose(anchors, l, d, image_size, pre_nms_top_n=pre_nms,
                             post_nms_top_n=post_nms, nms_threshold=self.rpn_nms_threshold,
                             min_size=self.rpn_min_size, voting_iou=self.rpn_box_voting_iou))(
            jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas))
    if not train:
      return boxes, scores, valid, {}
    all_anchors = jnp.concatenate(anchors)
    all_deltas = jnp.concatenate(deltas, 1)
    targets = jax.vmap(lambda b, v, key, d: rpn_targets(
        all_anchors, b, v, key, foreground_iou=self.rpn_foreground_iou,
        background_iou=self.rpn_background_iou, samples_per_image=self.rpn_samples_per_image,
        positive_fraction=self.rpn_positive_fraction,
        objectness_target=self.rpn_objectness_target, deltas=d))(
            truth["boxes"], truth["valid"], jax.random.split(rng, boxes.shape[0]), all_deltas)
    losses = rpn_loss(jnp.concatenate(logits, 1), all_deltas, targets, self.smooth_l1_beta,
                      self.rpn_box_loss, all_anchors)
    losses["rpn_box"] = self.rpn_box_loss_weight * losses["rpn_box"]
    return boxes, scores, valid, losses

  def _refine(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
              proposals: jax.Array, proposal_valid: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every proposal regressed once more by the class-agnostic proposal refiner.

    Args:
      pyramid: the FPN levels.
      image_size: ``(height, width)`` to clip to.
      proposals: ``[N, P, 4]``.
      proposal_valid: ``bool[N, P]``.

    Returns:
      The refined boxes ``[N, P, 4]`` (zero where not valid) and the refiner's outputs,
      logits ``[N, P, 2]`` and deltas ``[N, P, 2, 4]``.
    """
    logits, deltas = self.proposal_refiner(
        pool_rois(pyramid, proposals, self.roi_pool_size, self.refine_sampling_ratio))
    # The refined boxes are inputs of the RoI head, not a path for its gradients.
    refined = ops.decode_boxes(jax.lax.stop_gradient(deltas[:, :, 1]), proposals,
                               self.box_weights)
    refined = jnp.where(proposal_valid[..., None], ops.clip_boxes(refined, image_size), 0.0)
    return refined, logits, deltas

  def _refiner_losses(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                      proposals: jax.Array, proposal_valid: jax.Array,
                      truth: dict[str, jax.Array], rng: jax.Array
                      ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array],
                                 dict[str, jax.Array]]:
    """Training of the refiner, on a sample of the proposals (+ ground truth), class-agnostic.

    As in Cascade R-CNN, the RoI head then samples from that sample, regressed and matched
    again.

    Returns:
      The refined sample ``[N, S, 4]`` and its ``valid bool[N, S]``, the losses
      ``{"refine_objectness", "refine_box"}`` and the metric ``{"refine_accuracy"}``.
    """
    refine_batch = self._sample_rois(proposals, proposal_valid,
                                     {**truth, "labels": jnp.zeros_like(truth["labels"])}, rng)
    refined, logits, deltas = self._refine(pyramid, image_size, refine_batch["rois"],
                                           refine_batch["valid"])
    losses = box_head_loss(logits, deltas, refine_batch, self.smooth_l1_beta)
    return (refined, refine_batch["valid"],
            {"refine_objectness": losses["roi_classifier"], "refine_box": losses["roi_box"]},
            {"refine_accuracy": losses["roi_accuracy"]})

  def _sample_rois(self, proposals: jax.Array, proposal_valid: jax.Array,
                   truth: dict[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
    """:func:`~jaxvision.models.roi_heads.roi_targets` of the batch with the RoI head's settings.

    The sample every RoI head trains on: ``rois [N, S, 4]``, ``valid``, ``classes`` and
    ``box_targets``.
    """
    return jax.vmap(lambda p, pv, b, l, v, key: roi_targets(
        p, pv, b, l, v, key, foreground_iou=self.roi_foreground_iou,
        background_iou=self.roi_background_iou, samples_per_image=self.roi_samples_per_image,
        positive_fraction=self.roi_positive_fraction, box_weights=self.box_weights))(
            proposals, proposal_valid, truth["boxes"], truth["labels"], truth["valid"],
            jax.random.split(rng, proposals.shape[0]))

  def _box_head(self, pyramid: dict[str, jax.Array], rois: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """``[N, R, 4]`` RoIs -> class logits ``[N, R, C+1]`` and deltas ``[N, R, C+1, 4]``."""
    return self.box_head(pool_rois(pyramid, rois, self.roi_pool_size, self.roi_sampling_ratio))

  def _box_head_losses(self, pyramid: dict[str, jax.Array], roi_batch: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """The box head's losses ``roi_classifier, roi_box`` and metrics on the sampled RoIs."""
    logits, deltas = self._box_head(pyramid, roi_batch["rois"])
    losses = box_head_loss(logits, deltas, roi_batch, self.smooth_l1_beta)
    metrics = {"roi_accuracy": losses.pop("roi_accuracy"),
               "roi_foreground_fraction": (jnp.sum(roi_batch["classes"] > BACKGROUND)
                                           / jnp.maximum(jnp.sum(roi_batch["valid"]), 1))}
    return losses, metrics

  def _detections(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                  proposals: jax.Array, proposal_valid: jax.Array) -> dict[str, jax.Array]:
    """The box head on every proposal, then :func:`~jaxvision.models.roi_heads.detect`.

    Returns:
      ``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``, ``valid [N, D]``.
    """
    logits, deltas = self._box_head(pyramid, proposals)
    return jax.vmap(lambda r, v, l, d: detect(
        r, v, l, d, image_size, box_weights=self.box_weights,
        score_threshold=self.score_threshold, nms_threshold=self.nms_threshold,
        max_detections=self.max_detections, candidates_per_image=self.detection_candidates))(
            proposals, proposal_valid, logits, deltas)

  # --- mask head (Mask R-CNN) -------------------------------------------------------------

  def _setup_mask_head(self):
    """Builds the mask head's submodules (called from ``setup``)."""
    self.mask_head_module = MaskHead(self.num_classes, self.mask_head_channels,
                                     self.mask_head_convs, dtype=self.dtype)

  def _mask_logits(self, pyramid: dict[str, jax.Array], rois: jax.Array) -> jax.Array:
    """``[N, R, 4]`` RoIs -> per-class mask logits ``[N, R, M, M, C]``."""
    return self.mask_head_module(pool_rois(pyramid, rois, self.mask_pool_size,
                                           self.mask_sampling_ratio))

  def _mask_losses(self, pyramid: dict[str, jax.Array], roi_batch: dict[str, jax.Array],
                   truth: dict[str, jax.Array]
                   ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``({"roi_mask": scalar}, metrics)`` on the sample's foreground RoIs
    (:func:`~jaxvision.models.roi_heads.foreground_rois`); ``truth["masks"] [N, G, H, W]``.

    The metric ``roi_mask_accuracy``: the fraction of the foreground RoIs' mask pixels
    whose true-class logit has the sign of the (soft) target thresholded at 0.5.
    """
    chex.assert_rank(truth["masks"], 4)
    # Only the first floor(S * positive_fraction) slots can hold positives: the mask head
    # (the costliest head per RoI) runs on that slice, not on all S sampled RoIs.
    positives = foreground_rois(roi_batch, self.roi_positive_fraction)
    logits = self._mask_logits(pyramid, positives["rois"])
    targets = jax.vmap(lambda r, i, m: mask_targets(
        r, i, m, logits.shape[2], sampling_ratio=self.mask_target_sampling_ratio))(
            positives["rois"], positives["matched_gt"], truth["masks"])
    loss = mask_loss(logits, positives["classes"], targets, positives["foreground"])
    channel = jnp.clip(positives["classes"] - 1, 0, self.num_classes - 1)
    class_logits = jnp.take_along_axis(logits, channel[:, :, None, None, None], -1)[..., 0]
    correct = ((class_logits > 0) == (targets >= 0.5)).astype(jnp.float32)
    foreground = positives["foreground"].astype(jnp.float32)
    accuracy = (jnp.sum(jnp.mean(correct, axis=(2, 3)) * foreground)
                / jnp.maximum(jnp.sum(foreground), 1.0))
    return {"roi_mask": loss}, {"roi_mask_accuracy": accuracy}

  def _mask_predictions(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                        detections: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``{"masks": float32[N, D, H, W]}``: each detection's mask probability of its class,
    pasted into the image (``ops.paste_masks``), zero for invalid detections."""
    boxes, valid = detections["boxes"], detections["valid"]
    logits = self._mask_logits(pyramid, boxes)
    class_logits = jnp.take_along_axis(
        logits, detections["classes"][:, :, None, None, None].astype(jnp.int32), -1)[..., 0]
    masks = jax.vmap(lambda m, b: ops.paste_masks(m, b, image_size, threshold=None))(
        jax.nn.sigmoid(class_logits), boxes)
    return {"masks": jnp.where(valid[:, :, None, None], masks, 0.0)}

  # --- keypoint head (Keypoint R-CNN) -----------------------------------------------------

  def _setup_keypoint_head(self):
    """Builds the keypoint head's submodules (called from ``setup``)."""
    if self.num_keypoints < 1:
      raise ValueError(f"keypoint_head needs num_keypoints >= 1, got {self.num_keypoints}.")
    # One stride-2 transposed conv and one 2x bilinear upsampling: heatmaps 4x the pool.
    if self.keypoint_heatmap_size != 4 * self.keypoint_pool_size:
      raise ValueError(f"keypoint_heatmap_size={self.keypoint_heatmap_size} must be 4 * "
                       f"keypoint_pool_size={self.keypoint_pool_size} (the head upsamples 4x); "
                       f"set it to {4 * self.keypoint_pool_size}.")
    self.keypoint_predictor = KeypointHead(self.num_keypoints, self.keypoint_head_channels,
                                           self.keypoint_head_convs, dtype=self.dtype)

  def _keypoint_heatmaps(self, pyramid: dict[str, jax.Array], rois: jax.Array) -> jax.Array:
    """``[N, R, 4]`` RoIs -> heatmap logits ``[N, R, K, S, S]``."""
    return self.keypoint_predictor(pool_rois(pyramid, rois, self.keypoint_pool_size,
                                             self.keypoint_sampling_ratio))

  def _keypoint_losses(self, pyramid: dict[str, jax.Array], roi_batch: dict[str, jax.Array],
                       truth: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``({"roi_keypoint": scalar}, metrics)`` on the sample's foreground RoIs;
    ``truth["keypoints"] [N, G, K, 3]``.

    Each foreground RoI learns the keypoints of the object it was matched to, in its own
    heatmap cells (:func:`~jaxvision.models.keypoint_head.keypoint_targets`). The metric
    ``roi_keypoint_accuracy``: the fraction of those keypoints whose heatmap argmax is the
    target cell.
    """
    keypoints = truth["keypoints"]
    if keypoints.shape[2:] != (self.num_keypoints, 3):
      raise ValueError(f"gt_keypoints {keypoints.shape} must be [N, G, num_keypoints="
                       f"{self.num_keypoints}, 3]; set model.num_keypoints to the data's.")
    positives = foreground_rois(roi_batch, self.roi_positive_fraction)
    heatmaps = self._keypoint_heatmaps(pyramid, positives["rois"])
    matched = jnp.take_along_axis(keypoints, positives["matched_gt"][..., None, None], axis=1)
    targets, valid = jax.vmap(keypoint_targets, in_axes=(0, 0, None))(
        positives["rois"], matched, self.keypoint_heatmap_size)
    loss = keypoint_loss(heatmaps, targets, valid, positives["foreground"])
    counted = valid & positives["foreground"][..., None]
    hits = jnp.argmax(heatmaps.reshape(heatmaps.shape[:3] + (-1,)), -1) == targets
    accuracy = jnp.sum(hits & counted) / jnp.maximum(jnp.sum(counted), 1)
    return ({"roi_keypoint": self.keypoint_loss_weight * loss},
            {"roi_keypoint_accuracy": accuracy})

  def _keypoint_predictions(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                            detections: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``{"keypoints": float32[N, D, K, 3]}``: ``(x, y, score)`` in image pixels (score: the
    heatmap logit at the keypoint), zero for invalid detections."""
    boxes = detections["boxes"]
    heatmaps = self._keypoint_heatmaps(pyramid, boxes)
    keypoints = jax.vmap(lambda h, b: heatmaps_to_keypoints(
        h, b, max(image_size), upsample=self.keypoint_decode_upsample))(heatmaps, boxes)
    return {"keypoints": jnp.where(detections["valid"][..., None, None], keypoints, 0.0)}

  # --- semantic head (Panoptic FPN) -------------------------------------------------------

  def _setup_semantic_head(self):
    """Builds the semantic head's submodules (called from ``setup``)."""
    if not self.mask_head:
      raise ValueError("semantic_head=True (Panoptic FPN) merges the stuff map with the "
                       "detections' masks: it needs mask_head=True.")
    if self.num_stuff_classes < 1:
      raise ValueError(f"semantic_head=True needs num_stuff_classes >= 1 (the dataset's stuff "
                       f"classes), got {self.num_stuff_classes}.")
    check_semantic_upsampler(self.semantic_upsampler)
    self.semantic_head_module = SemanticFPNHead(
        self.num_stuff_classes + 1, self.semantic_channels, self.semantic_norm,
        self.semantic_upsampler, dtype=self.dtype)

  def _semantic_losses(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                       truth: dict[str, jax.Array]
                       ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """``({"semantic": scalar}, {"semantic_accuracy": scalar})``; ``truth["semantic"]
    int[N, H, W]`` (``label + 1`` on things, ``C + s`` on stuff ``s``, other values left out).

    The loss is ``semantic_loss_weight`` times the pixel cross-entropy at image resolution
    (:func:`~jaxvision.models.panoptic_head.semantic_loss`); the metric is the pixel accuracy
    of the head's classes (things / each stuff class).
    """
    chex.assert_shape(truth["semantic"], (truth["boxes"].shape[0], *image_size))
    logits = self.semantic_head_module(pyramid, image_size, train=True)
    targets = semantic_targets(truth["semantic"], self.num_classes, self.num_stuff_classes)
    loss, accuracy = semantic_loss(logits, targets)
    return {"semantic": self.semantic_loss_weight * loss}, {"semantic_accuracy": accuracy}

  def _panoptic_predictions(self, pyramid: dict[str, jax.Array], image_size: tuple[int, int],
                            detections: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """``{"semantic": int32[N, H, W], "panoptic": int32[N, H, W]}``.

    ``semantic`` is the head's argmax (0 things, ``s`` stuff ``s``); ``panoptic`` its merge
    with the detections' masks (:func:`~jaxvision.ops.panoptic.combine_panoptic`): 0 void,
    ``d + 1`` detection slot ``d``, ``D + s`` stuff class ``s`` (``D = max_detections``).
    """
    logits = self.semantic_head_module(pyramid, image_size, train=False)
    semantic = jnp.argmax(logits, -1).astype(jnp.int32)
    merge = functools.partial(
        combine_panoptic, mask_threshold=self.panoptic_mask_threshold,
        score_threshold=self.panoptic_score_threshold,
        overlap_threshold=self.panoptic_overlap_threshold,
        stuff_area_threshold=self.stuff_area_threshold)
    panoptic = jax.vmap(merge)(detections["masks"], detections["scores"],
                               detections["classes"], detections["valid"], semantic)
    return {"semantic": semantic, "panoptic": panoptic.astype(jnp.int32)}
