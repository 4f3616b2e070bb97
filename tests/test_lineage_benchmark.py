"""benchmarks/detection_lineage.py on two tiny trained runs: R-CNN (selective search) and
Faster R-CNN (RPN), end to end through ``jaxvision.trainer`` (so it cannot rot)."""

import importlib.util
import os
import re
import sys

import numpy as np
import pytest

from jaxvision import trainer

import configs.faster_rcnn_shapes as faster_rcnn_config
import configs.rcnn_shapes as rcnn_config

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)
# Two detectors trained (compiled) and benchmarked: about 1.5 min of CPU on 2 cores.
pytestmark = pytest.mark.slow


def _benchmark():
  # The script imports its sibling benchmarks/proposals.py, as running it from there does.
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  spec = importlib.util.spec_from_file_location(
      "detection_lineage", os.path.join(ROOT, "benchmarks", "detection_lineage.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _train(config, workdir):
  # Two steps, one checkpoint, one (final) evaluation: the cheapest run with everything a
  # real one writes.
  config.total_steps = config.checkpoint_every = config.eval_every = 2
  config.log_every = 1
  trainer.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  faster_rcnn = faster_rcnn_config.get_config("quick")
  # The RPN's proposals as they are (the one_stage variant): a smaller program to compile.
  faster_rcnn.model.refine_proposals = False
  return {"rcnn": _train(rcnn_config.get_config("quick"), str(tmp_path_factory.mktemp("rcnn"))),
          "faster_rcnn": _train(faster_rcnn, str(tmp_path_factory.mktemp("faster_rcnn")))}


def test_trainer_records_the_wall_time_of_each_log_step(workdirs):
  records = [r for r in trainer.read_metrics(workdirs["rcnn"])
             if trainer.ELAPSED_METRIC in r]
  elapsed = [r[trainer.ELAPSED_METRIC] for r in records]
  assert [r["step"] for r in records] == [1, 2]
  assert 0 < elapsed[0] < elapsed[1], elapsed
  assert trainer.recorded_elapsed(workdirs["rcnn"]) == elapsed[-1]


def test_table_has_every_run_with_finite_numbers_and_the_rpn_recall(workdirs, tmp_path):
  benchmark = _benchmark()
  output = str(tmp_path / "lineage.md")
  # Given in the wrong order: the table follows the lineage.
  rows = benchmark.main([f"--run=faster_rcnn={workdirs['faster_rcnn']}",
                         f"--run=rcnn={workdirs['rcnn']}", "--num_images=8", "--repeats=1",
                         "--recall_images=8", "--top_k=all", f"--output={output}"])
  assert [r["method"] for r in rows] == ["rcnn", "faster_rcnn"]
  for row in rows:
    assert row["step"] == 2
    for key in ("AP", "AP50", "AR100"):
      assert 0.0 <= row[key] <= 1.0, (row["method"], key, row[key])
    assert row["training_time_exact"]
    assert row["training_seconds"] == trainer.recorded_elapsed(row["workdir"]) > 0
    assert np.isfinite(row["inference_seconds"]) and row["inference_seconds"] > 0
  rcnn, faster_rcnn = rows
  # R-CNN's inference includes its selective search; Faster R-CNN's proposals are in the model.
  assert 0 < rcnn["proposal_seconds"] < rcnn["inference_seconds"]
  assert faster_rcnn["proposal_seconds"] is None
  assert faster_rcnn["inference_seconds"] == faster_rcnn["model_seconds"]
  assert rcnn["batch_size"] == faster_rcnn["batch_size"] == 8 and rcnn["timed_images"] == 8
  assert rcnn["held_out_digest"] == faster_rcnn["held_out_digest"]  # the same images

  with open(output) as f:
    report = f.read()
  table = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
           for line in report.splitlines() if re.match(r"\| (rcnn|faster_rcnn) \|", line)}
  assert set(table) == {"rcnn", "faster_rcnn"}
  for name, cells in table.items():
    ap, ap50, ar100, _, inference, proposals = cells
    assert all(np.isfinite(float(v)) for v in (ap, ap50, ar100, inference)), cells
    assert (proposals == "in model") == (name == "faster_rcnn"), cells
  assert "WARNING" not in report
  # The proposals' recall: the RPN's and the selective search's, at IoU 0.5 / 0.7 / 0.9.
  recall = [line for line in report.splitlines()
            if line.startswith(("| RPN", "| selective search"))]
  assert len(recall) == 2, report
  for line in recall:
    values = [float(v) for v in line.split("|")[4:7]]
    assert all(0.0 <= v <= 1.0 for v in values) and values[0] >= values[1] >= values[2], line


def test_a_workdir_without_a_checkpoint_is_named_before_anything_runs(workdirs, tmp_path):
  benchmark = _benchmark()
  empty = str(tmp_path / "untrained")
  os.makedirs(empty)
  with pytest.raises(FileNotFoundError, match=r"--run retinanet=.*untrained: no checkpoint"):
    benchmark.main([f"--run=faster_rcnn={workdirs['faster_rcnn']}",
                    f"--run=retinanet={empty}"])
  with pytest.raises(ValueError, match="NAME=WORKDIR"):
    benchmark.main([f"--run={empty}"])


def test_training_time_is_the_last_record_or_else_the_logged_steps(tmp_path):
  benchmark = _benchmark()
  lines = ['{"step": 10, "train/steps_per_second": 2.0}',
           '{"step": 20, "train/steps_per_second": 5.0}',
           '{"step": 20, "eval/AP": 0.5}',
           '{"step": 30, "train/steps_']  # a line cut short by a killed run
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  assert trainer.recorded_elapsed(str(tmp_path)) is None
  # Before train/elapsed_seconds existed: 10 steps at 2/s + 10 at 5/s, a lower bound.
  assert benchmark.training_seconds(str(tmp_path)) == (7.0, False)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "train/steps_per_second": 1.0, "train/elapsed_seconds": 12.5}\n'
            '{"step": 50, "train/steps_per_second": 1.0, "train/elapsed_seconds": 20.0}\n')
  assert benchmark.training_seconds(str(tmp_path)) == (20.0, True)
