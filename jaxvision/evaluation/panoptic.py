"""Panoptic quality (PQ, SQ, RQ): exactly panopticapi's ``pq_compute``, vectorized.

``evaluate(ground_truth, predictions, categories)`` takes panopticapi-format images (an id
map plus its ``segments_info``) and returns PQ, SQ and RQ over all categories, things and
stuff; ``evaluate_detailed`` also returns per-category numbers. ``PQAccumulator`` is the
image-by-image core both use, and ``PanopticEvaluator`` the streaming version for the
detection task's panoptic outputs.

Every rule of panopticapi's ``pq_compute_single_core`` / ``PQStat.pq_average``:

* Id 0 is VOID in both maps. A predicted id in the map but not in ``segments_info``, or
  listed but absent from the map, is an error (panopticapi raises ``KeyError``); so is a
  predicted segment of a category that is not in ``categories``. A predicted segment's area is its
  pixel count; a ground-truth segment's area is its ``area`` field when given (panopticapi
  reads it from the JSON), else its pixel count.
* Matching: a ground-truth segment ``g`` (not crowd) and a prediction ``p`` of the same
  category match when ``IoU > 0.5``, with ``union = area(p) + area(g) - |g & p| - |p & VOID|``:
  the prediction's void pixels are left out of the union, crowd pixels stay in it. Such a
  match is unique on both sides, so no greedy step is needed. Each match adds 1 to its
  category's ``tp`` and the IoU to its ``iou`` sum.
* Unmatched non-crowd ground truth is a false negative; crowd ground truth never is.
* An unmatched prediction is a false positive unless more than half of its area lies on
  VOID plus the crowd region of its own category, where (as in panopticapi's
  ``crowd_labels_dict``) the crowd region of a category is its LAST crowd segment in
  ``segments_info`` order, not the union of all of them.
* Per category ``PQ = iou / (tp + fp/2 + fn/2)``, ``SQ = iou / tp`` (0 without tp),
  ``RQ = tp / (tp + fp/2 + fn/2)``. A category with ``tp + fp + fn == 0`` is left out of the
  means (its per-category numbers are 0, as panopticapi reports them); a mean over no
  category is NaN (panopticapi divides by zero there).
* Values are fractions in [0, 1], as panopticapi returns them (it prints them times 100).

Three deliberate differences, all errors on input panopticapi would accept: a segment id
listed twice in one ``segments_info`` or listed with id 0 (panopticapi's dicts would keep
one of them silently), a non-zero ground-truth map id missing from ``segments_info``
(panopticapi counts such pixels neither as void nor as a segment; mark void pixels 0), and
a ground-truth segment of an unknown category (panopticapi drops its counts silently).

Speed: one ``np.unique`` of the combined (ground truth, prediction) ids per image gives all
intersections; matching, false negatives and false positives are then array operations
over segment pairs, accumulated per category with ``np.add.at``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from jaxvision.evaluation.base import Evaluator
from jaxvision.ops import panoptic as panoptic_lib

VOID = 0
SUMMARY_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
# Summary-key suffix -> panopticapi's ``isthing`` filter of ``pq_average``.
_GROUPS = (("", None), ("_th", True), ("_st", False))


@dataclasses.dataclass(frozen=True)
class PanopticResult:
  """Everything ``pq_compute`` returns.

  Attributes:
    stats: ``PQ, SQ, RQ`` (all categories), ``PQ_th, SQ_th, RQ_th`` (things) and
      ``PQ_st, SQ_st, RQ_st`` (stuff), fractions in [0, 1], NaN for a group without any
      counted category.
    counts: ``n, n_th, n_st``: the number of categories each mean is over.
    per_category: category id -> ``{"pq", "sq", "rq", "tp", "fp", "fn", "iou"}`` for every
      category (pq = sq = rq = 0 where ``tp + fp + fn == 0``, as panopticapi reports them).
  """

  stats: dict[str, float]
  counts: dict[str, int]
  per_category: dict[Any, dict[str, float]]


def evaluate(ground_truth: Sequence[Mapping[str, Any]] | Mapping[Any, Mapping[str, Any]],
             predictions: Sequence[Mapping[str, Any]] | Mapping[Any, Mapping[str, Any]],
             categories: Sequence[Mapping[str, Any]] | Mapping[Any, Any]) -> dict[str, float]:
  """Panoptic quality, equal to panopticapi's ``pq_compute`` (as fractions, not percent).

  Args:
    ground_truth: one entry per image, each ``{"segment_map": int [H, W] segment ids (or
      uint8 [H, W, 3] panopticapi PNG colours, id = R + 256 G + 256^2 B), "segments_info":
      [{"id", "category_id", "iscrowd" (default 0), "area" (optional)}, ...]}``. Either a
      sequence (paired with ``predictions`` by position) or a mapping image id -> entry
      (paired by key; every ground-truth image needs a prediction, extra predictions are
      ignored, as in panopticapi).
    predictions: the same, with ``segments_info`` entries ``{"id", "category_id", ...}``.
    categories: a sequence of ``{"id", "isthing", "name" (optional)}`` (panopticapi's
      ``categories``), or a mapping category id -> ``isthing`` (bool or 0/1) or -> such a
      dict. Their order is the order of the means' sums.

  Returns:
    ``PQ, SQ, RQ, PQ_th, SQ_th, RQ_th, PQ_st, SQ_st, RQ_st`` (see ``PanopticResult``).
  """
  return evaluate_detailed(ground_truth, predictions, categories).stats


def evaluate_detailed(ground_truth, predictions, categories) -> PanopticResult:
  """Like ``evaluate``, also returning the per-category numbers and counts."""
  accumulator = PQAccumulator(categories)
  for image_id, gt, pred in _pair_images(ground_truth, predictions):
    for name, entry in (("ground truth", gt), ("prediction", pred)):
      if not isinstance(entry, Mapping) or not {"segment_map", "segments_info"} <= set(entry):
        raise ValueError(f"The {name} of image {image_id!r} must be a dict with "
                         "'segment_map' and 'segments_info'.")
    accumulator.add(gt["segment_map"], gt["segments_info"], pred["segment_map"],
                    pred["segments_info"], image_id=image_id)
  return accumulator.result()


def _pair_images(ground_truth, predictions):
  """(image id or position, ground truth, prediction) in ground-truth order."""
  if isinstance(ground_truth, Mapping) != isinstance(predictions, Mapping):
    raise ValueError("Give ground_truth and predictions both as sequences (paired by "
                     "position) or both as mappings image id -> entry.")
  if isinstance(ground_truth, Mapping):
    missing = [k for k in ground_truth if k not in predictions]
    if missing:
      raise ValueError(f"No prediction for the ground-truth images {missing[:10]}.")
    return [(k, ground_truth[k], predictions[k]) for k in ground_truth]
  if len(ground_truth) != len(predictions):
    raise ValueError(f"{len(ground_truth)} ground-truth images but {len(predictions)} "
                     "predictions; give one prediction per image, in the same order.")
  return [(i, gt, pred) for i, (gt, pred) in enumerate(zip(ground_truth, predictions))]


def _parse_categories(categories) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """(ids [K] as given, isthing bool [K], names) in the given order."""
  if isinstance(categories, Mapping):
    items = [dict(v, id=k) if isinstance(v, Mapping) else {"id": k, "isthing": v}
             for k, v in categories.items()]
  else:
    items = list(categories)
  ids, isthing, names = [], [], []
  for item in items:
    if "id" not in item or "isthing" not in item:
      raise ValueError(f"Category {item!r} needs an 'id' and 'isthing'.")
    ids.append(item["id"])
    # panopticapi tests ``isthing == 1``.
    isthing.append(item["isthing"] == 1)
    names.append(str(item.get("name", item["id"])))
  if len(set(ids)) != len(ids):
    raise ValueError(f"Category ids {ids} are not unique.")
  if not ids:
    raise ValueError("No categories given.")
  return np.asarray(ids, dtype=object), np.asarray(isthing, bool), tuple(names)


def _id_map(segment_map, what: str) -> np.ndarray:
  """int64 [H, W] ids from an id map or panopticapi's RGB encoding."""
  segment_map = np.asarray(segment_map)
  if segment_map.ndim == 3 and segment_map.shape[-1] == 3:
    segment_map = segment_map.astype(np.int64)
    segment_map = segment_map[..., 0] + 256 * segment_map[..., 1] + 256 * 256 * segment_map[..., 2]
  if segment_map.ndim != 2 or not np.issubdtype(segment_map.dtype, np.integer):
    raise ValueError(f"The {what} segment_map must be an integer [H, W] id map (or uint8 "
                     f"[H, W, 3] colours); got {segment_map.dtype} {segment_map.shape}.")
  segment_map = segment_map.astype(np.int64)
  if segment_map.size and segment_map.min() < 0:
    raise ValueError(f"The {what} segment_map has negative ids.")
  return segment_map


class PQAccumulator:
  """panopticapi's ``PQStat``: per-category tp, fp, fn and IoU sums over images.

  ``add`` evaluates one image (the rules are in the module docstring); ``result`` is
  ``pq_average`` over all categories, things and stuff.
  """

  def __init__(self, categories):
    self.category_ids, self.isthing, self.names = _parse_categories(categories)
    self._index = {c: i for i, c in enumerate(self.category_ids)}
    k = len(self.category_ids)
    self.tp = np.zeros(k, np.int64)
    self.fp = np.zeros(k, np.int64)
    self.fn = np.zeros(k, np.int64)
    self.iou = np.zeros(k, np.float64)

  def _segments(self, segments_info, what: str, image_id) -> dict[str, np.ndarray]:
    """Sorted-by-position arrays of one image's segments."""
    ids, cats, crowd, areas = [], [], [], []
    for segment in segments_info:
      ids.append(int(segment["id"]))
      category = segment["category_id"]
      if category not in self._index:
        raise ValueError(f"In image {image_id!r} {what} segment {segment['id']} has unknown "
                         f"category_id {category!r}; the categories are "
                         f"{list(self.category_ids)}.")
      cats.append(self._index[category])
      crowd.append(int(segment.get("iscrowd", 0)) == 1)
      areas.append(segment.get("area", -1))
    ids = np.asarray(ids, np.int64)
    if len(np.unique(ids)) != len(ids) or (ids == VOID).any():
      raise ValueError(f"In image {image_id!r} the {what} segments_info ids {ids.tolist()} "
                       "must be distinct and non-zero (0 is void).")
    # Areas stay ints (or floats, if the JSON has them) as panopticapi's arithmetic does.
    areas = np.asarray(areas) if areas else np.zeros(0, np.int64)
    return {"id": ids, "category": np.asarray(cats, np.int64), "crowd": np.asarray(crowd, bool),
            "area": areas}

  def add(self, gt_map, gt_segments_info: Sequence[Mapping[str, Any]], pred_map,
          pred_segments_info: Sequence[Mapping[str, Any]], image_id: Any = None) -> None:
    """Adds one image (id maps + their ``segments_info``, panopticapi format)."""
    gt_map = _id_map(gt_map, "ground-truth")
    pred_map = _id_map(pred_map, "predicted")
    if gt_map.shape != pred_map.shape:
      raise ValueError(f"In image {image_id!r} the ground-truth map is {gt_map.shape} but the "
                       f"predicted map {pred_map.shape}; predict at ground-truth size.")
    gt = self._segments(gt_segments_info, "ground-truth", image_id)
    pred = self._segments(pred_segments_info, "predicted", image_id)

    # All intersections at once: unique (gt id, pred id) pairs of the combined map.
    stride = int(pred_map.max(initial=0)) + 1
    pairs, intersection = np.unique(gt_map * stride + pred_map, return_counts=True)
    pair_gt, pair_pred = pairs // stride, pairs % stride

    # Map ids -> segment positions; every non-void map id must be listed.
    gt_pos = _positions(gt["id"], pair_gt)
    pred_pos = _positions(pred["id"], pair_pred)
    for name, ids, pos, map_ids in (("predicted", pred["id"], pred_pos, pair_pred),
                                    ("ground-truth", gt["id"], gt_pos, pair_gt)):
      unlisted = np.unique(map_ids[(pos < 0) & (map_ids != VOID)])
      if len(unlisted):
        raise ValueError(f"In image {image_id!r} the {name} map has segment ids "
                         f"{unlisted.tolist()[:10]} that are not in its segments_info (mark "
                         "void pixels 0).")
    pred_area = np.bincount(pred_pos[pred_pos >= 0], intersection[pred_pos >= 0],
                            minlength=len(pred["id"])).astype(np.int64)
    absent = pred["id"][pred_area == 0]
    if len(absent):
      raise ValueError(f"In image {image_id!r} the predicted segments {absent.tolist()[:10]} "
                       "are in segments_info but not in the map.")
    gt_pixels = np.bincount(gt_pos[gt_pos >= 0], intersection[gt_pos >= 0],
                            minlength=len(gt["id"])).astype(np.int64)
    gt_area = np.where(gt["area"] >= 0, gt["area"], gt_pixels)
    # |p & VOID| per prediction.
    on_void = (pair_gt == VOID) & (pred_pos >= 0)
    pred_void = np.bincount(pred_pos[on_void], intersection[on_void],
                            minlength=len(pred["id"])).astype(np.int64)

    # Matches: same category, gt not crowd, IoU > 0.5 (unique on both sides).
    both = (gt_pos >= 0) & (pred_pos >= 0)
    g, p, inter = gt_pos[both], pred_pos[both], intersection[both]
    candidate = (~gt["crowd"][g]) & (gt["category"][g] == pred["category"][p])
    g, p, inter = g[candidate], p[candidate], inter[candidate]
    union = pred_area[p] + gt_area[g] - inter - pred_void[p]
    with np.errstate(divide="ignore", invalid="ignore"):
      iou = inter / union
    matched = iou > 0.5
    g_matched, p_matched, iou = g[matched], p[matched], iou[matched]
    np.add.at(self.tp, gt["category"][g_matched], 1)
    np.add.at(self.iou, gt["category"][g_matched], iou)

    # False negatives: unmatched, non-crowd ground truth.
    gt_unmatched = np.ones(len(gt["id"]), bool)
    gt_unmatched[g_matched] = False
    np.add.at(self.fn, gt["category"][gt_unmatched & ~gt["crowd"]], 1)

    # False positives: unmatched predictions not mostly on void + their category's crowd
    # region (the last crowd segment of the category in segments_info order).
    crowd_of_category = np.full(len(self.category_ids), -1, np.int64)
    crowd_segments = np.flatnonzero(gt["crowd"])
    np.maximum.at(crowd_of_category, gt["category"][crowd_segments], crowd_segments)
    # (-1 positions index the appended sentinels: no category, no crowd segment.)
    pair_category = np.append(pred["category"], len(self.category_ids))[pred_pos]
    on_crowd = both & (gt_pos == np.append(crowd_of_category, -1)[pair_category])
    ignored = pred_void + np.bincount(pred_pos[on_crowd], intersection[on_crowd],
                                      minlength=len(pred["id"])).astype(np.int64)
    pred_unmatched = np.ones(len(pred["id"]), bool)
    pred_unmatched[p_matched] = False
    false_positive = pred_unmatched & ~(ignored / pred_area > 0.5)
    np.add.at(self.fp, pred["category"][false_positive], 1)

  def result(self) -> PanopticResult:
    """panopticapi's ``pq_average`` for all categories, things and stuff."""
    per_category = {}
    for i, category in enumerate(self.category_ids):
      tp, fp, fn, iou = int(self.tp[i]), int(self.fp[i]), int(self.fn[i]), float(self.iou[i])
      numbers = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": tp, "fp": fp, "fn": fn, "iou": iou}
      if tp + fp + fn:
        numbers.update(pq=iou / (tp + 0.5 * fp + 0.5 * fn), sq=iou / tp if tp else 0.0,
                       rq=tp / (tp + 0.5 * fp + 0.5 * fn))
      per_category[category] = numbers
    stats, counts = {}, {}
    for suffix, isthing in _GROUPS:
      # Summed in category order with Python floats, exactly as pq_average does.
      pq = sq = rq = 0.0
      n = 0
      for i, category in enumerate(self.category_ids):
        numbers = per_category[category]
        if (isthing is not None and self.isthing[i] != isthing) or not (
            numbers["tp"] + numbers["fp"] + numbers["fn"]):
          continue
        n += 1
        pq += numbers["pq"]
        sq += numbers["sq"]
        rq += numbers["rq"]
      for key, total in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
        stats[key + suffix] = total / n if n else float("nan")
      counts["n" + suffix] = n
    return PanopticResult(stats=stats, counts=counts, per_category=per_category)


def _positions(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
  """Position of each value in ``ids`` (any order), -1 where absent."""
  if not len(ids):
    return np.full(values.shape, -1, np.int64)
  order = np.argsort(ids, kind="stable")
  sorted_ids = ids[order]
  found = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
  hit = sorted_ids[found] == values
  return np.where(hit, order[found], -1).astype(np.int64)


class PanopticEvaluator(Evaluator):
  """PQ of the detection task's panoptic maps against the batches' masks and semantic maps.

  Categories (the contract of ``jaxvision.ops.panoptic``): thing class ``c`` (0-based)
  is category ``c``, stuff class ``s`` (1..S) category ``C + s - 1``.

  Outputs (B rows, D detection slots): ``panoptic`` int [B, H, W] from
  ``combine_panoptic`` (0 void, ``d + 1`` detection slot d, ``D + s`` stuff s) and
  ``classes`` int [B, D] (0-based); the predicted ``segments_info`` is
  ``ops.panoptic.segments_info`` of the ids present.
  Batch (G ground-truth slots): ``masks`` [B, G, H, W] (visible instance masks, ``>= 0.5``
  foreground), ``labels`` [B, G], ``box_valid`` [B, G], optional ``is_crowd`` [B, G],
  ``semantic`` int [B, H, W] (``C + s`` on stuff s; things ``1..C``; ``ignore_label`` on
  padding) and ``example_mask`` [B] (False rows are padding and skipped).

  Ground truth per image: one thing segment per valid object with visible pixels (crowd
  objects flagged ``iscrowd``), one stuff segment per stuff class present; void (0) are the
  ``ignore_label`` pixels, pixels of two object masks at once (no single owner), and pixels
  neither in an object mask nor on stuff (e.g. background when there are no stuff classes,
  or an object beyond the ``max_boxes`` slots).

  ``result`` returns ``SUMMARY_KEYS`` as fractions in [0, 1] (NaN for a group with no
  counted category, e.g. ``PQ_st`` without stuff classes).
  """

  def __init__(self, thing_names: Sequence[str], stuff_names: Sequence[str] = (), *,
               ignore_label: int = 255):
    self.thing_names = tuple(thing_names)
    self.stuff_names = tuple(stuff_names)
    self.ignore_label = ignore_label
    num_things = len(self.thing_names)
    self.categories = (
        [{"id": c, "isthing": 1, "name": n} for c, n in enumerate(self.thing_names)]
        + [{"id": num_things + s, "isthing": 0, "name": n}
           for s, n in enumerate(self.stuff_names)])
    self._accumulator = PQAccumulator(self.categories)
    self._images = 0

  def ground_truth(self, batch: Mapping[str, np.ndarray],
                   row: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(int32 [H, W] id map, segments_info) of one batch row: object slot g -> id ``g + 1``,
    stuff class s -> id ``G + s``."""
    num_things, num_stuff = len(self.thing_names), len(self.stuff_names)
    masks = np.asarray(batch["masks"][row]) >= 0.5
    valid = np.asarray(batch["box_valid"][row], bool)
    labels = np.asarray(batch["labels"][row])
    semantic = np.asarray(batch["semantic"][row]).astype(np.int64)
    crowd = (np.asarray(batch["is_crowd"][row], bool) if "is_crowd" in batch
             else np.zeros(len(valid), bool))
    num_slots = masks.shape[0]
    masks = masks & valid[:, None, None]
    stuff = (semantic > num_things) & (semantic <= num_things + num_stuff)
    segment_map = np.where(stuff, num_slots + semantic - num_things, VOID).astype(np.int32)
    owners = masks.sum(axis=0)
    owner = masks.argmax(axis=0) + 1 if num_slots else np.zeros_like(owners)
    segment_map = np.where(owners == 1, owner, segment_map)
    segment_map = np.where((owners > 1) | (semantic == self.ignore_label), VOID, segment_map)
    segments = []
    for segment_id in np.unique(segment_map):
      if segment_id == VOID:
        continue
      if segment_id <= num_slots:
        slot = segment_id - 1
        segments.append({"id": int(segment_id), "category_id": int(labels[slot]),
                         "iscrowd": int(crowd[slot])})
      else:
        segments.append({"id": int(segment_id),
                         "category_id": int(num_things + segment_id - num_slots - 1),
                         "iscrowd": 0})
    return segment_map, segments

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    panoptic = np.asarray(outputs["panoptic"])
    classes = np.asarray(outputs["classes"])
    if panoptic.shape != np.shape(batch["semantic"]):
      raise ValueError(f"outputs['panoptic'] has shape {panoptic.shape} but batch['semantic'] "
                       f"{np.shape(batch['semantic'])}; predict at label resolution.")
    num_detections = classes.shape[1]
    for row in np.flatnonzero(np.asarray(batch["example_mask"])):
      gt_map, gt_segments = self.ground_truth(batch, row)
      pred_segments = panoptic_lib.segments_info(panoptic[row], classes[row], num_detections,
                                                 len(self.thing_names))
      self._accumulator.add(gt_map, gt_segments, panoptic[row], pred_segments,
                            image_id=self._images)
      self._images += 1

  def result(self) -> dict[str, float]:
    return dict(self._accumulator.result().stats)
