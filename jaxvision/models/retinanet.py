"""RetinaNet (Lin et al., 2017, "Focal Loss for Dense Object Detection"): a single-stage detector.

Backbone + FPN levels ``P{min_level}..P{max_level}`` (the paper: P3..P7; levels above P5
are extra stride-2 3x3 convolutions, P6 on C5 and P7 on ReLU(P6), as in the paper), then two
dense heads shared over all levels: a class subnet and a box subnet, each ``head_convs``
3x3 conv + ReLU layers (4) and a 3x3 predictor, giving every anchor ``num_classes``
sigmoid logits and 4 box deltas. There is no proposal stage and no RoI sampling: every
anchor is scored.

Training: anchors (``anchor_sizes[l] * scale`` for 3 scales ``2 ** (k / 3)`` and 3 aspect
ratios per location, :func:`~jaxvision.models.rpn.level_anchors`) are matched to the ground
truth with :func:`jaxvision.ops.match_boxes` (IoU >= 0.5 positive, < 0.4 negative, in
between ignored; each object's best anchors also positive), the class loss is the sigmoid
focal loss (:func:`~jaxvision.models.losses.sigmoid_focal_loss`, alpha 0.25, gamma 2) over
every non-ignored anchor and class, the box loss (smooth L1 of the deltas, or 1 - GIoU of the
decoded box) over the positives, both divided by the number of positive anchors in the
batch. The class predictor's bias starts at ``-log((1 - pi) / pi)``, pi = 0.01, so that the
~100k background anchors do not swamp the first steps.

Inference (:func:`detect_dense`): per level, the ``pre_nms_top_n`` best (anchor, class) scores
above ``score_threshold`` are decoded; over all levels, a per-class NMS keeps
``max_detections``.

Conventions: boxes ``(x1, y1, x2, y2)`` pixels of the model's input image; detections use
the dataset's ``0..num_classes-1`` class ids (no background class: a sigmoid per class).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops
from jaxvision.models.fpn import FPN
from jaxvision.models.losses import sigmoid_focal_loss, smooth_l1
from jaxvision.models.resnet import build_backbone
from jaxvision.models.rpn import level_anchors

BOX_LOSSES = ("smooth_l1", "giou")
HEAD_NORMS = ("none", "group")


class RetinaNetHead(nn.Module):
  """The class and box subnets, shared over the pyramid levels.

  Attributes:
    num_anchors: anchors per location (scales x aspect ratios).
    num_classes: object classes (no background).
    num_convs: 3x3 conv + ReLU layers of each subnet before its predictor (4).
    prior_probability: initial foreground probability of every anchor and class (0.01).
    norm: ``"none"`` (the paper) or ``"group"``: GroupNorm after each hidden conv, its
      parameters shared over levels (as in FCOS and torchvision's RetinaNet v2), which
      trains faster from scratch.
    norm_groups: GroupNorm groups (must divide the channels).
    dtype: compute dtype; the outputs are float32 whatever it is (decoding and losses).
  """
  num_anchors: int
  num_classes: int
  num_convs: int = 4
  prior_probability: float = 0.01
  norm: str = "none"
  norm_groups: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> tuple[list[jax.Array], list[jax.Array]]:
    """``[N, H_l, W_l, C]`` per level -> logits ``[N, H_l*W_l*A, K]``, deltas ``[N, H_l*W_l*A, 4]``.

    Flattened in (row, column, anchor) order, the order of the anchors of
    :func:`~jaxvision.models.rpn.level_anchors`.
    """
    if self.norm not in HEAD_NORMS:
      raise ValueError(f"Unknown RetinaNet head norm {self.norm!r}; use one of {HEAD_NORMS}.")
    channels = features[0].shape[-1]
    init = nn.initializers.normal(0.01)

    def subnet(prefix):
      layers = []
      for i in range(self.num_convs):
        conv = nn.Conv(channels, (3, 3), padding=1, kernel_init=init, dtype=self.dtype,
                       name=f"{prefix}_conv{i + 1}")
        norm = (nn.GroupNorm(num_groups=self.norm_groups, dtype=self.dtype,
                             name=f"{prefix}_norm{i + 1}")
                if self.norm == "group" else None)
        layers.append((conv, norm))
      return layers

    class_layers, box_layers = subnet("class"), subnet("box")
    # Every anchor starts at foreground probability pi: the focal loss of the many easy
    # negatives is then small from the first step (the paper's section 4.1).
    prior_bias = -math.log((1 - self.prior_probability) / self.prior_probability)
    class_logits = nn.Conv(self.num_anchors * self.num_classes, (3, 3), padding=1,
                           kernel_init=init, bias_init=nn.initializers.constant(prior_bias),
                           dtype=self.dtype, name="class_logits")
    box_deltas = nn.Conv(self.num_anchors * 4, (3, 3), padding=1, kernel_init=init,
                         dtype=self.dtype, name="box_deltas")

    def run(layers, x):
      for conv, norm in layers:
        x = conv(x)
        x = nn.relu(norm(x) if norm is not None else x)
      return x

    logits, deltas = [], []
    for x in features:
      chex.assert_rank(x, 4)
      batch = x.shape[0]
      logits.append(class_logits(run(class_layers, x)).reshape(
          batch, -1, self.num_classes).astype(jnp.float32))
      deltas.append(box_deltas(run(box_layers, x)).reshape(batch, -1, 4).astype(jnp.float32))
    return logits, deltas


def retinanet_targets(anchors: jax.Array, gt_boxes: jax.Array, gt_labels: jax.Array,
                      gt_valid: jax.Array, *, num_classes: int, foreground_iou: float,
                      background_iou: float, box_weights: Sequence[float]
                      ) -> dict[str, jax.Array]:
  """One image's per-anchor targets: every anchor is in the loss unless ignored.

  Args:
    anchors: ``[A, 4]`` all anchors of the image.
    gt_boxes: ``[G, 4]`` ground truth, padded.
    gt_labels: ``int[G]`` classes ``0..num_classes-1``.
    gt_valid: ``bool[G]``.
    num_classes: K.
    foreground_iou, background_iou: matcher thresholds (0.5 / 0.4); low-quality matches
      (each object's best anchors) are positive too.
    box_weights: box-coder weights (1, 1, 1, 1).

  Returns:
    ``classes [A, K]`` one-hot (zero rows for negatives), ``positive bool[A]``,
    ``valid bool[A]`` (not ignored), ``box_targets [A, 4]`` (meaningful where positive),
    ``matched_boxes [A, 4]`` (the matched object where positive, else the anchor).
  """
  matched_gt, labels = ops.match_boxes(gt_boxes, anchors, foreground_iou, background_iou,
                                       allow_low_quality_matches=True, gt_valid=gt_valid)
  positive = labels == ops.POSITIVE
  matched_boxes = jnp.where(positive[:, None], gt_boxes[matched_gt], anchors)
  classes = jax.nn.one_hot(gt_labels[matched_gt], num_classes) * positive[:, None]
  return {"classes": classes, "positive": positive, "valid": labels != ops.IGNORE,
          "box_targets": ops.encode_boxes(matched_boxes, anchors, box_weights),
          "matched_boxes": matched_boxes}


def retinanet_loss(logits: jax.Array, deltas: jax.Array, anchors: jax.Array,
                   targets: dict[str, jax.Array], *, alpha: float, gamma: float,
                   box_loss: str, smooth_l1_beta: float, box_weights: Sequence[float]
                   ) -> dict[str, jax.Array]:
  """Focal loss over every non-ignored (anchor, class) + box loss over positives.

  Both are summed over the batch and divided by its number of positive anchors (at least
  1), as in the paper.

  Args:
    logits: ``[N, A, K]``.
    deltas: ``[N, A, 4]``.
    anchors: ``[A, 4]``.
    targets: :func:`retinanet_targets` stacked over the batch.
    alpha, gamma: focal loss parameters (0.25, 2).
    box_loss: ``"smooth_l1"`` on the deltas or ``"giou"`` (1 - GIoU of the decoded boxes).
    smooth_l1_beta: smooth-L1 transition (0 is L1).
    box_weights: box-coder weights.

  Returns:
    ``{"focal": scalar, "box": scalar}`` and the metric ``num_positive`` (per image).
  """
  chex.assert_equal_shape([logits, targets["classes"]])
  chex.assert_equal_shape([deltas, targets["box_targets"]])
  positive = targets["positive"].astype(jnp.float32)
  count = jnp.maximum(jnp.sum(positive), 1.0)
  focal = sigmoid_focal_loss(logits, targets["classes"], alpha, gamma)
  focal = jnp.sum(focal * targets["valid"][..., None]) / count
  if box_loss == "smooth_l1":
    box_error = jnp.sum(smooth_l1(deltas, targets["box_targets"], smooth_l1_beta), axis=-1)
  elif box_loss == "giou":
    predicted = ops.decode_boxes(deltas, jnp.broadcast_to(anchors, deltas.shape), box_weights)
    box_error = 1.0 - ops.paired_generalized_box_iou(
        predicted.reshape(-1, 4), targets["matched_boxes"].reshape(-1, 4)).reshape(
            positive.shape)
  else:
    raise ValueError(f"Unknown RetinaNet box loss {box_loss!r}; use one of {BOX_LOSSES}.")
  return {"focal": focal, "box": jnp.sum(box_error * positive) / count}


def detect_dense(anchors: Sequence[jax.Array], logits: Sequence[jax.Array],
                 deltas: Sequence[jax.Array], image_size: tuple[int, int], *,
                 box_weights: Sequence[float], score_threshold: float, pre_nms_top_n: int,
                 nms_threshold: float, max_detections: int, min_size: float = 1e-2
                 ) -> dict[str, jax.Array]:
  """One image's detections from dense per-level outputs (torchvision RetinaNet postprocess).

  Per level, the ``pre_nms_top_n`` highest (anchor, class) sigmoid scores above
  ``score_threshold`` are decoded and clipped; over all levels, a per-class NMS
  (:func:`jaxvision.ops.batched_nms`) keeps the ``max_detections`` best.

  Args:
    anchors: per level ``[A_l, 4]``.
    logits: per level ``[A_l, K]``.
    deltas: per level ``[A_l, 4]``.
    image_size: ``(height, width)`` to clip to.
    box_weights: box-coder weights.
    score_threshold: minimum class probability (0.05).
    pre_nms_top_n: static candidates per level (1000).
    nms_threshold: per-class NMS IoU (0.5).
    max_detections: static output length (100).
    min_size: minimum box side (pixels).

  Returns:
    ``boxes [D, 4]``, ``scores [D]`` (decreasing), ``classes int32[D]``, ``valid bool[D]``;
    padding entries are zero.
  """
  boxes, scores, classes = [], [], []
  for level_anchors_, level_logits, level_deltas in zip(anchors, logits, deltas):
    num_classes = level_logits.shape[-1]
    level_scores = jax.nn.sigmoid(level_logits).reshape(-1)
    top_scores, top = jax.lax.top_k(level_scores, min(pre_nms_top_n, level_scores.shape[0]))
    anchor_index = top // num_classes
    boxes.append(ops.decode_boxes(level_deltas[anchor_index], level_anchors_[anchor_index],
                                  box_weights))
    scores.append(top_scores)
    classes.append((top % num_classes).astype(jnp.int32))
  boxes = ops.clip_boxes(jnp.concatenate(boxes), image_size)
  scores, classes = jnp.concatenate(scores), jnp.concatenate(classes)
  candidate = (scores > score_threshold) & ops.small_box_mask(boxes, min_size)
  keep, valid = ops.batched_nms(boxes, scores, classes, nms_threshold, max_detections,
                                valid=candidate)
  keep = jnp.maximum(keep, 0)
  return {"boxes": jnp.where(valid[:, None], boxes[keep], 0.0),
          "scores": jnp.where(valid, scores[keep], 0.0),
          "classes": jnp.where(valid, classes[keep], 0),
          "valid": valid}


class RetinaNet(nn.Module):
  """ResNet + FPN + dense class and box subnets, trained with the focal loss.

  Attributes:
    num_classes: object classes (no background).
    backbone: preset name for :func:`~jaxvision.models.resnet.build_backbone`.
    backbone_kwargs: overrides of the preset (``norm``, ``stem``, ...).
    fpn_channels: channels of every level and of the heads (256).
    min_level, max_level: the pyramid levels ``P{min_level}..P{max_level}`` (3..7 in the
      paper); ``min_level`` in 2..5; levels above 5 are extra stride-2 convolutions.
    anchor_sizes: one base size (pixels) per level (32..512 in the paper: 4 x stride).
    anchor_scales: multipliers of each level's size (``2 ** (k / 3)``, k = 0, 1, 2).
    aspect_ratios: anchor height / width ratios (0.5, 1, 2).
    head_convs: hidden 3x3 convs of each subnet (4).
    head_norm, head_norm_groups: see :class:`RetinaNetHead`.
    prior_probability: initial foreground probability (0.01).
    foreground_iou, background_iou: matcher thresholds (0.5 / 0.4).
    focal_alpha, focal_gamma: focal loss parameters (0.25, 2).
    box_loss: ``"smooth_l1"`` (on the deltas) or ``"giou"``.
    smooth_l1_beta: smooth-L1 transition point (0.1, detectron2's RetinaNet; 0 is L1).
    box_loss_weight: factor of the box loss (1).
    box_weights: box-coder weights (1, 1, 1, 1).
    score_threshold, pre_nms_top_n, nms_threshold, max_detections: inference (0.05, 1000
      per level, 0.5, 100).
    dtype: compute dtype of the backbone, FPN and heads (``jnp.bfloat16``: mixed precision);
      parameters, the heads' outputs, anchors, losses and detections stay float32.
  """
  num_classes: int
  backbone: str = "resnet50"
  backbone_kwargs: Any = None
  fpn_channels: int = 256
  min_level: int = 3
  max_level: int = 7
  anchor_sizes: Sequence[float] = (32.0, 64.0, 128.0, 256.0, 512.0)
  anchor_scales: Sequence[float] = (1.0, 2.0 ** (1 / 3), 2.0 ** (2 / 3))
  aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
  head_convs: int = 4
  head_norm: str = "none"
  head_norm_groups: int = 32
  prior_probability: float = 0.01
  foreground_iou: float = 0.5
  background_iou: float = 0.4
  focal_alpha: float = 0.25
  focal_gamma: float = 2.0
  box_loss: str = "smooth_l1"
  smooth_l1_beta: float = 0.1
  box_loss_weight: float = 1.0
  box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
  score_threshold: float = 0.05
  pre_nms_top_n: int = 1000
  nms_threshold: float = 0.5
  max_detections: int = 100
  dtype: Any = jnp.float32

  def setup(self):
    if not 2 <= self.min_level <= 5 or self.max_level < self.min_level:
      raise ValueError(f"RetinaNet levels P{self.min_level}..P{self.max_level}: min_level must "
                       f"be in 2..5 (an FPN level on C2..C5) and max_level >= min_level.")
    num_levels = self.max_level - self.min_level + 1
    if len(self.anchor_sizes) != num_levels:
      raise ValueError(f"anchor_sizes has {len(self.anchor_sizes)} entries for the "
                       f"{num_levels} levels P{self.min_level}..P{self.max_level}; give one "
                       f"size per level.")
    if self.box_loss not in BOX_LOSSES:
      raise ValueError(f"Unknown box_loss {self.box_loss!r}; use one of {BOX_LOSSES}.")
    if self.head_norm not in HEAD_NORMS:
      raise ValueError(f"Unknown head_norm {self.head_norm!r}; use one of {HEAD_NORMS}.")
    if self.head_norm == "group" and self.fpn_channels % self.head_norm_groups:
      raise ValueError(f"head_norm_groups={self.head_norm_groups} must divide "
                       f"fpn_channels={self.fpn_channels}.")
    self.backbone_module = build_backbone(self.backbone, name="backbone", dtype=self.dtype,
                                          **(self.backbone_kwargs or {}))
    fpn_levels = tuple(f"C{k}" for k in range(self.min_level, min(self.max_level, 5) + 1))
    self.fpn = FPN(self.fpn_channels, levels=fpn_levels, extra_max_pool_level=False,
                   dtype=self.dtype)
    self.extra_convs = [nn.Conv(self.fpn_channels, (3, 3), 2, padding=1, dtype=self.dtype,
                                name=f"fpn_P{k}") for k in range(6, self.max_level + 1)]
    self.head = RetinaNetHead(len(self.anchor_scales) * len(self.aspect_ratios),
                              self.num_classes, self.head_convs, self.prior_probability,
                              self.head_norm, self.head_norm_groups, dtype=self.dtype)

  def __call__(self, images: jax.Array, *, train: bool, gt_boxes: jax.Array | None = None,
               gt_labels: jax.Array | None = None, gt_valid: jax.Array | None = None
               ) -> dict[str, Any]:
    """Training losses (``train=True``) or detections (``train=False``).

    Args:
      images: ``[N, H, W, 3]`` normalized float images.
      train: training mode (needs the ground truth).
      gt_boxes: ``[N, G, 4]`` (training).
      gt_labels: ``int[N, G]`` classes ``0..C-1`` (training).
      gt_valid: ``bool[N, G]`` (training).

    Returns:
      Training: ``{"losses": {"focal", "box"}, "metrics": {"num_positive_anchors"}}``.
      Inference: ``boxes [N, D, 4]``, ``scores [N, D]``, ``classes [N, D]``, ``valid [N, D]``.
    """
    chex.assert_rank(images, 4)
    image_size = images.shape[1:3]
    features = self._pyramid(images, train)
    logits, deltas = self.head(features)
    anchors = level_anchors([x.shape[1:3] for x in features],
                            [2 ** k for k in range(self.min_level, self.max_level + 1)],
                            self.anchor_sizes, self.aspect_ratios, self.anchor_scales)
    if not train:
      return jax.vmap(lambda l, d: detect_dense(
          anchors, l, d, image_size, box_weights=self.box_weights,
          score_threshold=self.score_threshold, pre_nms_top_n=self.pre_nms_top_n,
          nms_threshold=self.nms_threshold, max_detections=self.max_detections))(logits, deltas)
    if gt_boxes is None or gt_labels is None or gt_valid is None:
      raise ValueError("RetinaNet(train=True) needs gt_boxes, gt_labels and gt_valid.")
    chex.assert_shape(gt_boxes, (images.shape[0], None, 4))
    chex.assert_equal_shape([gt_labels, gt_valid])
    all_anchors = jnp.concatenate(anchors)
    targets = jax.vmap(lambda b, l, v: retinanet_targets(
        all_anchors, b, l, v, num_classes=self.num_classes, foreground_iou=self.foreground_iou,
        background_iou=self.background_iou, box_weights=self.box_weights))(
            gt_boxes, gt_labels, gt_valid)
    losses = retinanet_loss(jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1),
                            all_anchors, targets, alpha=self.focal_alpha,
                            gamma=self.focal_gamma, box_loss=self.box_loss,
                            smooth_l1_beta=self.smooth_l1_beta, box_weights=self.box_weights)
    losses["box"] = self.box_loss_weight * losses["box"]
    metrics = {"num_positive_anchors": jnp.sum(targets["positive"]) / images.shape[0]}
    return {"losses": losses, "metrics": metrics}

  def _pyramid(self, images: jax.Array, train: bool) -> list[jax.Array]:
    """``P{min_level}..P{max_level}``, finest first."""
    stride = self.backbone_module.strides[f"C{self.min_level}"]
    if stride != 2 ** self.min_level:
      raise ValueError(f"RetinaNet's P{self.min_level} needs C{self.min_level} at stride "
                       f"{2 ** self.min_level}; backbone {self.backbone!r} with "
                       f"{self.backbone_kwargs} has {self.backbone_module.strides}. Use "
                       f"stem='imagenet'.")
    backbone_features = self.backbone_module(images, train)
    pyramid = self.fpn(backbone_features)
    features = [pyramid[f"P{k}"] for k in range(self.min_level, min(self.max_level, 5) + 1)]
    # The paper's P6 is a stride-2 conv on C5, P7 one on ReLU(P6).
    x = backbone_features["C5"]
    for i, conv in enumerate(self.extra_convs):
      x = conv(x if i == 0 else nn.relu(x))
      features.append(x)
    return features
