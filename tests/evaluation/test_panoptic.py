"""Panoptic quality against a reference port of panopticapi, and the Panoptic FPN merge."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.evaluation import panoptic
from jaxvision.ops import panoptic as panoptic_lib

KEYS = panoptic.SUMMARY_KEYS


# --- reference: panopticapi's pq_compute_single_core + pq_average, dicts and loops --------


def reference_pq(images, categories):
  """Straight port of panopticapi's ``pq_compute`` on in-memory maps.

  ``images``: (gt_map, gt_segments_info, pred_map, pred_segments_info) tuples;
  ``categories``: panopticapi's list of ``{"id", "isthing"}``. A ground-truth ``area`` is
  taken from its segments_info when there, else counted (panopticapi's JSON holds it).
  """
  stat = collections.defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0})
  for gt_map, gt_info, pred_map, pred_info in images:
    gt_segms = {el["id"]: dict(el) for el in gt_info}
    pred_segms = {el["id"]: dict(el) for el in pred_info}
    for label, el in gt_segms.items():
      if "area" not in el:
        el["area"] = int(np.sum(gt_map == label))
    for label in set(pred_map.ravel().tolist()):
      if label == 0:
        continue
      pred_segms[label]["area"] = int(np.sum(pred_map == label))
    gt_pred_map = {}
    for gt_label, pred_label in zip(gt_map.ravel().tolist(), pred_map.ravel().tolist()):
      gt_pred_map[(gt_label, pred_label)] = gt_pred_map.get((gt_label, pred_label), 0) + 1

    gt_matched, pred_matched = set(), set()
    for (gt_label, pred_label), intersection in gt_pred_map.items():
      if gt_label not in gt_segms or pred_label not in pred_segms:
        continue
      if gt_segms[gt_label].get("iscrowd", 0) == 1:
        continue
      if gt_segms[gt_label]["category_id"] != pred_segms[pred_label]["category_id"]:
        continue
      union = (pred_segms[pred_label]["area"] + gt_segms[gt_label]["area"] - intersection
               - gt_pred_map.get((0, pred_label), 0))
      iou = intersection / union
      if iou > 0.5:
        stat[gt_segms[gt_label]["category_id"]]["tp"] += 1
        stat[gt_segms[gt_label]["category_id"]]["iou"] += iou
        gt_matched.add(gt_label)
        pred_matched.add(pred_label)

    crowd_labels_dict = {}
    for gt_label, gt_el in gt_segms.items():
      if gt_label in gt_matched:
        continue
      if gt_el.get("iscrowd", 0) == 1:
        crowd_labels_dict[gt_el["category_id"]] = gt_label
        continue
      stat[gt_el["category_id"]]["fn"] += 1

    for pred_label, pred_el in pred_segms.items():
      if pred_label in pred_matched:
        continue
      intersection = gt_pred_map.get((0, pred_label), 0)
      if pred_el["category_id"] in crowd_labels_dict:
        intersection += gt_pred_map.get(
            (crowd_labels_dict[pred_el["category_id"]], pred_label), 0)
      if intersection / pred_el["area"] > 0.5:
        continue
      stat[pred_el["category_id"]]["fp"] += 1

  result = {}
  for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
    pq = sq = rq = 0.0
    n = 0
    for category in categories:
      if isthing is not None and (category["isthing"] == 1) != isthing:
        continue
      s = stat[category["id"]]
      if s["tp"] + s["fp"] + s["fn"] == 0:
        continue
      n += 1
      pq += s["iou"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
      sq += s["iou"] / s["tp"] if s["tp"] != 0 else 0
      rq += s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
    for key, total in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
      result[key + suffix] = total / n if n else float("nan")
  return result


def assert_equal_to_reference(gt, pred, categories):
  ours = panoptic.evaluate(gt, pred, categories)
  expected = reference_pq([(g["segment_map"], g["segments_info"], p["segment_map"],
                            p["segments_info"]) for g, p in zip(gt, pred)], categories)
  assert set(ours) == set(KEYS)
  for key in KEYS:
    if np.isnan(expected[key]):
      assert np.isnan(ours[key]), key
    else:
      assert ours[key] == pytest.approx(expected[key], abs=1e-12, rel=0), key
  return ours


def runs(*pieces):
  """A [1, N] id map from (id, length) runs."""
  return np.concatenate([np.full(length, i, np.int32) for i, length in pieces])[None]


def image(segment_map, *segments):
  """segments: (id, category, iscrowd)."""
  return {"segment_map": segment_map,
          "segments_info": [{"id": i, "category_id": c, "iscrowd": crowd}
                            for i, c, crowd in segments]}


THING_STUFF = [{"id": 1, "isthing": 1, "name": "a"}, {"id": 2, "isthing": 1, "name": "b"},
               {"id": 7, "isthing": 0, "name": "sky"}]


# --- hand-made cases ----------------------------------------------------------------------


def test_void_pixels_of_the_prediction_leave_the_union():
  # gt 1 (10 px); pred 1: 6 px on it + 10 on void -> union 16 + 10 - 6 - 10 = 10, IoU 0.6.
  # pred 2 (4 px on gt 1, IoU 0.4) is a false positive.
  gt = [image(runs((1, 10), (0, 10)), (1, 1, 0))]
  pred = [image(runs((1, 6), (2, 4), (1, 10)), (1, 1, 0), (2, 1, 0))]
  result = assert_equal_to_reference(gt, pred, THING_STUFF)
  # Only category 1 counts: tp 1 (IoU 0.6), fp 1.
  assert result["PQ"] == pytest.approx(0.6 / 1.5, abs=1e-12)
  assert result["SQ"] == pytest.approx(0.6, abs=1e-12)
  assert result["RQ"] == pytest.approx(1 / 1.5, abs=1e-12)
  assert np.isnan(result["PQ_st"])  # no stuff category was counted


@pytest.mark.parametrize("inside,outside,matched", [(6, 1, True), (5, 0, False), (6, 2, False),
                                                    (1, 0, False)])
def test_iou_just_above_and_at_one_half(inside, outside, matched):
  # gt 1: 10 px; pred 1 covers `inside` of them and `outside` px of gt 2 (stuff).
  # IoU = inside / (10 + outside): 6/11 > 0.5 matches, 5/10 and 6/12 = 0.5 do not.
  gt = [image(runs((1, 10), (2, 10)), (1, 1, 0), (2, 7, 0))]
  pred_map = runs((1, inside), (0, 10 - inside), (1, outside), (3, 10 - outside))
  pred = [image(pred_map, (1, 1, 0), (3, 7, 0))]
  result = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  things = result.per_category[1]
  assert (things["tp"], things["fp"], things["fn"]) == ((1, 0, 0) if matched else (0, 1, 1))
  if matched:
    assert things["iou"] == inside / (10 + outside)
  assert_equal_to_reference(gt, pred, THING_STUFF)


def test_crowd_is_never_a_false_negative_and_absorbs_predictions_of_its_category():
  # gt: 1 crowd (cat 1, 8 px), 2 crowd (cat 2, 8 px), void 4 px.
  gt = [image(runs((1, 8), (2, 8), (0, 4)), (1, 1, 1), (2, 2, 1))]
  # pred 1, cat 1: 3 px crowd 1 + 3 px void... laid out as runs over the gt above:
  # gt:   1 1 1 1 1 1 1 1 | 2 2 2 2 2 2 2 2 | 0 0 0 0
  # pred: 0 0 0 0 0 3 3 3 | 3 3 3 3 3 4 4 4 | 4 4 4 4
  pred = [image(runs((0, 5), (3, 8), (4, 7)), (3, 1, 0), (4, 2, 0))]
  # pred 3 (cat 1, 8 px): 3 on crowd 1, 5 on crowd 2 (other category): 3/8 -> false positive.
  # pred 4 (cat 2, 7 px): 3 on crowd 2 + 4 void = 7/7 -> ignored.
  result = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  assert (result.per_category[1]["fp"], result.per_category[1]["fn"]) == (1, 0)
  assert (result.per_category[2]["fp"], result.per_category[2]["fn"]) == (0, 0)
  assert_equal_to_reference(gt, pred, THING_STUFF)


def test_crowd_pixels_stay_in_the_union():
  # gt 1 (cat 1, 10 px), crowd 2 (cat 1, 2 px). pred: 6 px on gt 1 + 2 on the crowd:
  # union = 8 + 10 - 6 = 12, IoU 0.5: no match; 2/8 on crowd: a false positive.
  gt = [image(runs((1, 10), (2, 2)), (1, 1, 0), (2, 1, 1))]
  pred = [image(runs((0, 4), (5, 8)), (5, 1, 0))]
  result = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  assert (result.per_category[1]["tp"], result.per_category[1]["fp"],
          result.per_category[1]["fn"]) == (0, 1, 1)
  assert_equal_to_reference(gt, pred, THING_STUFF)


@pytest.mark.parametrize("void", [5, 6])
def test_void_heavy_prediction(void):
  # pred (10 px): `void` px on void, the rest on stuff 2: > half on void is not a FP.
  gt = [image(runs((0, void), (2, 20)), (2, 7, 0))]
  pred = [image(runs((1, 10), (3, 10 + void)), (1, 1, 0), (3, 7, 0))]
  result = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  assert result.per_category[1]["fp"] == (0 if void > 5 else 1)
  assert_equal_to_reference(gt, pred, THING_STUFF)


def test_only_the_last_crowd_segment_of_a_category_forgives():
  # Two crowd segments of category 1; panopticapi keeps the LAST one per category.
  gt_map = runs((1, 4), (2, 4))
  pred_map = runs((3, 4), (4, 4))
  gt = [image(gt_map, (1, 1, 1), (2, 1, 1))]
  pred = [image(pred_map, (3, 1, 0), (4, 1, 0))]
  # pred 3 lies on crowd 1 (not the last): false positive; pred 4 on crowd 2: ignored.
  assert panoptic.evaluate_detailed(gt, pred, THING_STUFF).per_category[1]["fp"] == 1
  assert_equal_to_reference(gt, pred, THING_STUFF)
  # Listing them the other way round flips which prediction is forgiven, not the count.
  gt_swapped = [image(gt_map, (2, 1, 1), (1, 1, 1))]
  assert panoptic.evaluate_detailed(gt_swapped, pred, THING_STUFF).per_category[1]["fp"] == 1


def test_tiny_segments_unmatched_ground_truth_and_category_means():
  # 1-px segments match exactly; gt 3 (cat 2) has no prediction: fn; stuff perfect.
  gt = [image(runs((1, 1), (3, 2), (4, 6)), (1, 1, 0), (3, 2, 0), (4, 7, 0)),
        image(runs((5, 1), (0, 1)), (5, 1, 0))]
  pred = [image(runs((9, 1), (0, 2), (8, 6)), (9, 1, 0), (8, 7, 0)),
          image(runs((0, 2)))]
  result = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  # cat 1: tp 1 (IoU 1), fn 1 -> PQ = 1 / 1.5; cat 2: fn 1 -> 0; stuff 7: 1.
  assert result.per_category[1] == pytest.approx(
      {"pq": 1 / 1.5, "sq": 1.0, "rq": 1 / 1.5, "tp": 1, "fp": 0, "fn": 1, "iou": 1.0})
  assert result.stats["PQ_th"] == pytest.approx((1 / 1.5 + 0) / 2, abs=1e-12)
  assert result.stats["PQ"] == pytest.approx((1 / 1.5 + 0 + 1) / 3, abs=1e-12)
  assert result.counts == {"n": 3, "n_th": 2, "n_st": 1}
  assert_equal_to_reference(gt, pred, THING_STUFF)


def test_ground_truth_area_field_is_used_as_panopticapi_reads_it():
  gt_map = runs((1, 10), (0, 2))
  pred = [image(runs((1, 6), (0, 6)), (1, 1, 0))]
  counted = panoptic.evaluate_detailed([image(gt_map, (1, 1, 0))], pred, THING_STUFF)
  assert counted.per_category[1]["iou"] == 0.6
  gt = [{"segment_map": gt_map,
         "segments_info": [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 11}]}]
  listed = panoptic.evaluate_detailed(gt, pred, THING_STUFF)
  assert listed.per_category[1]["iou"] == 6 / 11
  assert_equal_to_reference(gt, pred, THING_STUFF)


def test_input_forms_rgb_maps_mappings_and_category_mappings():
  rng = np.random.default_rng(3)
  gt_list, pred_list, categories = random_case(rng)
  expected = panoptic.evaluate(gt_list, pred_list, categories)
  as_rgb = [dict(p, segment_map=np.stack([p["segment_map"] % 256, p["segment_map"] // 256,
                                          np.zeros_like(p["segment_map"])], -1).astype(np.uint8))
            for p in pred_list]
  keyed_gt = {f"im{i}": g for i, g in enumerate(gt_list)}
  keyed_pred = {f"im{i}": p for i, p in reversed(list(enumerate(as_rgb)))}
  keyed_pred["extra"] = pred_list[0]  # predictions without ground truth are ignored
  category_map = {c["id"]: bool(c["isthing"]) for c in categories}
  got = panoptic.evaluate(keyed_gt, keyed_pred, category_map)
  np.testing.assert_equal([got[k] for k in KEYS], [expected[k] for k in KEYS])


def test_bad_inputs_raise():
  gt = [image(runs((1, 4), (0, 2)), (1, 1, 0))]
  cases = [
      ([image(runs((1, 4), (2, 2)), (1, 1, 0))], "not in its segments_info"),
      ([image(runs((1, 6)), (1, 1, 0), (2, 1, 0))], "not in the map"),
      ([image(runs((1, 6)), (1, 5, 0))], "unknown category_id"),
      ([image(runs((1, 7)), (1, 1, 0))], "ground-truth size"),
      ([image(runs((1, 6)), (1, 1, 0), (1, 2, 0))], "distinct and non-zero"),
      ([image(runs((1, 6)), (1, 1, 0))] * 2, "give one prediction per image"),
  ]
  for pred, message in cases:
    with pytest.raises(ValueError, match=message):
      panoptic.evaluate(gt, pred, THING_STUFF)
  with pytest.raises(ValueError, match="not in its segments_info"):
    panoptic.evaluate([image(runs((1, 4), (3, 2)), (1, 1, 0))],
                      [image(runs((1, 6)), (1, 1, 0))], THING_STUFF)
  with pytest.raises(ValueError, match="ground-truth segment 1 has unknown category_id"):
    panoptic.evaluate([image(runs((1, 6)), (1, 3, 0))], [image(runs((0, 6)))], THING_STUFF)
  with pytest.raises(ValueError, match="No prediction"):
    panoptic.evaluate({"a": gt[0]}, {"b": gt[0]}, THING_STUFF)


# --- randomized cases ----------------------------------------------------------------------


def paint(rng, shape, ids, background):
  segment_map = np.full(shape, background, np.int64)
  for segment_id in ids:
    y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    y1, x1 = y0 + rng.integers(1, shape[0] + 1), x0 + rng.integers(1, shape[1] + 1)
    segment_map[y0:y1, x0:x1] = segment_id
  return segment_map


def random_case(rng):
  num_categories = int(rng.integers(1, 6))
  category_ids = rng.permutation(40)[:num_categories] + 1
  categories = [{"id": int(c), "isthing": int(rng.integers(0, 2))} for c in category_ids]
  gt, pred = [], []
  for _ in range(int(rng.integers(1, 5))):
    shape = tuple(rng.integers(3, 14, 2))
    gt_ids = rng.permutation(30)[:rng.integers(0, 8)] + 1
    gt_map = paint(rng, shape, gt_ids, rng.choice([0] + list(gt_ids[:1])))
    gt_map[rng.random(shape) < rng.choice([0, 0.05, 0.3])] = 0
    gt_category = {int(i): int(rng.choice(category_ids)) for i in gt_ids}
    gt_info = []
    for i in rng.permutation(np.unique(gt_map[gt_map > 0])).tolist():
      segment = {"id": i, "category_id": gt_category[i], "iscrowd": int(rng.random() < 0.25)}
      if rng.random() < 0.1:
        segment["area"] = int(np.sum(gt_map == i) + rng.integers(0, 3))
      gt_info.append(segment)
    if len(gt_ids) and rng.random() < 0.2:  # listed but absent: a false negative
      gt_info.append({"id": 99, "category_id": int(rng.choice(category_ids)), "iscrowd": 0})
    # Predictions: the ground truth relabelled (some to void), then repainted in places.
    relabel = {0: 0}
    relabel.update({int(i): int(j) for i, j in zip(gt_ids, rng.permutation(60)[:len(gt_ids)]
                                                   + 1)})
    pred_map = np.vectorize(relabel.get)(gt_map) if gt_map.size else gt_map
    pred_map = np.where(rng.random(shape) < rng.choice([0, 0.1]), 0, pred_map)
    extra = rng.permutation(np.arange(100, 110))[:rng.integers(0, 4)]
    repainted = paint(rng, shape, extra, -1)
    pred_map = np.where(repainted >= 0, repainted, pred_map)
    source = {v: k for k, v in relabel.items()}
    pred_info = []
    for i in np.unique(pred_map[pred_map > 0]).tolist():
      same = i in source and source[i] in gt_category and rng.random() < 0.8
      category = gt_category[source[i]] if same else int(rng.choice(category_ids))
      pred_info.append({"id": i, "category_id": category})
    gt.append({"segment_map": gt_map, "segments_info": gt_info})
    pred.append({"segment_map": pred_map, "segments_info": pred_info})
  return gt, pred, categories


def test_random_cases_equal_the_reference():
  matched_any = 0
  for seed in range(300):
    rng = np.random.default_rng(seed)
    gt, pred, categories = random_case(rng)
    result = assert_equal_to_reference(gt, pred, categories)
    matched_any += result["SQ"] > 0
  assert matched_any > 100  # the cases exercise matches, not only misses


# --- the merge -----------------------------------------------------------------------------


def box_mask(shape, y0, y1, x0, x1, value=1.0):
  mask = np.zeros(shape, np.float32)
  mask[y0:y1, x0:x1] = value
  return mask


def merge(masks, scores, valid=None, semantic=None, **kwargs):
  masks = np.asarray(masks, np.float32)
  kwargs.setdefault("stuff_area_threshold", 1)
  valid = np.ones(len(masks), bool) if valid is None else np.asarray(valid)
  semantic = np.zeros(masks.shape[1:], np.int32) if semantic is None else semantic
  return np.asarray(panoptic_lib.combine_panoptic(
      jnp.asarray(masks), jnp.asarray(scores, jnp.float32), jnp.zeros(len(masks), jnp.int32),
      jnp.asarray(valid), jnp.asarray(semantic), **kwargs))


def test_merge_takes_instances_in_score_order_and_drops_heavy_overlaps():
  shape = (6, 8)
  low = box_mask(shape, 0, 4, 0, 4)       # 16 px
  high = box_mask(shape, 0, 4, 2, 6)      # 16 px, 8 shared with `low`: overlap 0.5, kept
  heavy = box_mask(shape, 0, 3, 1, 5)     # 12 px, 12 taken: overlap 1 > 0.5, dropped
  panoptic_map = merge([low, high, heavy], [0.6, 0.9, 0.55])
  expected = np.zeros(shape, np.int32)
  expected[0:4, 0:2] = 1                  # `low` keeps only its unassigned pixels
  expected[0:4, 2:6] = 2
  np.testing.assert_array_equal(panoptic_map, expected)
  # A stricter overlap threshold drops `low` too.
  strict = merge([low, high, heavy], [0.6, 0.9, 0.55], overlap_threshold=0.49)
  np.testing.assert_array_equal(strict, np.where(expected == 1, 0, expected))


def test_merge_thresholds_and_padding():
  shape = (4, 4)
  masks = [box_mask(shape, 0, 2, 0, 2, 0.7), box_mask(shape, 2, 4, 2, 4, 0.4),
           box_mask(shape, 0, 2, 2, 4), box_mask(shape, 2, 4, 0, 2)]
  # slot 1's mask is below mask_threshold (empty), slot 2 scores under the threshold,
  # slot 3 is padding.
  panoptic_map = merge(masks, [0.9, 0.9, 0.3, 0.9], valid=[True, True, True, False])
  np.testing.assert_array_equal(panoptic_map, np.where(masks[0] > 0, 1, 0))
  bool_masks = np.asarray(masks) >= 0.4
  lowered = np.asarray(panoptic_lib.combine_panoptic(
      jnp.asarray(bool_masks), jnp.array([0.9, 0.9, 0.3, 0.9]), jnp.zeros(4, jnp.int32),
      jnp.array([True, True, True, False]), jnp.zeros(shape, jnp.int32),
      stuff_area_threshold=1))
  np.testing.assert_array_equal(lowered, np.select([masks[0] > 0, masks[1] > 0], [1, 2], 0))


def test_merge_stuff_area_threshold_and_thing_pixels():
  semantic = np.array([[1, 1, 1, 2, 2],
                       [1, 1, 1, 2, 0],
                       [3, 3, 0, 0, 0]], np.int32)
  instance = box_mask(semantic.shape, 0, 1, 0, 2)  # takes 2 px of stuff 1
  panoptic_map = merge([instance], [0.9], semantic=semantic, stuff_area_threshold=3)
  # D = 1: stuff s -> 1 + s. Stuff 1 keeps 4 unassigned px (>= 3), stuff 2 has 3 (kept),
  # stuff 3 has 2 (dropped); semantic 0 ("thing") pixels without an instance stay void.
  expected = np.array([[1, 1, 2, 3, 3],
                       [2, 2, 2, 3, 0],
                       [0, 0, 0, 0, 0]], np.int32)
  np.testing.assert_array_equal(panoptic_map, expected)
  four = merge([instance], [0.9], semantic=semantic, stuff_area_threshold=4)
  np.testing.assert_array_equal(four, np.where(expected == 3, 0, expected))


def reference_merge(masks, scores, valid, semantic, stuff_area_threshold):
  """detectron2's combine_semantic_and_instance_outputs, with the contract's ids."""
  panoptic_map = np.zeros(semantic.shape, np.int32)
  for slot in np.argsort(-scores, kind="stable"):
    if not valid[slot] or scores[slot] < 0.5:
      continue
    mask = masks[slot] >= 0.5
    area = mask.sum()
    if area == 0:
      continue
    intersect = (mask & (panoptic_map > 0)).sum()
    if intersect / area > 0.5:
      continue
    panoptic_map[mask & (panoptic_map == 0)] = slot + 1
  for label in np.unique(semantic):
    if label == 0:
      continue
    mask = (semantic == label) & (panoptic_map == 0)
    if mask.sum() >= stuff_area_threshold:
      panoptic_map[mask] = len(masks) + label
  return panoptic_map


def test_merge_jits_vmaps_and_equals_detectron2_on_random_cases():
  rng = np.random.default_rng(0)
  batch, detections, shape = 6, 5, (12, 10)
  masks = rng.random((batch, detections) + shape).astype(np.float32) ** 3
  for b in range(batch):
    for d in range(detections):
      masks[b, d] = np.maximum(masks[b, d], box_mask(shape, *sorted(rng.integers(0, 12, 2)),
                                                     *sorted(rng.integers(0, 10, 2))))
  scores = rng.choice([0.3, 0.6, 0.8, 0.9], (batch, detections)).astype(np.float32)
  valid = rng.random((batch, detections)) < 0.8
  semantic = np.stack([paint(rng, shape, [1, 2, 3, 0, 4], 0) for _ in range(batch)]
                      ).astype(np.int32)
  merged = jax.jit(jax.vmap(lambda m, s, c, v, sem: panoptic_lib.combine_panoptic(
      m, s, c, v, sem, stuff_area_threshold=6)))(
          masks, scores, np.zeros((batch, detections), np.int32), valid, semantic)
  assert merged.dtype == jnp.int32 and merged.shape == (batch,) + shape
  for b in range(batch):
    np.testing.assert_array_equal(
        merged[b], reference_merge(masks[b], scores[b], valid[b], semantic[b], 6))


def test_segments_info():
  panoptic_map = np.array([[0, 1, 3], [5, 6, 6]])
  info = panoptic_lib.segments_info(panoptic_map, np.array([2, 0, 1, 4]), 4, 5)
  assert info == [{"id": 1, "category_id": 2, "isthing": True},
                  {"id": 3, "category_id": 1, "isthing": True},
                  {"id": 5, "category_id": 5, "isthing": False},
                  {"id": 6, "category_id": 6, "isthing": False}]


# --- the streaming evaluator ---------------------------------------------------------------


def shapes_batch():
  """2 rows (row 1 padding), 3 slots (2 valid), C = 2 things, S = 2 stuff, 10 x 10."""
  masks = np.zeros((2, 3, 10, 10), np.uint8)
  masks[0, 0, 0:4, 0:4] = 1          # class 0, 16 px
  masks[0, 1, 6:10, 6:10] = 1        # class 1, 16 px
  masks[0, 2, 0:2, 8:10] = 1         # an invalid slot: ignored
  semantic = np.zeros((2, 10, 10), np.int32)
  semantic[0, :, :5] = 3             # stuff 1 (C + 1) on the left
  semantic[0, :, 5:] = 4             # stuff 2 on the right
  semantic[0][masks[0, 0] > 0] = 1
  semantic[0][masks[0, 1] > 0] = 2
  semantic[1] = 255
  return {"masks": masks, "labels": np.array([[0, 1, 1], [0, 0, 0]]),
          "box_valid": np.array([[True, True, False], [False] * 3]),
          "is_crowd": np.zeros((2, 3), bool), "semantic": semantic,
          "example_mask": np.array([True, False])}


def predict(masks, classes, scores, semantic):
  """The model side: combine_panoptic vmapped, semantic head classes (0 things, s stuff)."""
  # Padding (255) pixels get some stuff class, as a model would predict there.
  head_semantic = np.select([semantic == 255, semantic > 2], [1, semantic - 2], 0
                            ).astype(np.int32)
  merged = jax.vmap(lambda m, s, c, sem: panoptic_lib.combine_panoptic(
      m, s, c, jnp.ones(len(s), bool), sem, stuff_area_threshold=4))(
          masks.astype(np.float32), scores, classes, head_semantic)
  return {"panoptic": np.asarray(merged), "classes": classes}


def test_evaluator_perfect_prediction_scores_one():
  batch = shapes_batch()
  batch["semantic"][0, 9, :] = 255   # an ignored (padding) row, void in the ground truth
  outputs = predict(batch["masks"][:, :2], np.array([[0, 1], [0, 0]], np.int32),
                    np.full((2, 2), 0.9, np.float32), batch["semantic"])
  evaluator = panoptic.PanopticEvaluator(("square", "circle"), ("grass", "sky"))
  evaluator.add(outputs, batch)
  assert evaluator.result() == {key: 1.0 for key in KEYS}


def test_evaluator_hand_computed_case():
  batch = shapes_batch()
  pred_masks = np.zeros((2, 2, 10, 10), np.uint8)
  pred_masks[0, 0, 0:4, 0:3] = 1     # class 0 on object 0: IoU 12/16 (col 3 left void)
  pred_masks[0, 1, 6:10, 6:10] = 1   # wrong class (0) on object 1: FP class 0, FN class 1
  outputs = predict(pred_masks, np.array([[0, 0], [0, 0]], np.int32),
                    np.full((2, 2), 0.9, np.float32), batch["semantic"])
  evaluator = panoptic.PanopticEvaluator(("square", "circle"), ("grass", "sky"))
  evaluator.add(outputs, batch)
  result = evaluator.result()
  # class 0: tp 1 (0.75), fp 1 -> PQ 0.5, SQ 0.75, RQ 2/3; class 1: fn -> 0; stuff: 1.
  expected = {"PQ": (0.5 + 0 + 1 + 1) / 4, "SQ": (0.75 + 0 + 1 + 1) / 4,
              "RQ": (2 / 3 + 0 + 1 + 1) / 4, "PQ_th": 0.25, "SQ_th": 0.375, "RQ_th": 1 / 3,
              "PQ_st": 1.0, "SQ_st": 1.0, "RQ_st": 1.0}
  assert result == pytest.approx(expected, abs=1e-12)


def test_evaluator_ground_truth_from_a_batch():
  batch = shapes_batch()
  batch["masks"][0, 1, 3, 3] = 1     # a pixel claimed by two objects: void
  batch["is_crowd"][0, 1] = True
  segment_map, segments = panoptic.PanopticEvaluator(
      ("square", "circle"), ("grass", "sky")).ground_truth(batch, 0)
  assert segments == [{"id": 1, "category_id": 0, "iscrowd": 0},
                      {"id": 2, "category_id": 1, "iscrowd": 1},
                      {"id": 4, "category_id": 2, "iscrowd": 0},   # G + s, category C + s - 1
                      {"id": 5, "category_id": 3, "iscrowd": 0}]
  assert segment_map[3, 3] == 0 and segment_map[0, 0] == 1 and segment_map[0, 9] == 5
  assert np.sum(segment_map == 2) == 16 and np.sum(segment_map == 1) == 15
