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
from jaxvision.data import proposals as proposals_lib
from jaxvision.models.detection import FasterRCNN, PROPOSAL_SOURCES
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base

# What makes the proposals of ``proposal_source="data"`` (``config.data_proposals.method``).
PROPOSAL_METHODS = ("synthetic", "selective_search")
# Proposals kept per image for ``rpn_AR100``.
PROPOSALS_FOR_RECALL = 100


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
               detections: coco.CocoEvaluator | coco.ReferenceCocoEvaluator | None = None):
    """``detections``: the evaluator of the detections; default: against the batches'
    boxes (``coco.CocoEvaluator``)."""
    self.detections = (coco.CocoEvaluator(class_names=class_names) if detections is None
                       else detections)
    self.proposals = coco.CocoEvaluator(class_names=("object",))
    self._on_result = on_result

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    self.detections.add({k: outputs[k] for k in ("boxes", "scores", "classes", "valid")}, batch)
    proposals = {"boxes": outputs["proposal_boxes"], "scores": outputs["proposal_scores"],
                 "classes": np.zeros(outputs["proposal_valid"].shape, np.int32),
                 "valid": outputs["proposal_valid"]}
    self.proposals.add(proposals, {**batch, "labels": np.zeros_like(batch["labels"])})

  def result(self) -> dict[str, float]:
    detailed = self.detections.detailed_result()
    if self._on_result is not None:
      self._on_result(detailed)
    proposals = self.proposals.detailed_result()
    metrics = {**detailed.stats, "rpn_AR100": proposals.stats["AR100"]}
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
    self._predict = jax.jit(self._forward)
    # Set by ``write_pictures`` (first eval batch), used when that evaluation's result is in.
    self._pr_curve_path: str | None = None

  @property
  def model(self) -> FasterRCNN:
    return self._model

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

  def loss_fn(self, params, model_state, batch, rng):
    gt_valid = batch["box_valid"]
    if "is_crowd" in batch:
      gt_valid = gt_valid & ~batch["is_crowd"]
    outputs, new_state = self._model.apply(
        {"params": params, **model_state}, self.normalize(batch["image"]), train=True,
        gt_boxes=batch["boxes"], gt_labels=batch["labels"], gt_valid=gt_valid,
        **self._proposal_inputs(batch), rngs={"sampling": rng}, mutable=["batch_stats"])
    losses = outputs["losses"]
    loss = sum(losses.values())
    return loss, ({**losses, **outputs["metrics"]}, new_state)

  def _forward(self, variables, images, proposal_inputs):
    outputs = self._model.apply(variables, self.normalize(images), train=False,
                                **proposal_inputs)
    for name in ("proposal_boxes", "proposal_scores", "proposal_valid"):
      outputs[name] = outputs[name][:, :PROPOSALS_FOR_RECALL]
    return outputs

  def eval_outputs(self, variables, batch):
    return self._forward(variables, batch["image"], self._proposal_inputs(batch))

  def make_evaluator(self) -> DetectionEvaluator:
    return DetectionEvaluator(self.class_names, on_result=self._write_pr_curves,
                              detections=self._reference_evaluator())

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

    The per-class PR curves of the same evaluation follow once its result is computed.
    """
    del variables
    self._pr_curve_path = os.path.join(directory, f"step_{step:07d}_pr_curves.png")
    count = min(len(batch["image"]), self.config.get("num_pictures", 8))
    scale = max(1, 256 // self.image_size)
    images = []
    for i in range(count):
      valid = np.asarray(batch["box_valid"][i], bool)
      image = viz.draw_boxes(batch["image"][i], batch["boxes"][i][valid],
                             [self.class_names[int(c)] for c in batch["labels"][i][valid]],
                             viz.TRUE_COLOUR, scale)
      shown = np.asarray(outputs["valid"][i], bool) & (outputs["scores"][i] >= 0.5)
      captions = [f"{self.class_names[int(c)]} {s:.2f}"
                  for c, s in zip(outputs["classes"][i][shown], outputs["scores"][i][shown])]
      images.append(viz.draw_boxes(image, outputs["boxes"][i][shown] * scale, captions,
                                   viz.PREDICTED_COLOUR))
    return [viz.save_image_grid(images, os.path.join(directory,
                                                     f"step_{step:07d}_detections.png"))]
