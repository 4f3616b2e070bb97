"""COCO box, mask and keypoint AP/AR: exactly pycocotools' numbers, vectorized.

``evaluate(ground_truth, detections, iou_type)`` takes a COCO-format ground-truth dict and a
list of COCO result dicts and returns the summary numbers pycocotools' ``COCOeval`` prints
(``evaluate(); accumulate(); summarize()``); ``evaluate_detailed`` also returns per-category
AP and the full precision/recall/score arrays. ``CocoEvaluator`` is the streaming version
for the training loop.

Matching and accumulation are our own numpy code, replicating every pycocotools rule
(``useCats=1``, default parameters):

* Ground truth: the evaluated images are all ``images`` of the ground truth, the evaluated
  categories all its ``categories``; annotations of other images or categories are dropped,
  and so are detections of unknown categories. A detection of an unknown image is an error.
  ``iscrowd`` annotations are ignored; for keypoints so are annotations with
  ``num_keypoints == 0``. A ground truth outside an area range is ignored in that range,
  with inclusive bounds (``area < lo or area > hi``) on the annotation's ``area`` field,
  not on its box or mask.
* Detections: sorted by score with a stable sort (ties keep the input order) and truncated
  to ``maxDets[-1]`` per image and category. Their ``area`` follows ``COCO.loadRes``, decided
  by the *first* detection: if it has a ``bbox``, every area is ``w * h`` of the box (also for
  ``segm`` and ``keypoints`` results); else if it has a ``segmentation``, the mask area; else
  the area of the keypoints' extent. In ``segm`` evaluation a box-only result is the box's
  polygon.
* Similarity: box IoU computed with the same floating-point operations as pycocotools'
  C code; mask IoU with ``pycocotools.mask.iou``; OKS with per-keypoint sigmas (the 17
  standard COCO ones by default). For a crowd ground truth the union is the detection's area.
* Greedy matching per image, category, area range and IoU threshold ``t``: each detection in
  score order takes the available ground truth of highest IoU ``>= min(t, 1 - 1e-10)``,
  preferring non-ignored ones, the later one on ties (pycocotools' scan order, ignored
  ground truth last). A crowd ground truth stays available and can absorb many detections.
  A detection matched to an ignored ground truth is ignored; an unmatched detection outside
  the area range is ignored. As in pycocotools, a match to a ground truth whose ``id`` is 0
  counts as no match (``dtMatches`` stores the id, 0 means unmatched).
* Accumulation per category, area range and ``maxDets``: detections of all images merged in
  score order (stable: ties in image-id order, then per-image rank), precision made monotone
  from the right and read at 101 recall thresholds (first detection with recall ``>=`` the
  threshold, precision 0 past the last detection), recall = final recall. Categories without
  non-ignored ground truth in a setting get -1 there; a summary number is the mean of the
  entries ``> -1`` and -1 if there are none.

Speed: detections are grouped by (image, category) with sorts, all similarities of a group
computed at once, and only detections with a similarity ``>=`` the lowest threshold enter
the sequential greedy step, which then runs for all groups, thresholds and area ranges at
once (one numpy step per detection rank). Accumulation works on the list of true
positives (precision can only rise at one, and the first detection reaching a recall
threshold is a true positive), with integer counts, exactly and vectorized over
thresholds, area ranges and categories (see ``_accumulate``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from jaxvision.evaluation.base import Evaluator

IOU_TYPES = ("bbox", "segm", "keypoints")

# Per-keypoint OKS sigmas of the 17 COCO person keypoints.
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07,
                                 1.07, .87, .87, .89, .89]) / 10.0

# pycocotools' summarize(): (key, AP (else AR), IoU threshold (None: mean over all), area
# range, maxDets).
_DETECTION_SUMMARY = (
    ("AP", True, None, "all", 100), ("AP50", True, .5, "all", 100),
    ("AP75", True, .75, "all", 100), ("APs", True, None, "small", 100),
    ("APm", True, None, "medium", 100), ("APl", True, None, "large", 100),
    ("AR1", False, None, "all", 1), ("AR10", False, None, "all", 10),
    ("AR100", False, None, "all", 100), ("ARs", False, None, "small", 100),
    ("ARm", False, None, "medium", 100), ("ARl", False, None, "large", 100))
_KEYPOINT_SUMMARY = (
    ("AP", True, None, "all", 20), ("AP50", True, .5, "all", 20), ("AP75", True, .75, "all", 20),
    ("APm", True, None, "medium", 20), ("APl", True, None, "large", 20),
    ("AR", False, None, "all", 20), ("AR50", False, .5, "all", 20),
    ("AR75", False, .75, "all", 20), ("ARm", False, None, "medium", 20),
    ("ARl", False, None, "large", 20))
DETECTION_SUMMARY_KEYS = tuple(row[0] for row in _DETECTION_SUMMARY)
# pycocotools' ten keypoint stats (all at maxDets=20; no small range for keypoints).
KEYPOINT_SUMMARY_KEYS = tuple(row[0] for row in _KEYPOINT_SUMMARY)


@dataclasses.dataclass(frozen=True)
class CocoParams:
  """pycocotools' default evaluation parameters for one ``iou_type``.

  Attributes:
    iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
    iou_thresholds: float64 [T], 0.5:0.05:0.95.
    recall_thresholds: float64 [R], 0:0.01:1.
    area_ranges: float64 [A, 2], inclusive ``(lo, hi)`` area bounds.
    area_labels: the A range names (``all``, ``small``, ``medium``, ``large``).
    max_detections: the M ``maxDets`` values, ascending.
    summary: the summary numbers, ``(key, is_ap, iou_threshold or None, area label, maxDets)``.
  """

  iou_type: str
  iou_thresholds: np.ndarray
  recall_thresholds: np.ndarray
  area_ranges: np.ndarray
  area_labels: tuple[str, ...]
  max_detections: tuple[int, ...]
  summary: tuple[tuple[str, bool, float | None, str, int], ...]


def coco_params(iou_type: str) -> CocoParams:
  """pycocotools' ``Params(iouType)`` defaults (same float values: same ``linspace`` calls)."""
  if iou_type not in IOU_TYPES:
    raise ValueError(f"Unknown iou_type {iou_type!r}; use one of {IOU_TYPES}.")
  iou_thresholds = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
  recall_thresholds = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
  if iou_type == "keypoints":
    area_ranges = [[0 ** 2, 1e5 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]]
    area_labels = ("all", "medium", "large")
    max_detections = (20,)
    summary = _KEYPOINT_SUMMARY
  else:
    area_ranges = [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]]
    area_labels = ("all", "small", "medium", "large")
    max_detections = (1, 10, 100)
    summary = _DETECTION_SUMMARY
  return CocoParams(iou_type, iou_thresholds, recall_thresholds,
                    np.asarray(area_ranges, np.float64), area_labels, max_detections, summary)


@dataclasses.dataclass(frozen=True)
class CocoResult:
  """Everything ``COCOeval.accumulate`` + ``summarize`` computes.

  Attributes:
    stats: summary key -> value (``DETECTION_SUMMARY_KEYS`` for bbox/segm,
      ``KEYPOINT_SUMMARY_KEYS`` for keypoints), -1 where pycocotools gives -1.
    precision: float64 [T, R, K, A, M] (pycocotools' ``eval["precision"]``), -1 for
      categories without non-ignored ground truth in that area range.
    recall: float64 [T, K, A, M], same -1 convention.
    scores: float64 [T, R, K, A, M], the detection score at each recall threshold.
    category_ids: [K] the evaluated category ids, ascending (axis K of the arrays).
    per_category_ap: category id -> AP@[.5:.95] over area ``all`` at the largest ``maxDets``
      (-1 for categories without ground truth).
    params: the parameters (thresholds, area ranges, maxDets) indexing the arrays.
  """

  stats: dict[str, float]
  precision: np.ndarray
  recall: np.ndarray
  scores: np.ndarray
  category_ids: np.ndarray
  per_category_ap: dict[Any, float]
  params: CocoParams


def evaluate(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]],
             iou_type: str = "bbox", keypoint_sigmas: np.ndarray | None = None) -> dict[str, float]:
  """COCO summary numbers, equal to pycocotools' ``COCOeval.stats``.

  Args:
    ground_truth: COCO dict with ``images`` (``id``; ``height``/``width`` for polygon or
      uncompressed-RLE masks), ``categories`` (``id``) and ``annotations`` (``id``,
      ``image_id``, ``category_id``, ``area``, ``iscrowd`` (default 0), and ``bbox`` xywh,
      ``segmentation`` (polygons, RLE, or a binary [H, W] numpy mask) or ``keypoints``
      (``3 * K`` numbers ``x, y, v``) with ``num_keypoints`` (default: count of ``v > 0``)).
    detections: COCO result dicts with ``image_id``, ``category_id``, ``score`` and ``bbox``,
      ``segmentation`` or ``keypoints``. Not modified.
    iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"`` (OKS, ``maxDets`` 20).
    keypoint_sigmas: float [K] per-keypoint OKS sigmas; default the 17 COCO person sigmas.

  Returns:
    ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` for bbox and segm;
    for keypoints pycocotools' ten stats ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm,
    ARl`` (all at ``maxDets`` 20; ``AR`` is AR@[.5:.95]).
  """
  return evaluate_detailed(ground_truth, detections, iou_type, keypoint_sigmas).stats


def evaluate_detailed(ground_truth: Mapping[str, Any], detections: Sequence[Mapping[str, Any]],
                      iou_type: str = "bbox",
                      keypoint_sigmas: np.ndarray | None = None) -> CocoResult:
  """Like ``evaluate``, also returning per-category AP and the precision/recall arrays."""
  params = coco_params(iou_type)
  images = _parse_images(ground_truth)
  gts = _parse_ground_truth(ground_truth, images, iou_type)
  dets = _parse_detections(detections, images, iou_type)
  if iou_type == "keypoints":
    num_keypoints = {x.geometry.shape[1] for x in (gts, dets) if len(x.image)}
    sigmas = COCO_KEYPOINT_SIGMAS if keypoint_sigmas is None else np.asarray(
        keypoint_sigmas, np.float64)
    if num_keypoints and num_keypoints != {len(sigmas)}:
      raise ValueError(f"Keypoints have {sorted(num_keypoints)} points but there are "
                       f"{len(sigmas)} keypoint_sigmas; pass one sigma per keypoint.")
  else:
    sigmas = None
  return _evaluate_instances(params, images.category_ids, gts, dets, sigmas)


# --- parsing ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Images:
  """Evaluated images and categories of a ground-truth dict, ids ascending."""

  image_ids: np.ndarray
  heights: np.ndarray  # int64 [I], 0 where unknown
  widths: np.ndarray
  category_ids: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Instances:
  """Ground-truth annotations or detections as flat arrays (one row per instance).

  ``geometry`` is float64 [N, 4] xywh boxes (bbox), a list of N compressed RLE dicts (segm)
  or float64 [N, K, 3] keypoints. ``boxes`` (float64 [N, 4] xywh) is set for keypoint
  ground truth, whose OKS uses the box when no keypoint is visible. Detections have
  ``is_crowd``/``ignore`` False, ``ids`` 0.
  """

  image: np.ndarray  # int64 [N], index into _Images.image_ids
  category: np.ndarray  # int64 [N], index into _Images.category_ids
  area: np.ndarray  # float64 [N]
  score: np.ndarray  # float64 [N] (0 for ground truth)
  is_crowd: np.ndarray  # bool [N]
  ignore: np.ndarray  # bool [N], ignored in every area range
  ids: np.ndarray  # [N] annotation ids
  geometry: Any
  boxes: np.ndarray | None = None

  def take(self, indices: np.ndarray) -> _Instances:
    geometry = ([self.geometry[i] for i in indices] if isinstance(self.geometry, list)
                else self.geometry[indices])
    return _Instances(self.image[indices], self.category[indices], self.area[indices],
                      self.score[indices], self.is_crowd[indices], self.ignore[indices],
                      self.ids[indices], geometry,
                      None if self.boxes is None else self.boxes[indices])


def _column(records: Sequence[Mapping[str, Any]], key: str, what: str,
            dtype: Any = None) -> np.ndarray:
  """``np.asarray([r[key] for r in records])`` with an actionable error for a missing key."""
  return np.asarray(_values(records, key, what), dtype=dtype)


def _values(records: Sequence[Mapping[str, Any]], key: str, what: str) -> list[Any]:
  """``[r[key] for r in records]`` with an actionable error for a missing key."""
  try:
    return [r[key] for r in records]
  except KeyError:
    index = next(i for i, r in enumerate(records) if key not in r)
    raise ValueError(f"{what} #{index} ({dict(records[index])!r:.200}) has no {key!r} "
                     f"field, which COCO {what}s need.") from None


def _lookup(sorted_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Indices of ``values`` in ``sorted_ids`` and whether each was found."""
  if len(sorted_ids) == 0 or len(values) == 0:
    return np.zeros(len(values), np.int64), np.zeros(len(values), bool)
  index = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
  return index, sorted_ids[index] == values


def _parse_images(ground_truth: Mapping[str, Any]) -> _Images:
  for key in ("images", "categories"):
    if key not in ground_truth:
      raise ValueError(f"The ground-truth dict has no {key!r} list; a COCO ground truth needs "
                       "'images', 'categories' and 'annotations'.")
  images = ground_truth["images"]
  image_ids = _column(images, "id", "image")
  image_ids, first = np.unique(image_ids, return_index=True)
  images = [images[i] for i in first]
  return _Images(image_ids,
                 np.asarray([img.get("height", 0) for img in images], np.int64),
                 np.asarray([img.get("width", 0) for img in images], np.int64),
                 np.unique(_column(ground_truth["categories"], "id", "category")))


def _to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
  """A segmentation (polygons, RLE or binary [H, W] mask) as compressed RLE (``annToRLE``)."""
  if isinstance(segmentation, np.ndarray):
    return mask_utils.encode(np.asfortranarray(segmentation.astype(np.uint8)))
  if isinstance(segmentation, list):
    if height <= 0 or width <= 0:
      raise ValueError("Polygon segmentations need the image's 'height' and 'width' in the "
                       "ground truth's 'images'.")
    return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  if isinstance(segmentation.get("counts"), list):
    return mask_utils.frPyObjects(segmentation, *segmentation["size"])
  return segmentation


def _geometry(records: Sequence[Mapping[str, Any]], image: np.ndarray, images: _Images,
              iou_type: str, what: str) -> Any:
  if iou_type == "bbox":
    return _column(records, "bbox", what, np.float64).reshape(-1, 4)
  if iou_type == "keypoints":
    return _keypoint_array(records, what)
  segmentations = _values(records, "segmentation", what)
  return [_to_rle(s, images.heights[i], images.widths[i]) for s, i in zip(segmentations, image)]


def _keypoint_array(records: Sequence[Mapping[str, Any]], what: str) -> np.ndarray:
  """float64 [N, K, 3] from the records' flat ``keypoints`` lists (K = 0 when N = 0)."""
  keypoints = _column(records, "keypoints", what, np.float64)
  return keypoints.reshape(len(records), -1, 3) if len(records) else np.zeros((0, 0, 3))


def _parse_ground_truth(ground_truth: Mapping[str, Any], images: _Images,
                        iou_type: str) -> _Instances:
  annotations = ground_truth.get("annotations", [])
  image, image_found = _lookup(images.image_ids, _column(annotations, "image_id", "annotation"))
  category, category_found = _lookup(images.category_ids,
                                     _column(annotations, "category_id", "annotation"))
  kept = np.flatnonzero(image_found & category_found)
  annotations = [annotations[i] for i in kept]
  image, category = image[kept], category[kept]
  ids = _column(annotations, "id", "annotation")
  if len(np.unique(ids)) != len(ids):
    raise ValueError("Ground-truth annotation ids are not unique; give every annotation its "
                     "own 'id'.")
  is_crowd = np.asarray([bool(a.get("iscrowd", 0)) for a in annotations], bool)
  geometry = _geometry(annotations, image, images, iou_type, "annotation")
  ignore = is_crowd.copy()
  boxes = None
  if iou_type == "keypoints":
    visible = np.count_nonzero(geometry[:, :, 2] > 0, axis=1)
    num_keypoints = np.asarray([a.get("num_keypoints", v) for a, v in zip(annotations, visible)])
    ignore |= num_keypoints == 0
    boxes = _column(annotations, "bbox", "annotation", np.float64).reshape(-1, 4)
  return _Instances(image, category, _column(annotations, "area", "annotation", np.float64),
                    np.zeros(len(kept)), is_crowd, ignore, ids, geometry, boxes)


def _parse_detections(detections: Sequence[Mapping[str, Any]], images: _Images,
                      iou_type: str) -> _Instances:
  image, image_found = _lookup(images.image_ids, _column(detections, "image_id", "detection"))
  if not image_found.all():
    bad = detections[int(np.argmin(image_found))]["image_id"]
    raise ValueError(f"Detection for image_id {bad!r}, which is not in the ground truth's "
                     "'images'; detections must refer to evaluated images.")
  category, category_found = _lookup(images.category_ids,
                                     _column(detections, "category_id", "detection"))
  kept = np.flatnonzero(category_found)
  detections = [detections[i] for i in kept]
  image, category = image[kept], category[kept]
  score = _column(detections, "score", "detection", np.float64)
  # COCO.loadRes decides how areas are computed from the first detection of the whole list.
  first = detections[0] if detections else {}
  geometry = None
  if "bbox" in first and first["bbox"] != []:
    boxes = _column(detections, "bbox", "detection", np.float64).reshape(-1, 4)
    area = boxes[:, 2] * boxes[:, 3]
    if iou_type == "bbox":
      geometry = boxes
    elif iou_type == "segm":
      detections = [d if "segmentation" in d else {**d, "segmentation": _box_polygon(box)}
                    for d, box in zip(detections, boxes.tolist())]
  elif "segmentation" in first:
    area = None
  elif "keypoints" in first:
    points = _keypoint_array(detections, "detection")
    extent = points[:, :, :2].max(axis=1) - points[:, :, :2].min(axis=1)
    area = extent[:, 0] * extent[:, 1]
  elif detections:
    raise ValueError("Detections need a 'bbox', 'segmentation' or 'keypoints' field.")
  else:
    area = np.zeros(0)
  if geometry is None:
    geometry = _geometry(detections, image, images, iou_type, "detection")
  if area is None:
    area = _rle_area(geometry)
  count = len(detections)
  return _Instances(image, category, area, score, np.zeros(count, bool), np.zeros(count, bool),
                    np.zeros(count, np.int64), geometry)


def _rle_area(rles: Sequence[Mapping[str, Any]]) -> np.ndarray:
  """``mask_utils.area`` of a list of RLEs as float64 ``[n]``, in chunks of at most 255:
  pycocotools' ``area`` builds a uint8 array of the list's length first, which overflows
  under numpy 2 for more than 255 RLEs (e.g. the segm detections of a few images)."""
  chunk = 255
  parts = [np.asarray(mask_utils.area(list(rles[i:i + chunk])), np.float64).reshape(-1)
           for i in range(0, len(rles), chunk)]
  return np.concatenate(parts) if parts else np.zeros(0)


def _box_polygon(box: list[float]) -> list[list[float]]:
  """The polygon ``COCO.loadRes`` gives a box-only result in ``segm`` evaluation."""
  x1, x2, y1, y2 = box[0], box[0] + box[2], box[1], box[1] + box[3]
  return [[x1, y1, x1, y2, x2, y2, x2, y1]]


# --- similarity -------------------------------------------------------------------------


def _box_iou_pairs(det_boxes: np.ndarray, gt_boxes: np.ndarray,
                   gt_is_crowd: np.ndarray) -> np.ndarray:
  """IoU of paired xywh boxes [P, 4], operation for operation as pycocotools' ``bbIou``."""
  dx, dy, dw, dh = det_boxes.T
  gx, gy, gw, gh = gt_boxes.T
  width = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
  height = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
  overlaps = (width > 0) & (height > 0)
  intersection = width * height
  det_area = dw * dh
  union = np.where(gt_is_crowd, det_area, det_area + gw * gh - intersection)
  return np.divide(intersection, union, out=np.zeros(len(intersection)), where=overlaps)


def _oks_pairs(det_keypoints: np.ndarray, gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
               gt_area: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
  """Object keypoint similarity of paired instances, as pycocotools' ``computeOks``.

  Args:
    det_keypoints, gt_keypoints: float64 [P, K, 3] ``(x, y, v)``.
    gt_boxes: float64 [P, 4] xywh; without visible keypoints the distance is measured to the
      box grown by its size on every side.
    gt_area: float64 [P] annotation areas (the OKS scale).
    sigmas: float64 [K].
  """
  if len(det_keypoints) == 0:
    return np.zeros(0)
  variances = (sigmas * 2) ** 2
  visible = gt_keypoints[:, :, 2] > 0
  num_visible = np.count_nonzero(visible, axis=1)
  delta = det_keypoints[:, :, :2] - gt_keypoints[:, :, :2]
  lower = gt_boxes[:, None, :2] - gt_boxes[:, None, 2:]
  upper = gt_boxes[:, None, :2] + gt_boxes[:, None, 2:] * 2
  outside = (np.maximum(0, lower - det_keypoints[:, :, :2])
             + np.maximum(0, det_keypoints[:, :, :2] - upper))
  delta = np.where((num_visible > 0)[:, None, None], delta, outside)
  error = ((delta[:, :, 0] ** 2 + delta[:, :, 1] ** 2) / variances
           / (gt_area[:, None] + np.spacing(1)) / 2)
  used = visible | (num_visible == 0)[:, None]
  return np.where(used, np.exp(-error), 0).sum(axis=1) / np.count_nonzero(used, axis=1)


def _mask_iou_pairs(dets: _Instances, gts: _Instances, det_gt_start: np.ndarray,
                    det_gt_count: np.ndarray, pair_offset: np.ndarray,
                    det_group: np.ndarray) -> np.ndarray:
  """Mask IoUs of every (detection, ground truth) pair, one ``mask.iou`` call per group."""
  ious = np.zeros(int(det_gt_count.sum()))
  with_gt = np.flatnonzero(det_gt_count)
  starts = with_gt[np.r_[True, det_group[with_gt][1:] != det_group[with_gt][:-1]]]
  ends = np.searchsorted(det_group, det_group[starts], side="right")
  for start, end in zip(starts, ends):
    gt_start, gt_count = det_gt_start[start], det_gt_count[start]
    gt_slice = slice(gt_start, gt_start + gt_count)
    group_ious = mask_utils.iou(dets.geometry[start:end], gts.geometry[gt_slice],
                                gts.is_crowd[gt_slice].astype(np.uint8).tolist())
    ious[pair_offset[start]:pair_offset[start] + (end - start) * gt_count] = np.ravel(group_ious)
  return ious


# --- evaluation -------------------------------------------------------------------------

# Per (threshold, area range, detection): a false positive (unmatched), a true positive, or
# ignored (matched to an ignored gt, or unmatched outside the area range).
_FALSE_POSITIVE, _TRUE_POSITIVE, _IGNORED = 0, 1, 2


def _evaluate_instances(params: CocoParams, category_ids: np.ndarray, gts: _Instances,
                        dets: _Instances, sigmas: np.ndarray | None) -> CocoResult:
  num_categories = len(category_ids)
  # Ground truth grouped by (image, category), keeping annotation order inside a group.
  gt_group = gts.image * num_categories + gts.category
  gt_order = np.argsort(gt_group, kind="stable")
  gts, gt_group = gts.take(gt_order), gt_group[gt_order]
  # Detections grouped likewise, by descending score inside a group (stable: input order on
  # ties), truncated to maxDets[-1] per group.
  det_group = dets.image * num_categories + dets.category
  det_order = np.lexsort((-dets.score, det_group))
  det_group = det_group[det_order]
  rank = np.arange(len(det_group)) - np.searchsorted(det_group, det_group)
  kept = rank < params.max_detections[-1]
  dets, det_group, rank = dets.take(det_order[kept]), det_group[kept], rank[kept]

  # Every (detection, ground truth of its group) pair, detection-major, gt order inside.
  det_gt_start = np.searchsorted(gt_group, det_group, side="left")
  det_gt_count = np.searchsorted(gt_group, det_group, side="right") - det_gt_start
  pair_offset = np.cumsum(det_gt_count) - det_gt_count
  pair_det = np.repeat(np.arange(len(det_group)), det_gt_count)
  pair_gt = det_gt_start[pair_det] + np.arange(len(pair_det)) - pair_offset[pair_det]
  if params.iou_type == "bbox":
    pair_iou = _box_iou_pairs(dets.geometry[pair_det], gts.geometry[pair_gt],
                              gts.is_crowd[pair_gt])
  elif params.iou_type == "keypoints":
    pair_iou = _oks_pairs(dets.geometry[pair_det], gts.geometry[pair_gt], gts.boxes[pair_gt],
                          gts.area[pair_gt], sigmas)
  else:
    pair_iou = _mask_iou_pairs(dets, gts, det_gt_start, det_gt_count, pair_offset, det_group)

  lo, hi = params.area_ranges[:, :1], params.area_ranges[:, 1:]
  gt_ignored = gts.ignore | (gts.area < lo) | (gts.area > hi)  # [A, G]
  det_outside = (dets.area < lo) | (dets.area > hi)  # [A, D]
  det_state = _match(pair_iou, pair_offset, det_gt_start, det_gt_count, det_group,
                     gts.is_crowd, gt_ignored, gts.ids, params.iou_thresholds)
  det_state[(det_state == _FALSE_POSITIVE) & det_outside] = _IGNORED
  num_regular_gt = np.stack([np.bincount(gts.category[~ignored], minlength=num_categories)
                             for ignored in gt_ignored], axis=1)  # [K, A]
  precision, recall, scores = _accumulate(params, dets.category, dets.image, rank, dets.score,
                                          det_state, num_regular_gt)
  stats = {key: _summarize(params, precision, recall, is_ap, iou, area, max_det)
           for key, is_ap, iou, area, max_det in params.summary}
  per_category_ap = {}
  for k, category_id in enumerate(category_ids.tolist()):
    values = precision[:, :, k, 0, -1]
    per_category_ap[category_id] = _mean_of_defined(values)
  return CocoResult(stats, precision, recall, scores, category_ids, per_category_ap, params)


def _match(pair_iou: np.ndarray, pair_offset: np.ndarray, det_gt_start: np.ndarray,
           det_gt_count: np.ndarray, det_group: np.ndarray, gt_is_crowd: np.ndarray,
           gt_ignored: np.ndarray, gt_ids: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
  """pycocotools' greedy matching for all groups, thresholds and area ranges at once.

  Args:
    pair_iou: float64 [P] similarities, detection-major (see ``_evaluate_instances``).
    pair_offset, det_gt_start, det_gt_count: int [D] where each detection's pairs and its
      group's ground truth start, and the group's ground-truth count.
    det_group: int [D] group (image, category) per detection; detections are sorted by
      group, then by rank.
    gt_is_crowd: bool [G]; gt_ignored: bool [A, G]; gt_ids: [G] annotation ids.
    iou_thresholds: float64 [T].

  Returns:
    int8 [T, A, D]: ``_TRUE_POSITIVE`` (matched to a regular gt), ``_IGNORED`` (matched to
    an ignored gt), else ``_FALSE_POSITIVE`` (also for a match to a gt with id 0).
  """
  num_area_ranges = gt_ignored.shape[0]
  thresholds = np.minimum(iou_thresholds, 1 - 1e-10)
  assert thresholds.min() >= 0.5, "the ignored-gt key below needs thresholds >= 0.5"
  state = np.full((len(thresholds), num_area_ranges, len(det_group)), _FALSE_POSITIVE, np.int8)
  with_gt = np.flatnonzero(det_gt_count)
  if len(with_gt) == 0:
    return state
  best_iou = np.maximum.reduceat(pair_iou, pair_offset[with_gt])
  # A detection below the lowest threshold with every gt neither matches nor blocks anything.
  candidates = with_gt[best_iou >= thresholds.min()]
  candidate_group = det_group[candidates]
  candidate_rank = np.arange(len(candidates)) - np.searchsorted(candidate_group, candidate_group)
  by_rank = candidates[np.argsort(candidate_rank, kind="stable")]
  step_ends = np.cumsum(np.bincount(candidate_rank))
  taken = np.zeros((len(thresholds), num_area_ranges, len(gt_is_crowd)), bool)
  for step_start, step_end in zip(np.r_[0, step_ends[:-1]], step_ends):
    # One detection per group: the groups' gt sets are disjoint, so updates cannot collide.
    dets = by_rank[step_start:step_end]
    gt_count = det_gt_count[dets]
    # Columns in reverse gt order: argmax (first maximum) then finds the *last* gt of
    # maximal IoU, which is the one pycocotools' scan keeps.
    column = np.arange(gt_count.max() - 1, -1, -1)
    in_group = column < gt_count[:, None]  # [n, G]
    iou = np.where(in_group, pair_iou[np.where(in_group, pair_offset[dets][:, None] + column, 0)],
                   -np.inf)
    gt_index = np.where(in_group, det_gt_start[dets][:, None] + column, 0)
    # Ignored gts are only taken when no regular one qualifies: they compete with key
    # iou - 1, about [-0.5, 0] (a crowd IoU can round to just above 1), below every regular
    # key (iou >= threshold >= 0.5), and exact (Sterbenz: iou in [0.5, 2]), so ties and
    # order among ignored gts are kept.
    preference = np.where(gt_ignored[:, gt_index], iou - 1, iou)  # [A, n, G]
    available = ~taken[:, :, gt_index] | gt_is_crowd[gt_index]  # [T, A, n, G]
    eligible = (iou >= thresholds[:, None, None])[:, None] & available
    key = np.where(eligible, preference, -np.inf)
    best = np.argmax(key, axis=-1)  # [T, A, n]
    best_key = np.take_along_axis(key, best[..., None], axis=-1)[..., 0]
    matched = best_key > -np.inf
    matched_gt = gt_index[np.arange(len(dets)), best]
    regular_outcome = np.where(gt_ids[matched_gt] != 0, _TRUE_POSITIVE, _FALSE_POSITIVE)
    outcome = np.where(best_key > 0.25, regular_outcome, _IGNORED)
    state[:, :, dets] = np.where(matched, outcome, _FALSE_POSITIVE)
    t, a, n = np.nonzero(matched)
    taken[t, a, matched_gt[t, a, n]] = True
  return state


def _min_counts(recall_thresholds: np.ndarray, num_regular_gt: np.ndarray) -> np.ndarray:
  """Smallest integer ``c`` with ``c / n >= r`` in float64, for every ``n`` [...] and ``r`` [R].

  pycocotools finds the first detection whose recall ``tp / n`` reaches ``r``; since float
  division is monotonic in ``tp`` that is the first detection with ``tp >= c``: an exact
  integer search.
  """
  n = np.maximum(num_regular_gt, 1)[..., None].astype(np.float64)
  guess = np.ceil(recall_thresholds * n)
  candidates = guess[..., None] + np.arange(-2, 3)  # [..., R, 5]
  ok = (candidates >= 0) & (candidates / n[..., None] >= recall_thresholds[:, None])
  return np.where(ok, candidates, np.inf).min(axis=-1).astype(np.int64)


def _accumulate(params: CocoParams, det_category: np.ndarray, det_image: np.ndarray,
                rank: np.ndarray, score: np.ndarray, state: np.ndarray,
                num_regular_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``COCOeval.accumulate``: precision [T,R,K,A,M], recall [T,K,A,M], scores [T,R,K,A,M].

  Args:
    state: int8 [T, A, D] ``_TRUE_POSITIVE``, ``_FALSE_POSITIVE`` or ``_IGNORED`` per
      detection (see ``_evaluate_instances``); other args as there.

  For each ``maxDets`` the kept detections are laid out category after category in score
  order, one copy per (threshold, area range), so every (t, a, k) "row" of pycocotools'
  loop is a contiguous segment of the raveled [T, A, N] arrays. Precision only rises at a
  true positive (between two, ``tp`` is fixed and ``fp`` grows), so its right-to-left
  envelope at any position is the max over the true positives from there on, and the first
  position whose recall reaches a threshold is the c-th true positive of the row
  (``_min_counts``). Everything after the flags therefore runs on the short list of true
  positives, exactly and without per-row loops.
  """
  num_thresholds, num_recalls = len(params.iou_thresholds), len(params.recall_thresholds)
  num_categories, num_areas = num_regular_gt.shape
  rows_shape = (num_thresholds, num_areas, num_categories)
  num_max_dets = len(params.max_detections)
  # Filled in a [M, T, A, K, (R)] layout, returned as transposed views.
  precision = np.zeros((num_max_dets, *rows_shape, num_recalls))
  scores = np.zeros_like(precision)
  recall = np.zeros((num_max_dets, *rows_shape))
  # All images' detections of a category in score order; ties in image order, then rank.
  order = np.lexsort((rank, det_image, -score, det_category))
  min_count = _min_counts(params.recall_thresholds, num_regular_gt).transpose(1, 0, 2)[None]
  for m, max_det in enumerate(params.max_detections):
    selected = order[rank[order] < max_det]
    num_dets = len(selected)
    if num_dets == 0:
      continue  # precision, recall and scores stay 0
    category = det_category[selected]
    segment_start = np.searchsorted(category, np.arange(num_categories))
    segment_end = np.searchsorted(category, np.arange(num_categories), "right")
    selected_state = state[:, :, selected]  # [T, A, N]

    # True positives in row order; their number ``c`` (1-based) inside their row.
    tp_position = np.flatnonzero(selected_state == _TRUE_POSITIVE)
    tp_slice, tp_det = np.divmod(tp_position, num_dets)
    tp_row = tp_slice * num_categories + category[tp_det]
    row_tp_count = np.bincount(tp_row, minlength=np.prod(rows_shape))
    row_tp_start = np.cumsum(row_tp_count) - row_tp_count
    tp_number = np.arange(len(tp_row)) - row_tp_start[tp_row] + 1
    # fp at a true positive = detections of its row so far - ignored ones - true positives.
    ignored_position = np.flatnonzero(selected_state == _IGNORED)
    row_first_position = tp_slice * num_dets + segment_start[category[tp_det]]
    ignored_so_far = (np.searchsorted(ignored_position, tp_position, "right")
                      - np.searchsorted(ignored_position, row_first_position, "left"))
    tp = tp_number.astype(np.float64)
    fp = (tp_position - row_first_position + 1 - ignored_so_far - tp_number).astype(np.float64)
    pr = tp / (fp + tp + np.spacing(1))

    row_tp_count, row_tp_start = row_tp_count.reshape(rows_shape), row_tp_start.reshape(rows_shape)
    recall[m] = row_tp_count / np.maximum(num_regular_gt.T, 1)[None]
    # pycocotools reads precision at the first detection with recall >= r: the row's first
    # detection for r = 0, else its c-th true positive.
    row_tp_end = (row_tp_start + row_tp_count)[..., None]
    first_tp = np.minimum(row_tp_start[..., None] + np.maximum(min_count, 1) - 1, row_tp_end)
    # Envelope = max of pr over the true positives from ``first_tp`` to the row's end: block
    # maxima between consecutive thresholds (0 for empty blocks, which are all the blocks
    # of thresholds never reached), then a right-to-left running max.
    bounds = np.concatenate([first_tp, row_tp_end], axis=-1)  # [T, A, K, R + 1]
    block_max = np.maximum.reduceat(np.r_[pr, 0.0], bounds.ravel()).reshape(bounds.shape)
    block_max = np.where(np.diff(bounds, axis=-1) > 0, block_max[..., :-1], 0.0)
    precision[m] = np.maximum.accumulate(block_max[..., ::-1], axis=-1)[..., ::-1]
    found = np.where(min_count == 0, (segment_end > segment_start)[None, None, :, None],
                     min_count <= row_tp_count[..., None])
    det_at = np.where(min_count == 0, segment_start[None, None, :, None],
                      np.r_[tp_det, 0][np.minimum(first_tp, len(tp_det))])
    scores[m] = np.r_[score[selected], 0.0][np.where(found, det_at, num_dets)]  # 0 if not found
  # Settings without regular gt are -1 (pycocotools skips them).
  undefined = (num_regular_gt == 0).T[None, None, :, :]  # [1, 1, A, K]
  recall[np.broadcast_to(undefined, recall.shape)] = -1
  precision[np.broadcast_to(undefined[..., None], precision.shape)] = -1
  scores[np.broadcast_to(undefined[..., None], scores.shape)] = -1
  return (precision.transpose(1, 4, 3, 2, 0), recall.transpose(1, 3, 2, 0),
          scores.transpose(1, 4, 3, 2, 0))


def _mean_of_defined(values: np.ndarray) -> float:
  defined = values[values > -1]
  return float(np.mean(defined)) if len(defined) else -1.0


def _summarize(params: CocoParams, precision: np.ndarray, recall: np.ndarray, is_ap: bool,
               iou_threshold: float | None, area_label: str, max_det: int) -> float:
  """One ``COCOeval.summarize`` number (same selection and mean as pycocotools)."""
  a = params.area_labels.index(area_label)
  m = params.max_detections.index(max_det)
  values = precision[..., a, m] if is_ap else recall[..., a, m]
  if iou_threshold is not None:
    values = values[np.where(iou_threshold == params.iou_thresholds)[0]]
  return _mean_of_defined(values)


# --- streaming evaluator ----------------------------------------------------------------


class CocoEvaluator(Evaluator):
  """COCO evaluation of a model's padded, fixed-shape predictions, batch by batch.

  Host-side numpy: the trainer gathers every host's outputs (``process_allgather``) before
  ``add``, so each call sees the whole global batch. ``add`` turns valid rows into COCO
  ground truth and results (xyxy pixels -> xywh at this edge, classes -> category ids,
  masks -> RLE); ``result`` runs ``evaluate`` on them, so it returns exactly what
  ``evaluate`` (and pycocotools) gives on ``ground_truth_dict()`` / ``detection_dicts()``.

  Outputs (per global batch, B rows, D detection slots):
    ``boxes`` float [B, D, 4] xyxy pixels, ``scores`` float [B, D], ``classes`` int [B, D]
    (0-based), ``valid`` bool [B, D]; for ``segm`` ``masks`` [B, D, H, W] (binary, or
    probabilities thresholded at ``mask_threshold``) pasted at image size; for ``keypoints``
    ``keypoints`` [B, D, K, 3] ``(x, y, score)``.
  Batch (G ground-truth slots):
    ``boxes`` [B, G, 4] xyxy, ``labels`` [B, G] int (0-based), ``box_valid`` [B, G],
    ``example_mask`` [B] (False rows are padding and skipped); optional ``image_id`` [B]
    (default: running count), ``is_crowd`` [B, G], ``area`` [B, G] (default: the mask's
    pixel count for ``segm``, else the box area), ``masks`` [B, G, H, W] (``segm``),
    ``keypoints`` [B, G, K, 3] ``(x, y, visibility)`` (``keypoints``).

  Detections are written as ``bbox`` results for ``bbox`` and ``keypoints`` (so, as in
  ``COCO.loadRes``, a detection's area is its box area) and as mask-only results for
  ``segm`` (area = mask area).
  """

  def __init__(self, num_classes: int | None = None, iou_type: str = "bbox", *,
               class_names: Sequence[str] | None = None,
               category_ids: Sequence[int] | None = None,
               keypoint_sigmas: np.ndarray | None = None, mask_threshold: float = 0.5):
    """
    Args:
      num_classes: number of classes (or give ``class_names``).
      iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
      class_names: one name per class index (default ``class_<i>``).
      category_ids: COCO category id of each class index (default: the index itself).
      keypoint_sigmas: per-keypoint OKS sigmas (default: the 17 COCO person sigmas).
      mask_threshold: predicted mask probabilities ``>=`` this are foreground.
    """
    if iou_type not in IOU_TYPES:
      raise ValueError(f"Unknown iou_type {iou_type!r}; use one of {IOU_TYPES}.")
    if class_names is None:
      if num_classes is None:
        raise ValueError("CocoEvaluator needs num_classes or class_names.")
      class_names = [f"class_{i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
      raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names; give "
                       "one of them or make them agree.")
    self.class_names = tuple(class_names)
    self.category_ids = np.arange(len(self.class_names)) if category_ids is None else (
        np.asarray(category_ids))
    if len(self.category_ids) != len(self.class_names):
      raise ValueError(f"{len(self.category_ids)} category_ids for {len(self.class_names)} "
                       "classes; give one id per class.")
    self.iou_type = iou_type
    self.keypoint_sigmas = keypoint_sigmas
    self.mask_threshold = mask_threshold
    self._images: list[dict[str, Any]] = []
    self._annotations: list[dict[str, Any]] = []
    self._detections: list[dict[str, Any]] = []
    self._image_ids: set[int] = set()

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    batch = {k: np.asarray(v) for k, v in batch.items()}
    num_classes = len(self.class_names)
    for name, labels in (("batch['labels']", batch["labels"][batch["box_valid"].astype(bool)]),
                         ("outputs['classes']", outputs["classes"][outputs["valid"].astype(bool)])):
      if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} has class {labels.min() if labels.min() < 0 else labels.max()}"
                         f" outside [0, {num_classes}); the evaluator was built for "
                         f"{num_classes} classes.")
    for row in np.flatnonzero(batch["example_mask"]):
      self._add_image(row, outputs, batch)

  def _add_image(self, row: int, outputs: Mapping[str, np.ndarray],
                 batch: Mapping[str, np.ndarray]) -> None:
    image_id = int(batch["image_id"][row]) if "image_id" in batch else len(self._images)
    if image_id in self._image_ids:
      raise ValueError(f"Image id {image_id} was added twice; give each evaluated example a "
                       "distinct batch['image_id'] (or none) and mark padding rows with "
                       "example_mask = False.")
    self._image_ids.add(image_id)
    image = {"id": image_id}
    if "masks" in batch or "masks" in outputs:
      image["height"], image["width"] = (batch.get("masks", outputs.get("masks"))).shape[-2:]
    elif "image" in batch:
      image["height"], image["width"] = batch["image"].shape[1:3]
    self._images.append(image)

    gt = np.flatnonzero(batch["box_valid"][row])
    gt_boxes = _xyxy_to_xywh(batch["boxes"][row][gt])
    gt_geometry = self._geometry(batch, row, gt, threshold=0.5)
    if "area" in batch:
      area = batch["area"][row][gt].astype(np.float64)
    elif self.iou_type == "segm":
      area = _rle_area(gt_geometry)
    else:
      area = gt_boxes[:, 2] * gt_boxes[:, 3]
    is_crowd = batch["is_crowd"][row][gt] if "is_crowd" in batch else np.zeros(len(gt), bool)
    for i, g in enumerate(gt):
      annotation = {"id": len(self._annotations) + 1, "image_id": image_id,
                    "category_id": self.category_ids[batch["labels"][row][g]].item(),
                    "bbox": gt_boxes[i].tolist(), "area": float(area[i]),
                    "iscrowd": int(is_crowd[i])}
      if self.iou_type == "segm":
        annotation["segmentation"] = gt_geometry[i]
      elif self.iou_type == "keypoints":
        annotation["keypoints"] = gt_geometry[i].ravel().tolist()
        annotation["num_keypoints"] = int(np.count_nonzero(gt_geometry[i][:, 2] > 0))
      self._annotations.append(annotation)

    det = np.flatnonzero(outputs["valid"][row])
    det_boxes = _xyxy_to_xywh(outputs["boxes"][row][det])
    det_geometry = self._geometry(outputs, row, det, self.mask_threshold)
    for i, d in enumerate(det):
      detection = {"image_id": image_id,
                   "category_id": self.category_ids[outputs["classes"][row][d]].item(),
                   "score": float(outputs["scores"][row][d])}
      if self.iou_type == "segm":
        detection["segmentation"] = det_geometry[i]
      else:
        detection["bbox"] = det_boxes[i].tolist()
      if self.iou_type == "keypoints":
        detection["keypoints"] = det_geometry[i].ravel().tolist()
      self._detections.append(detection)

  def _geometry(self, arrays: Mapping[str, np.ndarray], row: int, index: np.ndarray,
                threshold: float) -> Any:
    """RLEs of the selected masks (segm), keypoints [n, K, 3] (keypoints), else None."""
    if self.iou_type == "bbox":
      return None
    key = "masks" if self.iou_type == "segm" else "keypoints"
    if key not in arrays:
      raise ValueError(f"iou_type {self.iou_type!r} needs {key!r} in both the model outputs "
                       "and the batch.")
    values = arrays[key][row][index]
    if self.iou_type == "keypoints":
      return values.astype(np.float64)
    if len(index) == 0:
      return []
    binary = values if values.dtype == bool else values >= threshold
    return mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))

  def ground_truth_dict(self) -> dict[str, Any]:
    """The COCO ground truth added so far (RLE ``counts`` are bytes, as pycocotools makes)."""
    categories = [{"id": i.item(), "name": name}
                  for i, name in zip(self.category_ids, self.class_names)]
    return {"images": list(self._images), "annotations": list(self._annotations),
            "categories": categories}

  def detection_dicts(self) -> list[dict[str, Any]]:
    """The COCO results added so far."""
    return list(self._detections)

  def detailed_result(self) -> CocoResult:
    """``evaluate_detailed`` on everything added (per-category AP, PR arrays)."""
    return evaluate_detailed(self.ground_truth_dict(), self.detection_dicts(), self.iou_type,
                             self.keypoint_sigmas)

  def result(self) -> dict[str, float]:
    return self.detailed_result().stats


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


class ReferenceCocoEvaluator(Evaluator):
  """Streaming COCO evaluation against a dataset's own ground truth (e.g. its COCO json).

  Unlike :class:`CocoEvaluator`, which rebuilds the ground truth from the batches' boxes in
  the model's input pixels, the ground truth here is the dataset's, in its image ids,
  category ids and original image coordinates; the detections are put into the same terms
  by ``to_results``. The evaluated images are the batches' real rows (``example_mask``).
  """

  def __init__(self, ground_truth: Callable[[Sequence[int]], Mapping[str, Any]],
               to_results: Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                                    list[dict[str, Any]]],
               iou_type: str = "bbox", keypoint_sigmas: np.ndarray | None = None):
    """
    Args:
      ground_truth: the batches' image ids -> the COCO ground-truth dict of those
        images (``evaluate``'s ``ground_truth``).
      to_results: ``(outputs, batch) -> COCO result dicts`` of the batch's real rows.
      iou_type: ``"bbox"``, ``"segm"`` or ``"keypoints"``.
      keypoint_sigmas: per-keypoint OKS sigmas (default: the 17 COCO person sigmas).
    """
    if iou_type not in IOU_TYPES:
      raise ValueError(f"Unknown iou_type {iou_type!r}; use one of {IOU_TYPES}.")
    self.iou_type = iou_type
    self.keypoint_sigmas = keypoint_sigmas
    self._ground_truth = ground_truth
    self._to_results = to_results
    self._image_ids: list[int] = []  # in the order added
    self._added: set[int] = set()
    self._detections: list[dict[str, Any]] = []

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    outputs = {k: np.asarray(v) for k, v in outputs.items()}
    batch = {k: np.asarray(v) for k, v in batch.items()}
    image_ids = batch["image_id"][batch["example_mask"].astype(bool)].tolist()
    if len(set(image_ids) | self._added) != len(image_ids) + len(self._added):
      repeated = sorted({i for i in image_ids if i in self._added or image_ids.count(i) > 1})
      raise ValueError(f"Image ids {repeated} were added twice; mark padding rows with "
                       "example_mask = False.")
    self._image_ids.extend(image_ids)
    self._added.update(image_ids)
    self._detections.extend(self._to_results(outputs, batch))

  def ground_truth_dict(self) -> dict[str, Any]:
    """The dataset's ground truth of the images added so far."""
    return dict(self._ground_truth(self._image_ids))

  def detection_dicts(self) -> list[dict[str, Any]]:
    """The COCO results added so far, in the ground truth's terms."""
    return list(self._detections)

  def detailed_result(self) -> CocoResult:
    return evaluate_detailed(self.ground_truth_dict(), self.detection_dicts(), self.iou_type,
                             self.keypoint_sigmas)

  def result(self) -> dict[str, float]:
    return self.detailed_result().stats
