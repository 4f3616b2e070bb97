"""Evaluation time per split: one compiled evaluator per run against a fresh jit per call.

Before spine v2 the trainer wrapped ``task.eval_outputs`` in a new ``jax.jit`` at every
evaluation and ``predict`` in a new one at every call, so each retraced and recompiled. Now
each evaluator (and each task's ``predict``) builds its jitted function once. This script
times both on a config's held-out splits, from a fresh state (the speed does not depend on
the weights), and prints the medians side by side:

  python benchmarks/evaluation.py [--config configs/classify_localize_shapes.py]
                                  [--splits validation,test] [--repeats 3]

"before" builds a new ``batches`` evaluator for every evaluation (a new jit, as the old
trainer did); "after" reuses one (its first evaluation, which compiles, is not counted).
"""

from __future__ import annotations

from jaxvision import cpu_devices

cpu_devices.configure()  # Before jax is imported.

# pylint: disable=wrong-import-position
import argparse
import os
import statistics
import time

import jax

from jaxvision import parallel, trainer
from jaxvision.evaluation import evaluators
from jaxvision.tasks import get_task

from detection import load_config  # benchmarks/detection.py (this script's directory)


def seconds(function) -> float:
  start = time.perf_counter()
  function()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs",
                                                       "classify_localize_shapes.py"))
  parser.add_argument("--splits", default="validation,test")
  parser.add_argument("--repeats", type=int, default=3, help="timed evaluations of each kind")
  args = parser.parse_args()

  config = load_config(args.config)
  config.evals = {"eval": {"kind": "batches", "pictures": False}}
  mesh = parallel.make_mesh()
  task = get_task(config, mesh)
  state = trainer.init_state(task, config, task.train_batch(0))
  variables = task.inference_variables(state)
  images = task.train_batch(0)["image"]
  print(f"{args.config}: {jax.device_count()} x {jax.devices()[0].device_kind}, global batch "
        f"{config.batch_size}, medians of {args.repeats}")
  print("| split | examples | before: new jit per evaluation (s) | after: one evaluator (s) "
        "| speed-up |")
  print("|---|---:|---:|---:|---:|")
  for split in args.splits.split(","):
    def fresh():
      [scheduled] = evaluators.make_evaluators(task, config, None, split=split)
      return scheduled.evaluator.run(state, 0, jax.random.key(0))

    [reused] = evaluators.make_evaluators(task, config, None, split=split)
    evaluate_reused = lambda: reused.evaluator.run(state, 0, jax.random.key(0))
    evaluate_reused()  # compiles once
    before = statistics.median(seconds(fresh) for _ in range(args.repeats))
    after = statistics.median(seconds(evaluate_reused) for _ in range(args.repeats))
    count = task.pipeline(split, training=False).num_examples
    print(f"| {split} | {count} | {before:.2f} | {after:.2f} | {before / after:.1f}x |")

  compiled = task._predict
  predict = lambda: jax.block_until_ready(task.predict(variables, images))

  def predict_fresh():
    task._predict = jax.jit(task._forward)  # what predict did at every call before
    predict()

  before = statistics.median(seconds(predict_fresh) for _ in range(args.repeats))
  task._predict = compiled
  predict()
  after = statistics.median(seconds(predict) for _ in range(args.repeats))
  print(f"| predict ({len(images)} images) | | {before:.3f} | {after:.3f} | "
        f"{before / after:.1f}x |")


if __name__ == "__main__":
  main()
