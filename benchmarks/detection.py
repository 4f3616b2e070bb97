"""Faster R-CNN speed on this machine: train-step and inference throughput in images/s.

The config's own model and global batch on all local devices, through the trainer's
jitted, data-parallel train step and the task's jitted ``eval_outputs``: the median of
``--steps`` calls of each. Batches are read before the clock starts, so the numbers are the
model's, not the input pipeline's; the first (compiling) call of each function is timed
separately and excluded.

  python benchmarks/detection.py [--config configs/faster_rcnn_shapes.py[:variant]]
                                 [--steps 20] [--batch_size N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from jaxvision import cpu_devices

cpu_devices.configure()  # As jaxvision.train does: one CPU device per core unless XLA_FLAGS says.

# pylint: disable=wrong-import-position
import jax

from jaxvision import config_files, parallel, trainer
from jaxvision.tasks import get_task


# ``path/to/config.py[:variant]`` -> ``get_config(variant)``; the other scripts import it here.
load_config = config_files.load_config


def timed(function, calls: int) -> float:
  """Median seconds of ``calls`` calls of ``function()`` (which returns something to block
  on), each waited for before the next starts."""
  seconds = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(function())
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "faster_rcnn_shapes.py"))
  parser.add_argument("--steps", type=int, default=20, help="timed calls of each function")
  parser.add_argument("--batch_size", type=int, default=0, help="global batch (0: config's)")
  args = parser.parse_args()

  config = load_config(args.config)
  if args.batch_size:
    config.batch_size = args.batch_size
  mesh = parallel.make_mesh()
  task = get_task(config, mesh)
  batches = [parallel.global_batch(task.train_batch(step), mesh) for step in range(args.steps)]
  state = trainer.init_state(task, config, task.train_batch(0))
  train_step = trainer.make_train_step(task, config)

  start = time.perf_counter()
  state, metrics = train_step(state, batches[0])
  jax.block_until_ready(metrics)
  train_compile = time.perf_counter() - start
  step_iter = iter(range(args.steps))

  def one_train_step():
    nonlocal state
    state, step_metrics = train_step(state, batches[next(step_iter)])
    return step_metrics

  train_seconds = timed(one_train_step, args.steps)

  eval_step = jax.jit(task.eval_outputs, in_shardings=(parallel.replicated(mesh),
                                                       parallel.data_sharding(mesh)),
                      out_shardings=parallel.data_sharding(mesh))
  variables = task.inference_variables(state)
  eval_batch = parallel.global_batch(next(iter(task.eval_batches(config.eval_split))), mesh)
  start = time.perf_counter()
  jax.block_until_ready(eval_step(variables, eval_batch))
  eval_compile = time.perf_counter() - start
  eval_seconds = timed(lambda: eval_step(variables, eval_batch), args.steps)

  batch = config.batch_size
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; global batch {batch}; "
        f"image {config.data.image_size} px; backbone {config.model.backbone}")
  print(f"| train step | {batch / train_seconds:.1f} images/s | {train_seconds * 1e3:.0f} ms/step "
        f"| compile {train_compile:.0f} s |")
  print(f"| inference  | {batch / eval_seconds:.1f} images/s | {eval_seconds * 1e3:.0f} ms/batch "
        f"| compile {eval_compile:.0f} s |")


if __name__ == "__main__":
  main()
