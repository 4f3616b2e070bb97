"""PR-curve and reliability-diagram PNGs (jaxvision.viz) from evaluation results."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxvision import viz
from jaxvision.evaluation import calibration, coco


def evaluated():
  rng = np.random.default_rng(0)
  images = [{"id": i} for i in range(4)]
  annotations, detections = [], []
  for image in images:
    for category in (1, 2, 3):
      x, y = rng.uniform(0, 100, 2)
      annotations.append({"id": len(annotations) + 1, "image_id": image["id"],
                          "category_id": category, "bbox": [x, y, 30, 30], "area": 900.0})
      for shift in rng.normal(0, 8 * category, (3, 2)):
        detections.append({"image_id": image["id"], "category_id": category,
                           "bbox": [x + shift[0], y + shift[1], 30, 30],
                           "score": float(rng.random())})
  categories = [{"id": c} for c in (1, 2, 3, 4)]  # 4: no ground truth
  return coco.evaluate_detailed({"images": images, "annotations": annotations,
                                 "categories": categories}, detections)


def test_pr_curves_png(tmp_path):
  result = evaluated()
  names = ["easy", "medium", "hard", "absent"]
  from_result = viz.plot_pr_curves(result, names, str(tmp_path / "a" / "pr.png"))
  from_array = viz.plot_pr_curves(result.precision, names, str(tmp_path / "pr_array.png"))
  at_75 = viz.plot_pr_curves(result, names, str(tmp_path / "pr75.png"), iou_threshold=0.75)
  with Image.open(from_result) as image:
    assert image.format == "PNG" and image.width > 200
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10
  # A raw precision array is read with pycocotools' default thresholds, like the result.
  assert pathlib.Path(from_result).read_bytes() == pathlib.Path(from_array).read_bytes()
  assert pathlib.Path(from_result).read_bytes() != pathlib.Path(at_75).read_bytes()
  with pytest.raises(ValueError, match="not one of the evaluated thresholds"):
    viz.plot_pr_curves(result, names, str(tmp_path / "x.png"), iou_threshold=0.52)
  with pytest.raises(ValueError, match="category_names"):
    viz.plot_pr_curves(result, names[:2], str(tmp_path / "x.png"))


def test_reliability_diagram_png(tmp_path):
  rng = np.random.default_rng(0)
  confidence = rng.uniform(0.3, 1, 500)
  correct = rng.random(500) < confidence ** 2  # over-confident
  diagram = calibration.reliability_diagram(confidence, correct, num_bins=10)
  path = viz.plot_reliability_diagram(diagram, str(tmp_path / "reliability.png"))
  calibrated = calibration.reliability_diagram(confidence, rng.random(500) < confidence, 10)
  other = viz.plot_reliability_diagram(calibrated, str(tmp_path / "calibrated.png"))
  with Image.open(path) as image:
    assert image.format == "PNG" and image.width > 200
  assert pathlib.Path(path).read_bytes() != pathlib.Path(other).read_bytes()


def test_draw_boxes_outlines_finite_boxes_and_skips_non_finite_ones():
  image = np.zeros((32, 32, 3), np.uint8)
  boxes = np.array([[4, 4, 20, 20], [np.nan, 2, 10, 10], [1, 1, np.inf, 5]], np.float32)
  drawn = viz.draw_boxes(image, boxes, ["a", "b", "c"], viz.PREDICTED_COLOUR, scale=2)
  assert drawn.shape == (64, 64, 3)
  # The finite box's outline is drawn at twice its coordinates.
  assert tuple(drawn[8, 20]) == viz.PREDICTED_COLOUR
  assert tuple(drawn[30, 40]) == viz.PREDICTED_COLOUR
  # Nothing of the other two: the pixels they would cover stay black.
  assert not drawn[2:4, 30:60].any()
