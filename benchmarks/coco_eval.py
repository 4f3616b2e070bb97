"""COCO bbox evaluation speed: jaxvision vs pycocotools (vs faster-coco-eval if installed).

A synthetic COCO-sized validation slice: 500 images, about 3.7k ground-truth boxes and 35k
detections over 80 categories (detections are jittered ground truth, sometimes with the
wrong class, plus random boxes; scores are higher for the better detections). Each
evaluator runs end to end from the same Python dicts (index, load results, evaluate,
accumulate, summarize) in this process; the median of ``--repeats`` runs is reported and
the twelve numbers of every evaluator are checked against pycocotools.

  python benchmarks/coco_eval.py [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from typing import Any, Callable

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxvision.evaluation import coco

NUM_IMAGES = 500
NUM_CATEGORIES = 80
NUM_GT = 3700
DETECTIONS_PER_IMAGE = 70
IMAGE_SIZE = (480, 640)  # height, width


def synthetic_coco(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """A realistic ground-truth dict and detection list (see the module docstring)."""
  rng = np.random.default_rng(seed)
  height, width = IMAGE_SIZE
  images = [{"id": int(i), "height": height, "width": width}
            for i in rng.choice(10 * NUM_IMAGES, NUM_IMAGES, replace=False)]
  categories = [{"id": c, "name": f"class_{c}"} for c in range(1, NUM_CATEGORIES + 1)]
  annotations, detections = [], []

  def random_boxes(count):
    size = np.exp(rng.uniform(np.log(8), np.log(400), (count, 2)))
    corner = rng.uniform(0, 1, (count, 2)) * (np.array([width, height]) - size)
    return np.concatenate([corner, size], axis=1)

  for image, num_gt in zip(images, rng.multinomial(NUM_GT, [1 / NUM_IMAGES] * NUM_IMAGES)):
    gt_boxes = random_boxes(num_gt)
    gt_classes = rng.integers(1, NUM_CATEGORIES + 1, num_gt)
    for box, category in zip(gt_boxes, gt_classes):
      annotations.append({
          "id": len(annotations) + 1, "image_id": image["id"], "category_id": int(category),
          "bbox": box.tolist(), "area": float(box[2] * box[3] * rng.uniform(0.4, 0.9)),
          "iscrowd": int(rng.random() < 0.01)})
    # Jittered copies of the ground truth (4 per object on average), then random boxes.
    copies = rng.integers(0, num_gt, min(num_gt * 4, DETECTIONS_PER_IMAGE)) if num_gt else []
    for g in copies:
      x, y, w, h = gt_boxes[g]
      jitter = rng.normal(0, 0.12, 4)
      box = [x + jitter[0] * w, y + jitter[1] * h, w * np.exp(jitter[2]), h * np.exp(jitter[3])]
      category = gt_classes[g] if rng.random() < 0.9 else rng.integers(1, NUM_CATEGORIES + 1)
      detections.append({"image_id": image["id"], "category_id": int(category),
                         "bbox": [float(v) for v in box],
                         "score": float(np.clip(rng.beta(5, 2) - np.abs(jitter).sum() / 2, 0, 1))})
    for box in random_boxes(max(DETECTIONS_PER_IMAGE - len(copies), 0)):
      detections.append({"image_id": image["id"],
                         "category_id": int(rng.integers(1, NUM_CATEGORIES + 1)),
                         "bbox": box.tolist(), "score": float(rng.beta(1.5, 6))})
  ground_truth = {"images": images, "annotations": annotations, "categories": categories}
  return ground_truth, detections


def run_pycocotools(coco_class, cocoeval_class, ground_truth, detections) -> np.ndarray:
  """The standard index / loadRes / evaluate / accumulate / summarize sequence."""
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = coco_class()
    coco_gt.dataset = ground_truth
    coco_gt.createIndex()
    coco_dt = coco_gt.loadRes(detections)
    evaluator = cocoeval_class(coco_gt, coco_dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return np.asarray(evaluator.stats[:12])


def time_runs(evaluators: dict[str, Callable[[Any, Any], np.ndarray]], ground_truth,
              detections, repeats: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Median seconds per evaluator and its stats. Runs are interleaved (one of each per
  round) so that load changes on a shared machine hit every evaluator alike; each run gets
  fresh copies of the inputs (pycocotools mutates them)."""
  durations = {name: [] for name in evaluators}
  stats = {}
  for _ in range(repeats):
    for name, run in evaluators.items():
      gt_copy, det_copy = copy.deepcopy(ground_truth), copy.deepcopy(detections)
      start = time.perf_counter()
      stats[name] = run(gt_copy, det_copy)
      durations[name].append(time.perf_counter() - start)
  return {name: statistics.median(d) for name, d in durations.items()}, stats


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  ground_truth, detections = synthetic_coco(args.seed)
  print(f"{len(ground_truth['images'])} images, {len(ground_truth['annotations'])} gt boxes, "
        f"{len(detections)} detections, {len(ground_truth['categories'])} categories")

  evaluators = {
      "pycocotools": lambda g, d: run_pycocotools(COCO, COCOeval, g, d),
      "jaxvision": lambda g, d: np.array(list(coco.evaluate(g, d, "bbox").values())),
  }
  try:
    import faster_coco_eval  # pylint: disable=import-outside-toplevel
    evaluators["faster-coco-eval"] = lambda g, d: run_pycocotools(
        faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster, g, d)
  except ImportError:
    print("faster-coco-eval is not installed; skipping it.")

  seconds, stats = time_runs(evaluators, ground_truth, detections, args.repeats)
  reference = stats["pycocotools"]
  print("stats (pycocotools):", " ".join(f"{v:.4f}" for v in reference))
  for name in evaluators:
    difference = np.abs(stats[name] - reference).max()
    print(f"{name:>18}: {seconds[name] * 1e3:9.1f} ms (median of {args.repeats})  "
          f"{seconds['pycocotools'] / seconds[name]:6.1f}x vs pycocotools  "
          f"max |stat - pycocotools| = {difference:.1e}")
  if "faster-coco-eval" in seconds:
    print(f"jaxvision is {seconds['faster-coco-eval'] / seconds['jaxvision']:.1f}x faster than "
          "faster-coco-eval")


if __name__ == "__main__":
  main()
