"""benchmarks/accelerator.py runs end to end at a tiny size (so it cannot rot)."""

import importlib.util
import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def _benchmark():
  # The script imports its sibling benchmarks/detection.py, as running it from there does.
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  spec = importlib.util.spec_from_file_location(
      "accelerator_benchmark", os.path.join(ROOT, "benchmarks", "accelerator.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_accelerator_benchmark_at_a_tiny_size(capsys):
  benchmark = _benchmark()
  flags = [
      "--devices", "1", "--steps", "1",
      "--detector_config", os.path.join(ROOT, "configs", "faster_rcnn_shapes.py:quick"),
      "--detector_size", "64,96", "--detector_batch", "1",
      "--classify_config", os.path.join(ROOT, "configs", "classify_localize_shapes.py:quick"),
      "--classify_backbone", "", "--classify_size", "32", "--classify_batch", "2",
      "--classify_classes", "10"]
  # The detector in one dtype (its compilations are most of the cost), the classifier in both.
  rows = benchmark.run(benchmark.parse_args(flags + ["--models", "faster_rcnn",
                                                     "--dtypes", "float32"]))
  rows += benchmark.run(benchmark.parse_args(flags + ["--models", "classify_localize",
                                                      "--dtypes", "float32,bfloat16"]))
  printed = capsys.readouterr().out
  assert [(row["model"], row["dtype"]) for row in rows] == [
      ("faster_rcnn", "float32"), ("classify_localize", "float32"),
      ("classify_localize", "bfloat16")]
  for row in rows:
    assert row["image"] == ("64x96" if row["model"] == "faster_rcnn" else "32x32")
    assert row["batch"] == (1 if row["model"] == "faster_rcnn" else 2)
    assert np.isfinite(row["train"]) and row["train"] > 0
    assert np.isfinite(row["inference"]) and row["inference"] > 0
  # One table row per measurement, the reference column's reason, and the bf16 / f32 ratio.
  assert printed.count("| faster_rcnn |") == 1 and printed.count("| classify_localize |") == 2
  # resnet_tiny has no torchvision twin (and CI has no torch): the reference says why instead.
  assert all("torch" not in row for row in rows)
  assert any(reason in printed for reason in ("no torchvision resnet_tiny", "not installed"))
  assert "classify_localize: jaxvision bf16 / f32 train-step speed" in printed
