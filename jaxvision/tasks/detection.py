"""Task ``detection``: Faster R-CNN (or Fast R-CNN) trained end to end, evaluated with COCO AP.

Loss = RPN objectness BCE + RPN smooth-L1 + RoI cross-entropy + RoI smooth-L1, plus the
proposal refiner's two when ``model.refine_proposals`` (see ``jaxvision.models.detection``).
Evaluation on held-out data: the twelve COCO box numbers (``AP, AP50, AP75, APs, APm,
APl, AR1, AR10, AR100, ARs, ARm, ARl``) of the detections, and ``rpn_AR100``: the recall
of the first 100 proposals per image taken as class-agnostic detections (COCO AR@100 with
every class mapped to one category), refined ones when the model refines its proposals.

Fast R-CNN mode (``config.model.proposal_source = "data"``): the proposals come with the
batch. They are made in the input pipeline's workers by :func:`synthetic_proposals`
(jittered ground-truth boxes plus random boxes; see ``DetectionTask.preprocess``), standing
in for an external proposal method such as Selective Search, so both stages can be compared
on the same data.

Fast R-CNN on selective search (``config.data_proposals.method = "selective_search"``, with
``proposal_source = "data"``; ``configs/fast_rcnn_shapes.py``): the proposals are OpenCV's
selective search boxes of each image (``jaxvision.data.proposals``), searched once per image
on the image as stored and cached on disk beside the dataset (``data_proposals.cache``),
then letterboxed and flipped with the image, so training, evaluation and ``predict`` all see
the same ones. ``method = "synthetic"`` (the default) keeps the jittered boxes above. The
choice lives in ``data_proposals`` rather than in ``model.proposal_source`` because the
model is the same Fast R-CNN either way; only the data step differs.
Crowd annotations (``is_crowd``) are left out of the training targets, as in torchvision.

Mask R-CNN (``model.mask_head``; ``configs/mask_rcnn_shapes.py``): the loss adds
``roi_mask``; evaluation adds the twelve COCO mask numbers with the prefix ``segm_``
(``eval/segm_AP``, ...); ``predict`` and the pictures carry each detection's mask.

Panoptic FPN (``model.semantic_head``, with ``model.mask_head``; ``configs/
panoptic_fpn_shapes.py``): the semantic head's loss ``semantic`` joins the sum; evaluation
adds ``PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st`` (no prefix) of the merged
panoptic maps (``jaxvision.evaluation.panoptic.PanopticEvaluator``) against the batches'
masks and stuff; ``predict`` returns the maps and their ``segments_info``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import data as data_lib
from jaxvision import viz
from jaxvision.evaluation import coco
from jaxvision.evaluation.panoptic import PanopticEvaluator
from jaxvision.data import proposals as proposals_lib
from jaxvision.ops import panoptic as panoptic_lib
from jaxvision.models.detection import FasterRCNN, PROPOSAL_SOURCES
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base

# What makes the proposals of ``proposal_source="data"`` (``config.data_proposals.method``).
PROPOSAL_METHODS = ("synthetic", "selective_search")
# Proposals kept per image for ``rpn_AR100``.
PROPOSALS_FOR_RECALL = 100
# Mask probabilities at or above this are the object's pixels (Mask R-CNN's 0.5).
MASK_THRESHOLD = 0.5


def synthetic_proposals(boxes: np.ndarray, box_valid: np.ndarray, image_size: int,
                        num_proposals: int, jittered_per_object: int, jitter: float,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Fast R-CNN proposals for one image: jittered copies of its objects, then random boxes.

  Args:
    boxes: ``[G, 4]`` ground-truth boxes (pixels).
    box_valid: ``bool[G]``.
    image_size: side of the square image.
    num_proposals: output length.
    jittered_per_object: copies of each object whose centre moves by up to ``jitter``
      times its size and whose sides scale by up to ``1 +- jitter``.
    jitter: relative jitter amplitude.
    rng: numpy generator (seed it by step or image id for reproducible proposals).

  Returns:
    ``proposals float32 [num_proposals, 4]`` clipped to the image and
    ``valid bool[num_proposals]`` (all True: random boxes fill the remainder).
  """
  objects = boxes[box_valid]
  centres = (objects[:, :2] + objects[:, 2:]) / 2
  sizes = objects[:, 2:] - objects[:, :2]
  count = min(len(objects) * jittered_per_object, num_proposals)
  source = np.repeat(np.arange(len(objects)), jittered_per_object)[:count]
  shift = rng.uniform(-jitter, jitter, (count, 2)) * sizes[source]
  scale = rng.uniform(1 - jitter, 1 + jitter, (count, 2))
  half = sizes[source] * scale / 2
  jittered = np.concatenate([centres[source] + shift - half, centres[source] + shift + half], 1)
  corners = rng.uniform(0, image_size, (num_proposals - count, 2, 2))
  random = np.concatenate([corners.min(axis=1), corners.max(axis=1)], 1)
  proposals = np.clip(np.concatenate([jittered, random]), 0, image_size).astype(np.float32)
  # A box clipped or drawn to zero width would be a degenerate RoI: give it one pixel.
  proposals[:, 2:] = np.maximum(proposals[:, 2:], np.minimum(proposals[:, :2] + 1, image_size))
  proposals[:, :2] = np.minimum(proposals[:, :2], proposals[:, 2:] - 1)
  return proposals, np.ones(num_proposals, bool)


def selective_search_cache(config: ml_collections.ConfigDict
                           ) -> proposals_lib.ProposalCache | None:
  """The selective search of a Fast R-CNN config (None for other proposal methods).

  ``config.data_proposals``: ``method`` (``PROPOSAL_METHODS``), ``num_proposals``, and for
  selective search ``mode`` (``"fast"``/``"quality"``), ``min_size`` (pixels of the stored
  image) and ``cache`` (keep the boxes under ``<data_dir>/proposals/``, default True).
  """
  settings = config.get("data_proposals")
  if settings is None:
    raise ValueError("model.proposal_source='data' (Fast R-CNN) needs config.data_proposals "
                     "(method, num_proposals, ...; see configs/fast_rcnn_shapes.py).")
  method = settings.get("method", "synthetic")
  if method not in PROPOSAL_METHODS:
    raise ValueError(f"Unknown config.data_proposals.method {method!r}; use one of "
                     f"{PROPOSAL_METHODS}.")
  if settings.num_proposals < 1:
    raise ValueError(f"config.data_proposals.num_proposals must be >= 1, got "
                     f"{settings.num_proposals}.")
  if method != "selective_search":
    return None
  mode, min_size = settings.get("mode", "fast"), settings.get("min_size", 4)
  directory = None
  if settings.get("cache", True):
    directory = os.path.join(data_lib.datasets.resolve_data_dir(config.data.get("data_dir")),
                             "proposals", f"selective_search_{mode}_min{min_size}")
  return proposals_lib.ProposalCache(directory, mode=mode, min_size=min_size)


class DetectionEvaluator(base.Evaluator):
  """COCO box AP/AR of the detections plus ``rpn_AR100``, ``rpn_recall50``, ``rpn_recall75``.

  ``on_result`` (optional) receives the detections' full ``CocoResult`` (per-class
  precision/recall arrays) when ``result`` runs, e.g. to draw PR curves.
  """

  def __init__(self, class_names: tuple[str, ...],
               on_result: Callable[[coco.CocoResult], None] | None = None,
               detections: coco.CocoEvaluator | coco.ReferenceCocoEvaluator | None = None,
               heads: Mapping[str, base.Evaluator] | None = None):
    """``detections``: the evaluator of the detections; default: against the batches'
    boxes (``coco.CocoEvaluator``). ``heads``: evaluators of the other heads' outputs by
    metric prefix (``"segm_"``: masks, ``"keypoints_"``: keypoints, ``""``: panoptic), each
    given every batch whole; their metrics join the box metrics with that prefix."""
    self.detections = (coco.CocoEvaluator(class_names=class_names) if detections is None
                       else detections)
    self.proposals = coco.CocoEvaluator(class_names=("object",))
    self.heads = dict(heads or {})
    self._on_result = on_result

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    self.detections.add({k: outputs[k] for k in ("boxes", "scores", "classes", "valid")}, batch)
    proposals = {"boxes": outputs["proposal_boxes"], "scores": outputs["proposal_scores"],
                 "classes": np.zeros(outputs["proposal_valid"].shape, np.int32),
                 "valid": outputs["proposal_valid"]}
    self.proposals.add(proposals, {**batch, "labels": np.zeros_like(batch["labels"])})
    for evaluator in self.heads.values():
      evaluator.add(outputs, batch)

  def result(self) -> dict[str, float]:
    detailed = self.detections.detailed_result()
    if self._on_result is not None:
      self._on_result(detailed)
    proposals = self.proposals.detailed_result()
    metrics = {**detailed.stats, "rpn_AR100": proposals.stats["AR100"]}
    for prefix, evaluator in self.heads.items():
      metrics.update({f"{prefix}{name}": value for name, value in evaluator.result().items()})
    # Recall of the first 100 proposals at single IoU thresholds (all areas): how many
    # objects the RPN finds at all (0.5) and how tightly (0.75).
    max_detections = list(proposals.params.max_detections).index(PROPOSALS_FOR_RECALL)
    for threshold in (0.5, 0.75):
      index = int(np.flatnonzero(np.isclose(proposals.params.iou_thresholds, threshold))[0])
      metrics[f"rpn_recall{round(threshold * 100)}"] = float(
          proposals.recall[index, 0, 0, max_detections])
    return metrics


@base.register("detection")
class DetectionTask(base.SupervisedTask):
  """Two-stage detection on any box dataset of ``jaxvision.data``."""

  compute_dtypes = ("float32", "bfloat16")
  # The detector module built from ``config.model``; a subclass with another detector
  # (``retinanet``) names its own and keeps everything else.
  detector: type = FasterRCNN

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    model_config = config.model.to_dict()
    fields = frozenset(self.detector.__dataclass_fields__) - {"num_classes", "parent", "name"}
    unknown = sorted(set(model_config) - fields - {"num_classes"})
    if unknown:
      raise ValueError(f"Unknown config.model fields {unknown}; {self.detector.__name__} "
                       f"accepts {sorted(fields | {'num_classes'})}.")
    if model_config.get("proposal_source", "rpn") not in PROPOSAL_SOURCES:
      raise ValueError(f"Unknown config.model.proposal_source "
                       f"{model_config['proposal_source']!r}; use one of {PROPOSAL_SOURCES}.")
    if "num_classes" not in model_config:
      raise ValueError("config.model.num_classes (object classes, without background) is "
                       "required, e.g. len(jaxvision.data.CLASS_NAMES) for shapes or 80 for COCO.")
    self.num_classes = model_config.pop("num_classes")
    if self.num_classes is None:  # the dataset's: configs for a user's own data
      self.num_classes = len(self.class_names)
    model_config["dtype"] = self.compute_dtype  # validated by the base class
    self.image_size = config.data.image_size
    model_config = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
    self.uses_data_proposals = model_config.get("proposal_source", "rpn") == "data"
    self._selective_search = (selective_search_cache(config) if self.uses_data_proposals
                              else None)
    self._model = self.detector(num_classes=self.num_classes, **model_config)
    self.backbone_module = build_backbone(self._model.backbone, dtype=self.compute_dtype,
                                          **(self._model.backbone_kwargs or {}))
    self._check_head_features()
    self.keypoint_sigmas = self._checked_keypoint_sigmas()
    self._check_semantic_head()
    self._predict = jax.jit(self._forward)
    # Set by ``write_pictures`` (first eval batch), used when that evaluation's result is in.
    self._pr_curve_path: str | None = None

  @property
  def model(self) -> FasterRCNN:
    return self._model

  def _head_features(self) -> list[str]:
    """The batch features the model's mask / keypoint / semantic heads train on."""
    heads = (("mask_head", "masks"), ("keypoint_head", "keypoints"), ("semantic_head", "semantic"))
    # getattr: subclasses' detectors (RetinaNet) have none of these heads.
    return [feature for head, feature in heads if getattr(self._model, head, False)]

  def _check_head_features(self) -> None:
    """Each head's ground truth must be among ``config.data.features``."""
    features = set(self.config.data.get("features", ()))
    for feature in self._head_features():
      if feature not in features:
        raise ValueError(f"The model's {feature} head trains on {feature!r}; add it to "
                         f"config.data.features (now {sorted(features)}).")

  def _check_semantic_head(self) -> None:
    """Panoptic FPN: the mask head's masks and the data's stuff classes, before compiling."""
    if not getattr(self._model, "semantic_head", False):
      return
    if not self._model.mask_head:
      raise ValueError("config.model.semantic_head=True (Panoptic FPN) merges the stuff map "
                       "with the detections' masks: set config.model.mask_head=True.")
    stuff_classes = self.config.data.get("stuff_classes", 0)
    if stuff_classes < 1:
      raise ValueError("config.model.semantic_head=True predicts stuff classes: set "
                       "config.data.stuff_classes > 0 (the shapes dataset's textured "
                       "background regions).")
    if self._model.num_stuff_classes != stuff_classes:
      raise ValueError(f"config.model.num_stuff_classes={self._model.num_stuff_classes} must "
                       f"equal config.data.stuff_classes={stuff_classes}.")

  @property
  def stuff_names(self) -> tuple[str, ...]:
    """The source's stuff classes ``s = 1..S`` (index ``s - 1``; empty without stuff)."""
    return tuple(self.source.metadata.stuff_class_names)

  @property
  def panoptic_category_names(self) -> tuple[str, ...]:
    """Names by panoptic category id: thing class ``c`` -> ``c``, stuff ``s`` -> ``C + s - 1``."""
    return tuple(self.class_names) + self.stuff_names

  def panoptic_segments(self, panoptic: np.ndarray, classes: np.ndarray
                        ) -> list[list[dict[str, Any]]]:
    """panopticapi ``segments_info`` of each image's panoptic map (host side).

    Args:
      panoptic: int ``[B, H, W]`` maps of :meth:`predict` (0 void, ``d + 1`` detection slot
        ``d``, ``D + s`` stuff class ``s``).
      classes: int ``[B, D]`` the detections' classes.

    Returns:
      Per image ``[{"id", "category_id", "isthing"}, ...]``; ``category_id`` indexes
      :attr:`panoptic_category_names`.
    """
    classes = np.asarray(classes)
    return [panoptic_lib.segments_info(image_map, image_classes, classes.shape[1],
                                       self.num_classes)
            for image_map, image_classes in zip(np.asarray(panoptic), classes)]

  def _checked_keypoint_sigmas(self) -> np.ndarray | None:
    """``config.keypoint_sigmas`` of a model with the keypoint head: the OKS sigma of each
    keypoint (COCO's per-keypoint constants; 0.05 for every shapes keypoint)."""
    if not getattr(self._model, "keypoint_head", False):
      return None
    sigmas = self.config.get("keypoint_sigmas")
    count = self._model.num_keypoints
    if sigmas is None:
      raise ValueError(f"The keypoint head's evaluation (OKS) needs config.keypoint_sigmas: "
                       f"one positive sigma per keypoint ({count}; COCO's persons: "
                       "jaxvision.evaluation.coco.COCO_KEYPOINT_SIGMAS).")
    sigmas = np.asarray(sigmas, np.float64).reshape(-1)
    if len(sigmas) != count or not np.all(sigmas > 0):
      raise ValueError(f"config.keypoint_sigmas must be {count} positive numbers (one per "
                       f"keypoint, model.num_keypoints); got {sigmas.tolist()}.")
    skeleton = np.asarray(self.config.get("keypoint_skeleton", ()), np.int64).reshape(-1, 2)
    if skeleton.size and (skeleton.min() < 0 or skeleton.max() >= count):
      raise ValueError(f"config.keypoint_skeleton pairs keypoint indices 0..{count - 1} "
                       f"(0-based); got {skeleton.tolist()}.")
    return sigmas

  # --- data ----------------------------------------------------------------------------

  def pipeline(self, split, training, features=None):
    if len(self.class_names) != self.num_classes:
      raise ValueError(f"config.model.num_classes={self.num_classes} but the dataset "
                       f"{self.config.data.name!r} has {len(self.class_names)} classes "
                       f"{self.class_names}.")
    return super().pipeline(split, training, features)

  def preprocess(self, example, rng):
    """The standard row plus, in Fast R-CNN mode, its ``proposals``/``proposal_valid``.

    Synthetic training proposals are drawn from the row's augmentation generator;
    evaluation proposals from one seeded by ``(config.seed, image id)``, so every evaluation
    sees the same ones. Selective search proposals are searched (or read from the cache) on
    the stored image and letterboxed and flipped with it by the standard preprocessing.
    """
    if self._selective_search is not None and "image" in example:
      example = {**example, "proposals": self._selective_search.boxes(example["image"])}
    row = super().preprocess(example, rng)
    if "proposals" in row:
      row["proposals"], row["proposal_valid"] = proposals_lib.pad_proposals(
          row["proposals"], self.config.data_proposals.num_proposals)
      return row
    if not self.uses_data_proposals or "boxes" not in row:
      return row
    if rng is None:
      rng = np.random.default_rng((self.config.seed, max(int(row["image_id"]), 0)))
    settings = self.config.data_proposals
    row["proposals"], row["proposal_valid"] = synthetic_proposals(
        row["boxes"], row["box_valid"], self.image_size, settings.num_proposals,
        settings.jittered_per_object, settings.jitter, rng)
    return row

  def validate_batch(self, batch: Mapping[str, np.ndarray]) -> None:
    base.validate_images(batch["image"], self.image_shape, "batch['image']")
    data_lib.validate_boxes(batch)
    labels = np.asarray(batch["labels"])[np.asarray(batch["box_valid"], bool)]
    if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
      raise ValueError(f"batch['labels'] must be in [0, {self.num_classes}) "
                       f"(config.model.num_classes); got [{labels.min()}, {labels.max()}].")

  # --- model ---------------------------------------------------------------------------

  def _proposal_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    if not self.uses_data_proposals:
      return {}
    return {"proposals": batch["proposals"], "proposal_valid": batch["proposal_valid"]}

  def init_variables(self, rng: jax.Array, batch: Mapping[str, Any]) -> dict[str, Any]:
    return self._model.init(rng, self.normalize(jnp.asarray(batch["image"])), train=False,
                            **self._proposal_inputs(batch))

  def _head_truth(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The ground truth of the mask / keypoint / semantic heads the model has."""
    return {f"gt_{feature}": batch[feature] for feature in self._head_features()}

  def loss_fn(self, params, model_state, batch, rng):
    gt_valid = batch["box_valid"]
    if "is_crowd" in batch:
      gt_valid = gt_valid & ~batch["is_crowd"]
    outputs, new_state = self._model.apply(
        {"params": params, **model_state}, self.normalize(batch["image"]), train=True,
        gt_boxes=batch["boxes"], gt_labels=batch["labels"], gt_valid=gt_valid,
        **self._proposal_inputs(batch), **self._head_truth(batch), rngs={"sampling": rng},
        mutable=["batch_stats"])
    losses = outputs["losses"]
    loss = sum(losses.values())
    return loss, ({**losses, **outputs["metrics"]}, new_state)

  def _forward(self, variables, images, proposal_inputs):
    outputs = self._model.apply(variables, self.normalize(images), train=False,
                                **proposal_inputs)
    for name in ("proposal_boxes", "proposal_scores", "proposal_valid"):
      outputs[name] = outputs[name][:, :PROPOSALS_FOR_RECALL]
    if "masks" in outputs:
      # Thresholded on the device (Mask R-CNN's 0.5): bool [N, D, H, W] is a quarter of the
      # probabilities to copy to the host and gather for evaluation.
      outputs["masks"] = outputs["masks"] >= MASK_THRESHOLD
    return outputs

  def eval_outputs(self, variables, batch):
    return self._forward(variables, batch["image"], self._proposal_inputs(batch))

  def make_evaluator(self) -> DetectionEvaluator:
    return DetectionEvaluator(self.class_names, on_result=self._write_pr_curves,
                              detections=self._reference_evaluator(),
                              heads=self._head_evaluators())

  def _head_evaluators(self) -> dict[str, base.Evaluator]:
    """Evaluators of the mask / keypoint / panoptic outputs, by metric prefix."""
    heads = {}
    if getattr(self._model, "mask_head", False):
      # The twelve COCO numbers of the masks: eval/segm_AP, segm_AP50, ...
      heads["segm_"] = coco.CocoEvaluator(class_names=self.class_names, iou_type="segm")
    if getattr(self._model, "keypoint_head", False):
      # The ten COCO keypoint numbers (OKS with config.keypoint_sigmas): eval/keypoints_AP, ...
      heads["keypoints_"] = coco.CocoEvaluator(class_names=self.class_names,
                                               iou_type="keypoints",
                                               keypoint_sigmas=self.keypoint_sigmas)
    if getattr(self._model, "semantic_head", False):
      if len(self.stuff_names) != self._model.num_stuff_classes:
        raise ValueError(f"config.model.num_stuff_classes={self._model.num_stuff_classes} but "
                         f"the data source has the stuff classes {self.stuff_names}.")
      # Panoptic quality of the merged maps: eval/PQ, SQ, RQ, PQ_th, ..., RQ_st.
      heads[""] = PanopticEvaluator(self.class_names, self.stuff_names,
                                    ignore_label=self.config.data.ignore_label)
    return heads

  def _reference_evaluator(self) -> coco.ReferenceCocoEvaluator | None:
    """Sources with their own COCO ground truth (``coco_json``) are scored against it, in
    their image and category ids and original image pixels, not against the batches'."""
    if not isinstance(self.source, data_lib.coco_json.CocoJsonSource):
      return None
    return coco.ReferenceCocoEvaluator(
        self.source.ground_truth,
        functools.partial(self.source.coco_results, image_size=self.image_size))

  def _write_pr_curves(self, result: coco.CocoResult) -> None:
    """PR curves (IoU 0.5) of the evaluation whose pictures were just written."""
    if self._pr_curve_path is not None:
      viz.plot_pr_curves(result, self.class_names, self._pr_curve_path)
      self._pr_curve_path = None

  def predict(self, variables, images, proposals=None, proposal_valid=None
              ) -> dict[str, jax.Array]:
    """Detections for NHWC images (uint8 or float32 in [0, 255]).

    Returns ``boxes [B, D, 4]`` (xyxy pixels), ``scores [B, D]`` (decreasing),
    ``classes [B, D]`` (``0..C-1``), ``valid [B, D]`` with ``D = model.max_detections``.
    Fast R-CNN models also need ``proposals [B, P, 4]`` and ``proposal_valid [B, P]``,
    except on selective search, whose proposals are searched here when not given.
    With ``data.name = "coco_json"`` also ``category_ids [B, D]``: the json's category id
    of each class (``coco_json.original_boxes`` maps the boxes to an original image).
    With the mask head also ``masks bool[B, D, H, W]``: each detection's mask pasted into
    the image and thresholded at ``MASK_THRESHOLD`` (all False for invalid detections).
    With the semantic head (Panoptic FPN) also ``panoptic int32[B, H, W]``, the merged map
    (0 void, ``d + 1`` detection slot ``d``, ``D + s`` stuff class ``s``), and
    ``segments_info``, a host-side list per image of panopticapi segments ``{"id",
    "category_id", "isthing"}`` for the ids present (categories: thing class ``c`` -> ``c``,
    stuff ``s`` -> ``C + s - 1``, named by ``panoptic_category_names``).
    With the keypoint head also ``keypoints [B, D, K, 3]``: ``(x, y, score)`` in pixels.
    """
    base.validate_images(images, self.image_shape, "predict")
    proposal_inputs = {}
    if self.uses_data_proposals:
      if (proposals is None and proposal_valid is None
          and self._selective_search is not None):
        proposals, proposal_valid = self.selective_search_proposals(images)
      if proposals is None or proposal_valid is None:
        raise ValueError("This model takes its proposals from the data "
                         "(model.proposal_source='data'): pass proposals and proposal_valid.")
      proposal_inputs = {"proposals": jnp.asarray(proposals),
                         "proposal_valid": jnp.asarray(proposal_valid)}
    outputs = self._predict(variables, jnp.asarray(images), proposal_inputs)
    detections = {k: outputs[k] for k in ("boxes", "scores", "classes", "valid")}
    if "masks" in outputs:
      detections["masks"] = outputs["masks"]
    if "keypoints" in outputs:
      detections["keypoints"] = outputs["keypoints"]
    if "panoptic" in outputs:
      detections["panoptic"] = outputs["panoptic"]
      detections["segments_info"] = self.panoptic_segments(outputs["panoptic"],
                                                           outputs["classes"])
    # Only then is the source built: other sources may need data a notebook lacks.
    if self.config.data.name == data_lib.coco_json.NAME:
      detections["category_ids"] = jnp.asarray(
          self.source.metadata.category_ids)[detections["classes"]]
    return detections

  def selective_search_proposals(self, images) -> tuple[np.ndarray, np.ndarray]:
    """``proposals [B, P, 4]``, ``proposal_valid [B, P]`` of model-input images (uint8 or
    float in [0, 255]) by this config's selective search (``data_proposals``)."""
    if self._selective_search is None:
      raise ValueError("config.data_proposals.method is not 'selective_search'.")
    pixels = np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)
    count = self.config.data_proposals.num_proposals
    rows = [self._selective_search(image, count) for image in pixels]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

  def write_pictures(self, variables, batch, outputs, directory, step) -> list[str]:
    """Ground truth (green) and detections scoring at least 0.5 (red) on held-out images.

    With the mask head, each shown detection's mask is coloured over the image first, one
    colour per instance. With the semantic head, a second picture: the true and predicted
    panoptic maps of each image side by side, with a legend of the categories shown.

    The per-class PR curves of the same evaluation follow once its result is computed.
    """
    del variables
    self._pr_curve_path = os.path.join(directory, f"step_{step:07d}_pr_curves.png")
    count = min(len(batch["image"]), self.config.get("num_pictures", 8))
    scale = max(1, 256 // self.image_size)
    images = []
    for i in range(count):
      valid = np.asarray(batch["box_valid"][i], bool)
      shown = np.asarray(outputs["valid"][i], bool) & (outputs["scores"][i] >= 0.5)
      image = batch["image"][i]
      if "masks" in outputs:
        image = viz.overlay_masks(image, np.asarray(outputs["masks"][i])[shown])
      image = viz.draw_boxes(image, batch["boxes"][i][valid],
                             [self.class_names[int(c)] for c in batch["labels"][i][valid]],
                             viz.TRUE_COLOUR, scale)
      captions = [f"{self.class_names[int(c)]} {s:.2f}"
                  for c, s in zip(outputs["classes"][i][shown], outputs["scores"][i][shown])]
      image = viz.draw_boxes(image, outputs["boxes"][i][shown] * scale, captions,
                             viz.PREDICTED_COLOUR)
      if "keypoints" in outputs:
        image = self._draw_keypoints(image, batch["keypoints"][i][valid],
                                     outputs["keypoints"][i][shown], scale)
      images.append(image)
    paths = [viz.save_image_grid(images, os.path.join(directory,
                                                      f"step_{step:07d}_detections.png"))]
    if "panoptic" in outputs:
      paths.append(self._write_panoptic_pictures(batch, outputs, count, scale, directory, step))
    return paths

  def _draw_keypoints(self, image: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
                      scale: int) -> np.ndarray:
    """True (labeled) and predicted keypoints joined by ``config.keypoint_skeleton``."""
    skeleton = [tuple(pair) for pair in self.config.get("keypoint_skeleton", ())]
    truth, predicted = np.asarray(truth, np.float32), np.asarray(predicted, np.float32)
    image = viz.draw_keypoints(image, truth[..., :2] * scale, truth[..., 2] > 0, skeleton,
                               viz.TRUE_COLOUR)
    return viz.draw_keypoints(image, predicted[..., :2] * scale,
                              np.ones(predicted.shape[:2], bool), skeleton,
                              viz.PREDICTED_COLOUR)

  def _write_panoptic_pictures(self, batch, outputs, count: int, scale: int, directory: str,
                               step: int) -> str:
    """True and predicted panoptic maps side by side over each image, with their legends."""
    truth = PanopticEvaluator(self.class_names, self.stuff_names,
                              ignore_label=self.config.data.ignore_label)
    predictions = self.panoptic_segments(outputs["panoptic"][:count], outputs["classes"][:count])
    names = self.panoptic_category_names
    pictures = []
    for i in range(count):
      true_map, true_segments = truth.ground_truth(batch, i)
      true_segments = [{**segment, "isthing": segment["category_id"] < self.num_classes}
                       for segment in true_segments]
      pictures.append(viz.draw_panoptic(batch["image"][i], true_map, true_segments, names, scale))
      pictures.append(viz.draw_panoptic(batch["image"][i], np.asarray(outputs["panoptic"][i]),
                                        predictions[i], names, scale))
    return viz.save_image_grid(pictures, os.path.join(directory, f"step_{step:07d}_panoptic.png"),
                               columns=4)
