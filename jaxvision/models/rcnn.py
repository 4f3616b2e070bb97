"""R-CNN: every region warped from the image and classified by its own CNN pass.

R-CNN (Girshick et al. 2014): region proposals from a method that knows nothing about the
classes (selective search, or any boxes supplied with the batch); each proposal, dilated by
``context_padding`` pixels of context, is cropped from the image and warped to
``warp_size x warp_size`` (:func:`jaxvision.ops.warp_regions`); a CNN classifies every
warped region (background + classes) and regresses a per-class correction of its box. Unlike
Fast R-CNN nothing is shared between regions: the CNN runs once per region, which is the
cost the later detectors remove.

Shared with Fast/Faster R-CNN (:mod:`jaxvision.models.roi_heads`), so that the comparison
changes only what R-CNN changes: the training regions (:func:`roi_targets`: proposals plus
ground truth, foreground at IoU >= 0.5, a quarter foreground, as R-CNN's 32 + 96 per 128
fine-tuning windows), the box coding (``box_weights``, ``ops.encode_boxes``), the losses
(:func:`box_head_loss`: cross-entropy + smooth-L1, jointly, as Fast R-CNN; the paper's
separate SVMs and ridge regressor are left out), and the detections (:func:`detect`: softmax,
per-class decoding, per-class NMS).

Region networks (``region_network``):

* ``"box_head"`` (R-CNN): the backbone on the warped region, its ``C5`` map into a
  :class:`~jaxvision.models.roi_heads.RoIBoxHead` (two FC layers, class logits, per-class
  deltas), as AlexNet's conv layers + fc6/fc7 + classifier in the paper.
* ``"classify_localize"`` (the sliding-window baseline): the single-object
  :class:`~jaxvision.models.classify_localize.ClassifyLocalize` model with a background class;
  its box (normalized to the warped window) becomes a class-agnostic correction of the window.

At inference the regions are processed ``region_chunk`` at a time (``nn.scan`` over chunks,
i.e. a ``lax.scan`` with the parameters broadcast), so memory holds one chunk of warped
regions and their activations, whatever the number of proposals.
"""

from __future__ import annotations

from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops
from jaxvision.models.classify_localize import ClassifyLocalize
from jaxvision.models.resnet import build_backbone
from jaxvision.models.roi_heads import BACKGROUND, RoIBoxHead, box_head_loss, detect, roi_targets

REGION_NETWORKS = ("box_head", "classify_localize")
# Padding regions of the last inference chunk: a unit box keeps the warp finite.
_UNIT_BOX = (0.0, 0.0, 1.0, 1.0)


class RCNN(nn.Module):
  """Proposals -> warped regions -> a CNN per region -> per-class NMS.

  Attributes:
    num_classes: object classes (without background).
    region_network: ``"box_head"`` or ``"classify_localize"`` (see the module docstring).
    backbone: preset name for :func:`~jaxvision.models.resnet.build_backbone`.
    backbone_kwargs: overrides of the preset (``stem``, ``norm``, ``width``, ...).
    warp_size: side of the warped region (227 in the paper).
    context_padding: pixels of context around the box in the warped region (16 in the paper).
    warp_sampling_ratio: bilinear samples per warped pixel per axis (see ``ops.warp_boxes``).
    box_head_hidden: width of the box head's FC layers (``box_head``).
    neck_channels, hidden, roi_feature: the ClassifyLocalize model's (``classify_localize``).
    roi_foreground_iou, roi_background_iou: region matching thresholds (0.5 / 0.5).
    roi_samples_per_image, roi_positive_fraction: training regions per image (a quarter
      foreground).
    box_weights: box-coder weights (10, 10, 5, 5), as Fast R-CNN's head.
    smooth_l1_beta: smooth-L1 transition point of the box loss.
    score_threshold, nms_threshold, max_detections, detection_candidates: inference, as
      :func:`~jaxvision.models.roi_heads.detect`.
    region_chunk: regions per image classified together at inference.
    proposal_source: ``"data"``, the only choice: the proposals come with the batch (the
      field lets the ``detection`` task's config checks and Fast R-CNN data step serve R-CNN).
    dtype: compute dtype of the region network.
  """
  num_classes: int
  region_network: str = "box_head"
  backbone: str = "resnet_small"
  backbone_kwargs: Any = None
  warp_size: int = 32
  context_padding: float = 2.0
  warp_sampling_ratio: int = 2
  box_head_hidden: int = 256
  neck_channels: int = 32
  hidden: int = 256
  roi_feature: str = "C2"
  roi_foreground_iou: float = 0.5
  roi_background_iou: float = 0.5
  roi_samples_per_image: int = 64
  roi_positive_fraction: float = 0.25
  box_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0)
  smooth_l1_beta: float = 1.0 / 9.0
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  max_detections: int = 100
  detection_candidates: int = 1000
  region_chunk: int = 256
  proposal_source: str = "data"
  dtype: Any = jnp.float32

  def setup(self):
    if self.region_network not in REGION_NETWORKS:
      raise ValueError(f"Unknown region_network {self.region_network!r}; use one of "
                       f"{REGION_NETWORKS}.")
    if self.proposal_source != "data":
      raise ValueError(f"R-CNN classifies proposals supplied with the batch: "
                       f"proposal_source must be 'data', got {self.proposal_source!r}.")
    if not isinstance(self.region_chunk, int) or self.region_chunk < 1:
      raise ValueError(f"region_chunk must be a positive int; got {self.region_chunk!r}.")
    if self.region_network == "box_head":
      self.backbone_module = build_backbone(self.backbone, name="backbone", dtype=self.dtype,
                                            **(self.backbone_kwargs or {}))
      self.box_head = RoIBoxHead(self.num_classes, self.box_head_hidden, dtype=self.dtype)
    else:
      self.classifier = ClassifyLocalize(
          self.num_classes + 1, self.backbone, self.backbone_kwargs,
          neck_channels=self.neck_channels, hidden=self.hidden, roi_feature=self.roi_feature,
          dtype=self.dtype)

  def __call__(self, images: jax.Array, *, train: bool, proposals: jax.Array,
               proposal_valid: jax.Array, gt_boxes: jax.Array | None = None,
               gt_labels: jax.Array | None = None, gt_valid: jax.Array | None = None
               ) -> dict[str, Any]:
    """Training losses (``train=True``) or detections (``train=False``).

    Args:
      images: ``[N, H, W, C]`` normalized float images.
      train: training mode: needs the ground truth and the ``sampling`` PRNG stream.
      proposals: ``[N, P, 4]`` regions (pixels).
      proposal_valid: ``bool[N, P]``.
      gt_boxes, gt_labels, gt_valid: ``[N, G, 4]``, ``int[N, G]``, ``bool[N, G]`` (training).

    Returns:
      As :class:`~jaxvision.models.detection.FasterRCNN` in Fast R-CNN mode. Training:
      ``{"losses": {"roi_classifier", "roi_box"}, "metrics": {"roi_accuracy",
      "roi_foreground_fraction"}}``. Inference: ``boxes [N, D, 4]``, ``scores``,
      ``classes``, ``valid [N, D]``, and ``proposal_boxes``, ``proposal_scores``,
      ``proposal_valid`` (the supplied proposals).
    """
    chex.assert_rank(images, 4)
    chex.assert_shape(proposals, (images.shape[0], None, 4))
    chex.assert_shape(proposal_valid, proposals.shape[:2])
    if not train:
      detections = self._detections(images, proposals, proposal_valid)
      return {**detections, "proposal_boxes": proposals,
              "proposal_scores": proposal_valid.astype(jnp.float32),
              "proposal_valid": proposal_valid}
    if gt_boxes is None or gt_labels is None or gt_valid is None:
      raise ValueError("RCNN(train=True) needs gt_boxes, gt_labels and gt_valid.")
    chex.assert_shape(gt_boxes, (images.shape[0], None, 4))
    chex.assert_equal_shape([gt_labels, gt_valid])
    return self._losses(images, proposals, proposal_valid, gt_boxes, gt_labels, gt_valid)

  def classify_regions(self, images: jax.Array, regions: jax.Array, train: bool
                       ) -> tuple[jax.Array, jax.Array]:
    """``[N, R, 4]`` regions -> class logits ``[N, R, C+1]`` and deltas ``[N, R, C+1, 4]``."""
    batch, count = regions.shape[:2]
    warped = ops.warp_regions(images, regions, self.warp_size, self.context_padding,
                              self.warp_sampling_ratio)
    warped = warped.reshape((batch * count,) + warped.shape[2:])
    if self.region_network == "box_head":
      features = self.backbone_module(warped, train)["C5"]
      return self.box_head(features.reshape((batch, count) + features.shape[1:]))
    outputs = self.classifier(warped, train)
    logits = outputs["logits"].reshape(batch, count, -1)
    # The predicted box lives in the warped (context-dilated) window's normalized frame;
    # as a correction of the region itself it shares the box coding of the R-CNN head.
    window = ops.context_boxes(regions, self.warp_size, self.context_padding)
    window_size = window[..., 2:] - window[..., :2]
    normalized = outputs["boxes"].reshape(batch, count, 4)
    low = jnp.minimum(normalized[..., :2], normalized[..., 2:])
    high = jnp.maximum(normalized[..., 2:], low + 1e-3)
    boxes = jnp.concatenate([window[..., :2] + low * window_size,
                             window[..., :2] + high * window_size], axis=-1)
    deltas = ops.encode_boxes(boxes, regions, self.box_weights)
    return logits, jnp.broadcast_to(deltas[:, :, None], logits.shape + (4,))

  def _losses(self, images, proposals, proposal_valid, gt_boxes, gt_labels, gt_valid):
    """The training regions' losses (:func:`box_head_loss`) and metrics."""
    rng = self.make_rng("sampling")
    regions = jax.vmap(lambda p, pv, b, l, v, key: roi_targets(
        p, pv, b, l, v, key, foreground_iou=self.roi_foreground_iou,
        background_iou=self.roi_background_iou, samples_per_image=self.roi_samples_per_image,
        positive_fraction=self.roi_positive_fraction, box_weights=self.box_weights))(
            proposals, proposal_valid, gt_boxes, gt_labels, gt_valid,
            jax.random.split(rng, proposals.shape[0]))
    logits, deltas = self.classify_regions(images, regions["rois"], train=True)
    losses = box_head_loss(logits, deltas, regions, self.smooth_l1_beta)
    metrics = {"roi_accuracy": losses.pop("roi_accuracy"),
               "roi_foreground_fraction": (jnp.sum(regions["classes"] > BACKGROUND)
                                           / jnp.maximum(jnp.sum(regions["valid"]), 1))}
    return {"losses": losses, "metrics": metrics}

  def _detections(self, images, proposals, proposal_valid):
    """Every proposal classified, ``region_chunk`` per image at a time, then ``detect``."""
    batch, count = proposals.shape[:2]
    chunk = min(self.region_chunk, count)
    num_chunks = -(-count // chunk)
    padding = num_chunks * chunk - count
    padded = jnp.concatenate(
        [proposals, jnp.broadcast_to(jnp.array(_UNIT_BOX, proposals.dtype), (batch, padding, 4))],
        axis=1)
    chunks = padded.reshape(batch, num_chunks, chunk, 4).swapaxes(0, 1)
    if self.is_initializing():
      # Creates the parameters the scan below broadcasts.
      self.classify_regions(images, chunks[0], train=False)
    scan = nn.scan(lambda module, carry, regions, images: (
        carry, module.classify_regions(images, regions, train=False)),
                   variable_broadcast=True, split_rngs={"params": False},
                   in_axes=(0, nn.broadcast), out_axes=0)
    _, (logits, deltas) = scan(self, None, chunks, images)
    unchunk = lambda x: x.swapaxes(0, 1).reshape((batch, num_chunks * chunk) + x.shape[3:])[
        :, :count]
    logits, deltas = unchunk(logits), unchunk(deltas)
    image_size = images.shape[1:3]
    return jax.vmap(lambda r, v, l, d: detect(
        r, v, l, d, image_size, box_weights=self.box_weights,
        score_threshold=self.score_threshold, nms_threshold=self.nms_threshold,
        max_detections=self.max_detections, candidates_per_image=self.detection_candidates))(
            proposals, proposal_valid, logits, deltas)
