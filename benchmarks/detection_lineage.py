"""The detection lineage side by side: accuracy, training time and test-time cost per image.

One trained workdir per method (``python -m jaxvision.train`` wrote its config and
checkpoints), named on the command line::

  python benchmarks/detection_lineage.py --run sliding_window=DIR --run rcnn=DIR \\
      --run fast_rcnn=DIR --run faster_rcnn=DIR --run retinanet=DIR [--output FILE]
      [--split validation] [--num_images 48] [--repeats 3]
      [--recall_images 200] [--top_k 100,all]

For each run, from its latest checkpoint:

* AP, AP50, AR100: the run's own evaluators on the held-out split
  (``jaxvision.evaluate.evaluate_workdir``: what ``python -m jaxvision.evaluate`` runs; it
  also writes ``eval_<split>_step<N>.json`` and pictures into the workdir). Data-proposal
  models are evaluated on the input pipeline's (cached) selective search boxes, the same
  boxes the search below recomputes.
* Training time: the run's wall time up to its last log step (``train/elapsed_seconds`` in
  ``metrics.jsonl``: dataset generation, compilation and periodic evaluations included;
  summed over resumed segments). Runs logged before that record existed get the sum of
  their logged step intervals instead (``train/steps_per_second``), marked ``*``: a lower
  bound that leaves out the time before the first log step.
* Inference time per image: the full batches among the first ``--num_images`` held-out
  images, each of the config's ``batch_size`` (as the evaluation runs them), through the
  task's jitted ``eval_outputs`` sharded over all local devices (the evaluator's program),
  each batch ``--repeats`` times; the first call (compilation) is not timed; the median
  over all timed batches of the batch's seconds divided by its size. For models whose
  proposals come from selective search (R-CNN, Fast R-CNN) the search is part of
  inference: every image is searched again (``jaxvision.data.proposals.selective_search``
  with the run's ``data_proposals`` settings, on the image as the model sees it, one image
  at a time with one OpenCV thread, never the on-disk cache), timed on its own (the
  ``proposals`` column) and added to the model's time of the same batch. The sliding
  window's grid, the RPN and RetinaNet's anchors are inside the model.

Then the proposals' recall at IoU 0.5 / 0.7 / 0.9 on the first ``--recall_images``
held-out images (``benchmarks/proposals.py``): the RPN of every Faster R-CNN run and the
selective search of every run that uses it (its mode, ``min_size`` and the number of
proposals the detector sees).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from typing import Any

from jaxvision import cpu_devices

cpu_devices.configure()  # As jaxvision.train does: one CPU device per core unless XLA_FLAGS says.

# pylint: disable=wrong-import-position
import jax
import numpy as np

from jaxvision import checkpoint as checkpoint_lib
from jaxvision import parallel, trainer
from jaxvision.data import proposals as proposals_lib
from jaxvision.evaluate import evaluate_workdir
from jaxvision.tasks import get_task

import proposals as proposals_benchmark  # benchmarks/proposals.py (this script's directory)

# The lecture's order; runs with other names follow in the order given.
LINEAGE = ("sliding_window", "rcnn", "fast_rcnn", "faster_rcnn", "retinanet")
METRICS = ("AP", "AP50", "AR100")


def parse_runs(specs: list[str]) -> list[tuple[str, str]]:
  """``["name=DIR", ...]`` -> ``[(name, DIR), ...]`` in lineage order, each with a checkpoint.

  Raises a ValueError for a malformed or repeated name, FileNotFoundError for a workdir
  without a checkpoint, before anything is restored or compiled.
  """
  runs = []
  for spec in specs:
    name, sep, workdir = spec.partition("=")
    if not sep or not name or not workdir:
      raise ValueError(f"--run {spec!r}: use --run NAME=WORKDIR, e.g. --run rcnn=/tmp/rcnn "
                       f"(names: {', '.join(LINEAGE)}, or any other).")
    if name in dict(runs):
      raise ValueError(f"--run {name}= is given twice.")
    runs.append((name, workdir))
  if not runs:
    raise ValueError("Nothing to measure: give at least one --run NAME=WORKDIR.")
  for name, workdir in runs:
    directory = checkpoint_lib.checkpoint_directory(workdir)
    step = None
    if os.path.isdir(directory):
      checkpointer = checkpoint_lib.Checkpointer(workdir, read_only=True)
      step = checkpointer.latest_step()
      checkpointer.close()
    if step is None:
      config = f"configs/{name}_shapes.py" if name in LINEAGE else "CONFIG"
      raise FileNotFoundError(
          f"--run {name}={workdir}: no checkpoint in {directory}. Train it first "
          f"(python -m jaxvision.train --config {config} --workdir {workdir}) or check the "
          "path.")
  order = {name: i for i, name in enumerate(LINEAGE)}
  return sorted(runs, key=lambda run: order.get(run[0], len(LINEAGE)))


def proposal_method(config) -> str:
  """Where the run's regions come from: ``"selective_search"``, ``"synthetic"`` (the data
  step's), ``"rpn"`` (learned, inside the model) or ``"none"`` (single stage, or the
  sliding window's fixed grid, also inside the model)."""
  source = config.model.get("proposal_source", None)
  if source == "data":
    return config.data_proposals.get("method", "synthetic")
  return "rpn" if source == "rpn" else "none"


def training_seconds(workdir: str) -> tuple[float | None, bool]:
  """``(seconds, exact)``: the recorded wall time, else the logged steps' time (a lower
  bound, ``exact=False``), else ``(None, False)``."""
  recorded = trainer.recorded_elapsed(workdir)
  if recorded is not None:
    return recorded, True
  seconds, last_step = 0.0, 0
  for record in trainer.read_metrics(workdir):
    rate = record.get("train/steps_per_second")
    if rate:
      # A resumed run logs steps again from its checkpoint: count each interval once.
      seconds += max(record["step"] - last_step, 0) / rate
      last_step = max(last_step, record["step"])
  return (seconds or None), False


class Searcher:
  """The run's selective search, uncached, on model-input images (uint8 ``[B, H, W, C]``)."""

  def __init__(self, config):
    settings = config.data_proposals
    self.mode = settings.get("mode", "fast")
    self.min_size = settings.get("min_size", 4)
    self.num_proposals = settings.num_proposals

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = [proposals_lib.selective_search(image, mode=self.mode,
                                           max_proposals=self.num_proposals,
                                           min_size=self.min_size) for image in images]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def time_inference(config, variables, split: str, num_images: int,
                   repeats: int) -> dict[str, Any]:
  """Median seconds per image of the model and (selective search runs) of the search."""
  mesh = parallel.make_mesh()
  task = get_task(config, mesh)
  searcher = Searcher(config) if proposal_method(config) == "selective_search" else None
  # Full batches only (padding rows would cost time too).
  batches = [b for b in task.eval_batches(split, num_examples=num_images)
             if np.all(b["example_mask"])]
  if not batches:
    raise ValueError(f"--num_images {num_images} holds no full batch of the config's "
                     f"batch_size {config.batch_size}.")
  # The evaluator's jitted function (BatchesEvaluator): the same program as the evaluation.
  outputs = jax.jit(task.eval_outputs,
                    in_shardings=(parallel.replicated(mesh), parallel.data_sharding(mesh)),
                    out_shardings=parallel.data_sharding(mesh))
  variables = jax.device_put(variables, parallel.replicated(mesh))

  def infer(batch):
    """Seconds of the search and of the model on one batch."""
    search_seconds = 0.0
    if searcher is not None:
      start = time.perf_counter()
      proposals, proposal_valid = searcher(batch["image"])
      search_seconds = time.perf_counter() - start
      # In place of the input pipeline's (cached) boxes of the same images.
      batch = {**batch, "proposals": proposals, "proposal_valid": proposal_valid}
    start = time.perf_counter()
    jax.block_until_ready(outputs(variables, parallel.global_batch(batch, mesh)))
    return search_seconds, time.perf_counter() - start

  infer(batches[0])  # compiles (one batch shape: once)
  search, model, total = [], [], []
  for _ in range(repeats):
    for batch in batches:
      search_seconds, model_seconds = infer(batch)
      size = len(batch["image"])
      search.append(search_seconds / size)
      model.append(model_seconds / size)
      total.append((search_seconds + model_seconds) / size)
  images = np.concatenate([b["image"] for b in batches])
  return {"inference_seconds": float(np.median(total)), "model_seconds": float(np.median(model)),
          "proposal_seconds": float(np.median(search)) if searcher is not None else None,
          "batch_size": len(batches[0]["image"]), "timed_images": len(images),
          # The timed images themselves, to check that every run saw the same held-out data.
          "held_out_digest": hashlib.sha1(images.tobytes()).hexdigest()}


def measure_run(name: str, workdir: str, args) -> dict[str, Any]:
  config, _, variables = checkpoint_lib.restore_for_inference(workdir)
  if proposal_method(config) == "synthetic":
    raise ValueError(f"--run {name}={workdir}: its proposals are synthetic (jittered "
                     "ground-truth boxes, config.data_proposals.method='synthetic'), which a "
                     "test image does not have; train it on selective search proposals.")
  split = args.split or config.eval_split
  step, metrics = evaluate_workdir(config, workdir, split)
  missing = [k for k in METRICS if k not in metrics]
  if missing:
    raise ValueError(f"--run {name}={workdir}: its evaluators report no {missing} (task "
                     f"{config.task!r}); the lineage compares COCO box detectors.")
  seconds, exact = training_seconds(workdir)
  return {"method": name, "workdir": workdir, "task": config.task, "step": step,
          "split": split, "proposals": proposal_method(config), "config": config,
          **{k: float(metrics[k]) for k in METRICS},
          "training_seconds": seconds, "training_time_exact": exact,
          **time_inference(config, variables, split, args.num_images, args.repeats)}


def recall_rows(rows: list[dict[str, Any]], args) -> list[dict]:
  """Proposal recall of every RPN run and of each distinct selective search setting."""
  top_k = proposals_benchmark.top_k_values(args.top_k)
  recall, searched = [], set()
  for row in rows:
    config = row["config"]
    if row["proposals"] == "rpn":
      recall += proposals_benchmark.rpn_rows(row["workdir"], row["split"], args.recall_images,
                                             top_k)
    elif row["proposals"] == "selective_search":
      searcher = Searcher(config)
      key = (searcher.mode, searcher.min_size, searcher.num_proposals, row["split"],
             row["held_out_digest"])
      if key in searched:
        continue
      searched.add(key)
      batches = proposals_benchmark.held_out_batches(config.data, row["split"],
                                                     args.recall_images)
      recall += proposals_benchmark.selective_search_rows(
          searcher.mode, batches, searcher.num_proposals, searcher.min_size, top_k)
  return recall


def duration(seconds: float | None) -> str:
  if seconds is None:
    return "n/a"
  minutes, seconds = divmod(round(seconds), 60)
  return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def format_report(rows: list[dict[str, Any]], recall: list[dict], args) -> str:
  """The markdown table, its legend, and the proposals' recall table."""
  lines = ["| method | AP | AP50 | AR100 | training time | median inference s/img "
           "(model + proposals) | proposals s/img |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    proposals = ("in model" if r["proposals"] in ("rpn", "none")
                 else f"{r['proposal_seconds']:.4f}")
    mark = "" if r["training_time_exact"] else "*"
    lines.append(f"| {r['method']} | {r['AP']:.3f} | {r['AP50']:.3f} | {r['AR100']:.3f} | "
                 f"{duration(r['training_seconds'])}{mark} | {r['inference_seconds']:.4f} | "
                 f"{proposals} |")
  lines += ["", f"Held-out split: {', '.join(sorted({r['split'] for r in rows}))}. Inference: "
            "each config's batch through its jitted eval_outputs on "
            f"{jax.device_count()} {jax.devices()[0].platform} device(s) ({os.cpu_count()} "
            f"cores), time per batch / batch size, median over the first {args.num_images} "
            f"held-out images (full batches) x {args.repeats} repeats, compilation excluded. "
            "Proposals: selective search recomputed for every image (uncached, one OpenCV "
            "thread, one image at a time), included in the inference time."]
  lines += [f"- {r['method']}: task {r['task']}, step {r['step']}, batch {r['batch_size']}, "
            f"{r['timed_images']} images timed, {r['workdir']}" for r in rows]
  if not all(r["training_time_exact"] for r in rows):
    lines.append("\n\\* No `train/elapsed_seconds` in metrics.jsonl (trained before it was "
                 "recorded): the logged steps' time, a lower bound.")
  if len({(r["split"], r["held_out_digest"]) for r in rows}) > 1:
    lines.append("\nWARNING: the runs' held-out images differ (their first timed images are "
                 "not the same): their numbers are not comparable. Train every method on "
                 "the same data config.")
  if recall:
    lines += ["", "Proposals' recall on the first held-out images:", "",
              proposals_benchmark.format_table(recall)]
  return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--run", action="append", default=[], metavar="NAME=WORKDIR",
                      help=f"a trained workdir (repeat; names: {', '.join(LINEAGE)})")
  parser.add_argument("--split", default="", help="held-out split (default: each config's "
                      "eval_split)")
  parser.add_argument("--num_images", type=int, default=48, help="images timed per run")
  parser.add_argument("--repeats", type=int, default=3, help="timed passes over them")
  parser.add_argument("--recall_images", type=int, default=200,
                      help="images of the proposals' recall (0: skip it)")
  parser.add_argument("--top_k", default="100,all", help="proposal budgets of the recall")
  parser.add_argument("--output", default="", help="also write the report to this file")
  args = parser.parse_args(argv)
  for field in ("num_images", "repeats"):
    if getattr(args, field) < 1:
      parser.error(f"--{field} must be >= 1.")
  return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
  """Measures every ``--run``, prints the report (and writes ``--output``); returns the rows."""
  args = parse_args(argv)
  runs = parse_runs(args.run)
  rows = [measure_run(name, workdir, args) for name, workdir in runs]
  recall = recall_rows(rows, args) if args.recall_images > 0 else []
  report = format_report(rows, recall, args)
  print(report)
  if args.output:
    with open(args.output, "w") as f:
      f.write(report + "\n")
  return rows


if __name__ == "__main__":
  try:
    main()
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
