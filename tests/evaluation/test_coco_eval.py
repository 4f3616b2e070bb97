"""COCO evaluation: parity with pycocotools' COCOeval on randomized sets that hit every rule."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxvision.evaluation import coco

IMAGE_SIZE = 160  # boxes up to ~150 px: small, medium and large objects all occur
# Category 13 has detections but no ground truth; 7 has neither.
CATEGORY_IDS = (5, 2, 9, 13, 7)
GT_CATEGORY_IDS = CATEGORY_IDS[:3]
DET_CATEGORY_IDS = CATEGORY_IDS[:4]
NUM_KEYPOINTS = 17


# --- reference -----------------------------------------------------------------------


def pycocotools_eval(ground_truth, detections, iou_type, keypoint_sigmas=None) -> COCOeval:
  """pycocotools' evaluate/accumulate/summarize on copies (it mutates its inputs), silenced."""
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(ground_truth)
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    if keypoint_sigmas is not None:
      evaluator.params.kpt_oks_sigmas = np.asarray(keypoint_sigmas)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator


def assert_matches_pycocotools(result: coco.CocoResult, reference: COCOeval) -> None:
  np.testing.assert_allclose(list(result.stats.values()), reference.stats, rtol=0, atol=1e-9)
  np.testing.assert_array_equal(result.precision, reference.eval["precision"])
  np.testing.assert_array_equal(result.recall, reference.eval["recall"])
  np.testing.assert_array_equal(result.scores, reference.eval["scores"])


# --- random data -----------------------------------------------------------------------


def random_box(rng, integer: bool) -> list[float]:
  """Log-uniform sizes; sometimes 32x32 or 96x96, whose area is exactly a range bound."""
  width, height = np.exp(rng.uniform(np.log(3), np.log(140), 2))
  if rng.random() < 0.25:
    width = height = float(rng.choice([32, 96]))
  box = np.array([rng.uniform(0, IMAGE_SIZE - width), rng.uniform(0, IMAGE_SIZE - height),
                  width, height])
  if integer:
    box = np.maximum(np.round(box), [0, 0, 1, 1])
  return box.tolist()


def jittered_box(rng, box, integer: bool) -> list[float]:
  """A detection near ``box``: an exact copy, an integer shift (exact IoU ties such as
  0.5), a float jitter, or a part of it (absorbed by a crowd box)."""
  x, y, w, h = box
  mode = rng.integers(4)
  if mode == 0:
    return list(box)
  if mode == 1:
    dx, dy = rng.integers(-3, 4, 2)
    return [x + dx, y + dy, w, h]
  if mode == 2 and not integer:
    return [x + rng.normal(0, 0.08 * w), y + rng.normal(0, 0.08 * h),
            w * np.exp(rng.normal(0, 0.1)), h * np.exp(rng.normal(0, 0.1))]
  fx, fy = rng.uniform(0, 0.5, 2)
  part = [x + fx * w, y + fy * h, w * rng.uniform(0.3, 1 - fx), h * rng.uniform(0.3, 1 - fy)]
  return np.round(part).tolist() if integer else part


def annotation_area(rng, box) -> float:
  """Usually the box area, often exactly an area-range bound, sometimes unrelated."""
  choice = rng.integers(6)
  if choice == 0:
    return float(rng.choice([32 ** 2, 96 ** 2]))
  if choice == 1:
    return float(rng.uniform(0, 2 * box[2] * box[3]))
  return float(box[2] * box[3])


def score(rng, tied: bool) -> float:
  return float(np.round(rng.random(), 1)) if tied else float(rng.random())


def ellipse_mask(box) -> np.ndarray:
  x, y, w, h = box
  rows, cols = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE] + 0.5
  inside = ((cols - x - w / 2) / max(w / 2, 0.5)) ** 2 + ((rows - y - h / 2) / max(h / 2, 0.5)) ** 2
  return (inside <= 1).astype(np.uint8)


def uncompressed_rle(mask: np.ndarray) -> dict:
  """COCO's uncompressed RLE (column-major run lengths starting with zeros)."""
  flat = mask.ravel(order="F")
  changes = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
  counts = np.diff(np.r_[0, changes]).tolist()
  return {"counts": counts, "size": list(mask.shape)}


def gt_segmentation(rng, box, binary_masks: bool):
  """Polygons (one or two parts), compressed RLE, uncompressed RLE or a binary mask."""
  x, y, w, h = box
  kind = rng.integers(4)
  if kind == 0:
    polygon = [x, y, x + w, y + h * rng.uniform(0, 0.5), x + w * rng.uniform(0.5, 1), y + h, x,
               y + h]
    if rng.random() < 0.3:
      return [polygon, [x, y, x + w / 3, y, x, y + h / 3]]
    return [polygon]
  mask = ellipse_mask(box)
  if kind == 1:
    return mask_utils.encode(np.asfortranarray(mask))
  if kind == 2 or not binary_masks:
    return uncompressed_rle(mask)
  return mask


def random_keypoints(rng, box, num_visible: int | None = None) -> list[float]:
  x, y, w, h = box
  points = np.stack([rng.uniform(x, x + w, NUM_KEYPOINTS), rng.uniform(y, y + h, NUM_KEYPOINTS),
                     rng.choice([0, 1, 2], NUM_KEYPOINTS, p=[0.3, 0.3, 0.4])], axis=1)
  if num_visible == 0:
    points[:, 2] = 0
    if rng.random() < 0.5:
      points[:, :2] = 0
  return points.ravel().tolist()


def jittered_keypoints(rng, keypoints, area: float) -> list[float]:
  points = np.asarray(keypoints, np.float64).reshape(-1, 3).copy()
  scale = np.sqrt(max(area, 1.0)) * rng.choice([0.02, 0.08, 0.3])
  points[:, :2] += rng.normal(0, scale, (len(points), 2))
  points[:, 2] = 1
  return points.ravel().tolist()


def random_dataset(seed: int, iou_type: str, integer_boxes: bool | None = None,
                   binary_masks: bool = True, det_has_bbox: bool | None = None,
                   zero_gt_id: bool | None = None, num_images: int = 8):
  """A random COCO ground truth and detections exercising every pycocotools rule.

  Image 0 has no ground truth, image 1 no detections; one group of image 2 gets more
  detections than the largest ``maxDets``; crowd boxes get many detections inside them;
  areas sit on the range bounds; scores tie; one category has detections but no ground
  truth, another has nothing; some annotations and detections refer to unknown images or
  categories (dropped); and sometimes one ground truth has id 0.
  """
  rng = np.random.default_rng(seed)
  integer = rng.random() < 0.5 if integer_boxes is None else integer_boxes
  tied = rng.random() < 0.5
  det_has_bbox = rng.random() < 0.5 if det_has_bbox is None else det_has_bbox
  zero_gt_id = rng.random() < 0.3 if zero_gt_id is None else zero_gt_id
  image_ids = rng.choice(1000, num_images, replace=False).tolist()  # not in sorted order
  images = [{"id": i, "height": IMAGE_SIZE, "width": IMAGE_SIZE} for i in image_ids]
  annotation_ids = rng.choice(np.arange(1, 100000), 10000, replace=False).tolist()
  if zero_gt_id:
    annotation_ids[rng.integers(5)] = 0
  annotations, detections = [], []
  max_dets = 20 if iou_type == "keypoints" else 100

  def add_detection(image_id, category_id, box, gt_annotation=None):
    detection = {"image_id": image_id, "category_id": category_id, "score": score(rng, tied)}
    if iou_type == "bbox" or det_has_bbox:
      detection["bbox"] = box
    if iou_type == "segm":
      source = ellipse_mask(box)
      detection["segmentation"] = mask_utils.encode(np.asfortranarray(source))
    if iou_type == "keypoints":
      detection["keypoints"] = (
          jittered_keypoints(rng, gt_annotation["keypoints"], gt_annotation["area"])
          if gt_annotation is not None else random_keypoints(rng, box))
    detections.append(detection)

  for index, image_id in enumerate(image_ids):
    num_gt = 0 if index == 0 else rng.integers(1, 7)
    for _ in range(num_gt):
      box = random_box(rng, integer)
      is_crowd = bool(rng.random() < 0.15)
      annotation = {"id": annotation_ids[len(annotations)], "image_id": image_id,
                    "category_id": int(rng.choice(GT_CATEGORY_IDS)), "bbox": box,
                    "area": annotation_area(rng, box), "iscrowd": int(is_crowd)}
      if iou_type == "segm":
        annotation["segmentation"] = gt_segmentation(rng, box, binary_masks)
      if iou_type == "keypoints":
        num_visible = 0 if rng.random() < 0.15 else None
        annotation["keypoints"] = random_keypoints(rng, box, num_visible)
        annotation["num_keypoints"] = int(np.count_nonzero(
            np.asarray(annotation["keypoints"])[2::3] > 0))
      annotations.append(annotation)
      if index == 1:
        continue
      copies = rng.integers(0, 4) + (rng.integers(3, 8) if is_crowd else 0)
      for _ in range(copies):
        category = (annotation["category_id"] if rng.random() < 0.85
                    else int(rng.choice(DET_CATEGORY_IDS)))
        add_detection(image_id, category, jittered_box(rng, box, integer), annotation)
    if index == 1:
      continue
    for _ in range(rng.integers(0, 6)):
      add_detection(image_id, int(rng.choice(DET_CATEGORY_IDS)), random_box(rng, integer))
  # More detections than maxDets in one group (image 2, the category of its first gt).
  flooded = next(a for a in annotations if a["image_id"] == image_ids[2])
  for _ in range(max_dets + 5):
    add_detection(image_ids[2], flooded["category_id"], jittered_box(rng, flooded["bbox"], integer),
                  flooded)
  # Dropped by both evaluators: unknown category (detection and annotation), unknown image.
  add_detection(image_ids[3], 999, random_box(rng, integer))
  stray = dict(annotations[-1], id=annotation_ids[len(annotations)], category_id=999)
  annotations.append(stray)
  annotations.append(dict(annotations[-2], id=annotation_ids[len(annotations)],
                          image_id=-1))
  order = rng.permutation(len(detections))
  detections = [detections[i] for i in order]
  categories = [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]
  return {"images": images, "annotations": annotations, "categories": categories}, detections


def binary_mask(segmentation) -> np.ndarray:
  """uint8 [H, W] of any COCO segmentation of an IMAGE_SIZE image."""
  if isinstance(segmentation, np.ndarray):
    return segmentation
  if isinstance(segmentation, list):
    segmentation = mask_utils.merge(mask_utils.frPyObjects(segmentation, IMAGE_SIZE, IMAGE_SIZE))
  elif isinstance(segmentation["counts"], list):
    segmentation = mask_utils.frPyObjects(segmentation, IMAGE_SIZE, IMAGE_SIZE)
  return mask_utils.decode(segmentation)


def for_pycocotools(ground_truth):
  """pycocotools takes no numpy binary masks: the same masks as compressed RLE."""
  ground_truth = copy.copy(ground_truth)
  ground_truth["annotations"] = [
      dict(a, segmentation=mask_utils.encode(np.asfortranarray(a["segmentation"])))
      if isinstance(a.get("segmentation"), np.ndarray) else a
      for a in ground_truth["annotations"]]
  return ground_truth


# --- parity ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_bbox_matches_pycocotools(seed):
  ground_truth, detections = random_dataset(seed, "bbox")
  result = coco.evaluate_detailed(ground_truth, detections, "bbox")
  assert_matches_pycocotools(result, pycocotools_eval(ground_truth, detections, "bbox"))


@pytest.mark.parametrize("seed", range(12))
def test_segm_matches_pycocotools(seed):
  ground_truth, detections = random_dataset(seed, "segm", num_images=6)
  result = coco.evaluate_detailed(ground_truth, detections, "segm")
  reference = pycocotools_eval(for_pycocotools(ground_truth), detections, "segm")
  assert_matches_pycocotools(result, reference)


@pytest.mark.parametrize("seed", range(20))
def test_keypoints_match_pycocotools(seed):
  ground_truth, detections = random_dataset(seed, "keypoints")
  result = coco.evaluate_detailed(ground_truth, detections, "keypoints")
  assert list(result.stats) == list(coco.KEYPOINT_SUMMARY_KEYS)
  assert_matches_pycocotools(result, pycocotools_eval(ground_truth, detections, "keypoints"))


def test_keypoints_with_custom_sigmas_match_pycocotools():
  ground_truth, detections = random_dataset(0, "keypoints")
  sigmas = np.linspace(0.02, 0.2, NUM_KEYPOINTS)
  result = coco.evaluate_detailed(ground_truth, detections, "keypoints", keypoint_sigmas=sigmas)
  assert_matches_pycocotools(result, pycocotools_eval(ground_truth, detections, "keypoints",
                                                      keypoint_sigmas=sigmas))
  with pytest.raises(ValueError, match="keypoint_sigmas"):
    coco.evaluate(ground_truth, detections, "keypoints", keypoint_sigmas=sigmas[:4])


def test_summary_keys_and_per_category_ap():
  ground_truth, detections = random_dataset(1, "bbox")
  result = coco.evaluate_detailed(ground_truth, detections, "bbox")
  assert list(result.stats) == list(coco.DETECTION_SUMMARY_KEYS)
  assert result.precision.shape == (10, 101, len(CATEGORY_IDS), 4, 3)
  assert result.category_ids.tolist() == sorted(CATEGORY_IDS)
  reference = pycocotools_eval(ground_truth, detections, "bbox").eval["precision"]
  for k, category_id in enumerate(sorted(CATEGORY_IDS)):
    values = reference[:, :, k, 0, -1]
    expected = values[values > -1].mean() if (values > -1).any() else -1
    assert result.per_category_ap[category_id] == pytest.approx(expected, abs=1e-12)
  # Categories without ground truth are -1, the others are real APs.
  assert result.per_category_ap[13] == -1 and result.per_category_ap[7] == -1
  assert all(0 <= result.per_category_ap[c] <= 1 for c in GT_CATEGORY_IDS)


def test_detections_with_box_and_mask_use_the_box_area_like_load_res():
  """A segm result with a ``bbox`` takes ``w * h`` as its area (COCO.loadRes). Here a false
  positive with a 500 px mask but a 40x40 box counts in the medium range only when its box
  is given: APm 0.5 with boxes, 1.0 without. Both ways equal pycocotools."""
  square = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  square[10:50, 10:50] = 1
  elsewhere = np.zeros_like(square)
  elsewhere[100:120, 100:125] = 1
  ground_truth = {
      "images": [{"id": 1, "height": IMAGE_SIZE, "width": IMAGE_SIZE}],
      "categories": [{"id": 1}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                       "area": 1600.0, "iscrowd": 0,
                       "segmentation": [[10, 10, 50, 10, 50, 50, 10, 50]]}]}
  detections = [
      {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [100, 100, 40, 40],
       "segmentation": mask_utils.encode(np.asfortranarray(elsewhere))},
      {"image_id": 1, "category_id": 1, "score": 0.8, "bbox": [10, 10, 40, 40],
       "segmentation": mask_utils.encode(np.asfortranarray(square))}]
  with_box = coco.evaluate_detailed(ground_truth, detections, "segm")
  assert_matches_pycocotools(with_box, pycocotools_eval(ground_truth, detections, "segm"))
  without_box = [{k: v for k, v in d.items() if k != "bbox"} for d in detections]
  mask_area = coco.evaluate_detailed(ground_truth, without_box, "segm")
  assert_matches_pycocotools(mask_area, pycocotools_eval(ground_truth, without_box, "segm"))
  assert with_box.stats["APm"] == pytest.approx(0.5, abs=0.01)
  assert mask_area.stats["APm"] == pytest.approx(1)


def test_gt_area_comes_from_the_annotation_with_inclusive_bounds():
  """One 40x40 box whose annotation says area 32**2: it is "small" (bounds inclusive) and
  also "medium"; a perfect detection (area 1600, medium only) is then ignored in small."""
  ground_truth = {
      "images": [{"id": 1}], "categories": [{"id": 1}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                       "area": 32.0 ** 2, "iscrowd": 0}]}
  detections = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.9}]
  stats = coco.evaluate(ground_truth, detections)
  # (precision 1 is 1 / (1 + eps) in pycocotools)
  assert stats["APm"] == pytest.approx(1) and stats["AP"] == pytest.approx(1)
  # In "small" too: the gt is in range there, so the match counts although the detection's
  # area (1600) is not.
  assert stats["APs"] == pytest.approx(1)
  assert stats["APl"] == -1  # no ground truth in "large"
  assert_matches_pycocotools(coco.evaluate_detailed(ground_truth, detections),
                             pycocotools_eval(ground_truth, detections, "bbox"))


def test_no_detections_gives_zero_and_no_ground_truth_gives_minus_one():
  ground_truth, detections = random_dataset(2, "bbox")
  # pycocotools cannot load an empty result list; a detection of an unknown category is
  # dropped, which is the same evaluation.
  reference = pycocotools_eval(ground_truth, [dict(detections[0], category_id=999)], "bbox")
  assert_matches_pycocotools(coco.evaluate_detailed(ground_truth, []), reference)
  assert coco.evaluate(ground_truth, [])["AP"] == 0
  empty = dict(ground_truth, annotations=[])
  assert set(coco.evaluate(empty, detections).values()) == {-1}


def test_inputs_are_not_modified():
  ground_truth, detections = random_dataset(4, "segm", num_images=4)
  ground_truth_copy, detections_copy = copy.deepcopy(ground_truth), copy.deepcopy(detections)
  coco.evaluate(ground_truth, detections, "segm")
  assert repr(ground_truth) == repr(ground_truth_copy)
  assert repr(detections) == repr(detections_copy)


def test_actionable_errors():
  ground_truth, detections = random_dataset(5, "bbox")
  with pytest.raises(ValueError, match="not in the ground truth's 'images'"):
    coco.evaluate(ground_truth, detections + [dict(detections[0], image_id=-5)])
  no_area = copy.deepcopy(ground_truth)
  del no_area["annotations"][3]["area"]
  with pytest.raises(ValueError, match="'area'"):
    coco.evaluate(no_area, detections)
  with pytest.raises(ValueError, match="iou_type"):
    coco.evaluate(ground_truth, detections, "boxes")
  duplicate = copy.deepcopy(ground_truth)
  duplicate["annotations"][1]["id"] = duplicate["annotations"][0]["id"]
  with pytest.raises(ValueError, match="not unique"):
    coco.evaluate(duplicate, detections)


# --- streaming evaluator ---------------------------------------------------------------


def padded_batches(ground_truth, detections, iou_type, batch_size=3, max_gt=12, max_dets=130):
  """The dataset as the model/data pipeline would give it: fixed shapes, xyxy float32
  boxes, 0-based classes, valid masks, and a padding row in the last batch."""
  class_of = {c: i for i, c in enumerate(CATEGORY_IDS)}
  images = ground_truth["images"]
  for start in range(0, len(images) + 1, batch_size):
    rows = images[start:start + batch_size]
    size = (batch_size,)
    batch = {"boxes": np.zeros(size + (max_gt, 4), np.float32),
             "labels": np.zeros(size + (max_gt,), np.int32),
             "box_valid": np.zeros(size + (max_gt,), bool),
             "is_crowd": np.zeros(size + (max_gt,), bool),
             "area": np.zeros(size + (max_gt,)),
             "image_id": np.zeros(size, np.int64),
             "example_mask": np.zeros(size, bool)}
    # float64 scores and keypoints: float32 rounding could create new score ties.
    outputs = {"boxes": np.zeros(size + (max_dets, 4), np.float32),
               "scores": np.zeros(size + (max_dets,)),
               "classes": np.zeros(size + (max_dets,), np.int32),
               "valid": np.zeros(size + (max_dets,), bool)}
    if iou_type == "segm":
      batch["masks"] = np.zeros(size + (max_gt, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
      outputs["masks"] = np.zeros(size + (max_dets, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    if iou_type == "keypoints":
      batch["keypoints"] = np.zeros(size + (max_gt, NUM_KEYPOINTS, 3))
      outputs["keypoints"] = np.zeros(size + (max_dets, NUM_KEYPOINTS, 3))
    for row, image in enumerate(rows):
      batch["image_id"][row] = image["id"]
      batch["example_mask"][row] = True
      gts = [a for a in ground_truth["annotations"]
             if a["image_id"] == image["id"] and a["category_id"] in class_of]
      for g, annotation in enumerate(gts):
        x, y, w, h = annotation["bbox"]
        batch["boxes"][row, g] = [x, y, x + w, y + h]
        batch["labels"][row, g] = class_of[annotation["category_id"]]
        batch["box_valid"][row, g] = True
        batch["is_crowd"][row, g] = annotation["iscrowd"]
        batch["area"][row, g] = annotation["area"]
        if iou_type == "segm":
          batch["masks"][row, g] = annotation["segmentation"]
        if iou_type == "keypoints":
          batch["keypoints"][row, g] = np.reshape(annotation["keypoints"], (-1, 3))
      dets = [d for d in detections
              if d["image_id"] == image["id"] and d["category_id"] in class_of]
      for d, detection in enumerate(dets):
        x, y, w, h = detection["bbox"]
        outputs["boxes"][row, d] = [x, y, x + w, y + h]
        outputs["scores"][row, d] = detection["score"]
        outputs["classes"][row, d] = class_of[detection["category_id"]]
        outputs["valid"][row, d] = True
        if iou_type == "segm":
          # Probabilities: exactly the threshold on the mask, just below it elsewhere.
          outputs["masks"][row, d] = np.where(mask_utils.decode(detection["segmentation"]),
                                              0.5, 0.49)
        if iou_type == "keypoints":
          outputs["keypoints"][row, d] = np.reshape(detection["keypoints"], (-1, 3))
    # A padding row full of garbage: must be skipped.
    if len(rows) < batch_size:
      batch["box_valid"][len(rows):] = True
      outputs["valid"][len(rows):] = True
      outputs["scores"][len(rows):] = 1.0
      outputs["boxes"][len(rows):] = [0, 0, 50, 50]
    yield outputs, batch


@pytest.mark.parametrize("iou_type", ["bbox", "segm", "keypoints"])
def test_streaming_evaluator_equals_evaluate_and_pycocotools(iou_type):
  ground_truth, detections = random_dataset(
      7, iou_type, integer_boxes=True, binary_masks=True, det_has_bbox=True, zero_gt_id=False,
      num_images=7 if iou_type != "segm" else 4)
  if iou_type == "segm":
    # The evaluator takes binary masks.
    ground_truth["annotations"] = [dict(a, segmentation=binary_mask(a["segmentation"]))
                                   for a in ground_truth["annotations"]]
  evaluator = coco.CocoEvaluator(class_names=[f"c{c}" for c in CATEGORY_IDS],
                                 iou_type=iou_type, category_ids=CATEGORY_IDS)
  for outputs, batch in padded_batches(ground_truth, detections, iou_type):
    evaluator.add(outputs, batch)
  streamed = evaluator.detailed_result()
  assert len(evaluator.ground_truth_dict()["images"]) == len(ground_truth["images"])
  # The evaluator writes segm results without boxes (area = mask area).
  expected_detections = detections if iou_type != "segm" else [
      {k: v for k, v in d.items() if k != "bbox"} for d in detections]
  # Integer boxes survive xywh -> xyxy (float32) -> xywh exactly, so the streamed set is
  # the original one.
  direct = coco.evaluate_detailed(ground_truth, [d for d in expected_detections
                                                 if d["category_id"] != 999], iou_type)
  assert streamed.stats == direct.stats
  np.testing.assert_array_equal(streamed.precision, direct.precision)
  reference = pycocotools_eval(for_pycocotools(evaluator.ground_truth_dict()),
                               evaluator.detection_dicts(), iou_type)
  assert_matches_pycocotools(streamed, reference)
  assert evaluator.result() == streamed.stats


def test_streaming_evaluator_errors():
  evaluator = coco.CocoEvaluator(num_classes=2)
  outputs = {"boxes": np.zeros((1, 1, 4)), "scores": np.ones((1, 1)),
             "classes": np.full((1, 1), 2), "valid": np.ones((1, 1), bool)}
  batch = {"boxes": np.zeros((1, 1, 4)), "labels": np.zeros((1, 1), int),
           "box_valid": np.ones((1, 1), bool), "example_mask": np.ones(1, bool),
           "image_id": np.array([4])}
  with pytest.raises(ValueError, match="outside \\[0, 2\\)"):
    evaluator.add(outputs, batch)
  evaluator.add(dict(outputs, classes=np.ones((1, 1), int)), batch)
  with pytest.raises(ValueError, match="added twice"):
    evaluator.add(dict(outputs, classes=np.ones((1, 1), int)), batch)
  with pytest.raises(ValueError, match="'masks'"):
    coco.CocoEvaluator(num_classes=2, iou_type="segm").add(
        dict(outputs, classes=np.ones((1, 1), int)), batch)
