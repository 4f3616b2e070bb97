"""Segmentation speed: the sliding-window baseline against the FCN, and each upsampler's step.

The lecture's efficiency argument: the sliding-window baseline runs its CNN once per pixel,
on the patch around it, recomputing the features shared by overlapping patches; the FCN
computes every feature once and classifies all pixels in one pass. Both are the task's
jitted ``predict`` (every pixel's class and probabilities) on the same random images of the
config's size, with random weights (the time does not depend on them); each time is the
median of several calls, the compiling call excluded.

With ``--train_steps N`` it also times the trainer's jitted, data-parallel train step
(forward, backward, optimizer update; the config's global batch of random images and maps)
of the config with each upsampler in turn, ``N`` steps after the compiling one, and
counts each model's parameters: the cost side of the upsampler comparison.

  python benchmarks/segmentation.py [--config configs/fcn_shapes.py] [--calls 5]
                                    [--batch_size 4] [--train_steps 0]

The FCN is the config's default model, the baseline its ``:sliding_window`` variant. Devices:
those ``jaxvision.train`` uses (one per core on a CPU host); ``predict`` runs on the first.
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
import numpy as np

from jaxvision import parallel, trainer
from jaxvision.models.fcn import UPSAMPLERS
from jaxvision.tasks import get_task

from detection import load_config  # benchmarks/detection.py (this script's directory)


def median_seconds(function, calls: int) -> tuple[float, float]:
  """``(compile and first call, median of the next calls)`` in seconds of ``function()``."""
  start = time.perf_counter()
  jax.block_until_ready(function())
  first = time.perf_counter() - start
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    jax.block_until_ready(function())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def time_train_step(task, config, mesh, batches, steps: int) -> tuple[int, float]:
  """``(parameters, median seconds per step)`` of the trainer's jitted, data-parallel train
  step of ``task`` on ``mesh``, alternating between the host ``batches``, ``steps`` steps
  after the compiling one."""
  with jax.threefry_partitionable(False):  # compiles faster on CPU; weights do not matter
    state = trainer.init_state(task, config, batches[0])
  parameters = sum(leaf.size for leaf in jax.tree.leaves(state["params"]))
  train_step = trainer.make_train_step(task, config)
  global_batches = [parallel.global_batch(b, mesh) for b in batches]
  calls = iter(range(steps + 1))

  def one_step():
    nonlocal state
    state, metrics = train_step(state, global_batches[next(calls) % len(global_batches)])
    return state, metrics

  _, seconds = median_seconds(one_step, steps)
  return parameters, seconds


def train_step_seconds(config, steps: int) -> tuple[int, float]:
  """``(parameters, median seconds per train step)`` of ``config`` on random batches."""
  mesh = parallel.make_mesh()
  task = get_task(config, mesh)
  rng = np.random.default_rng(0)
  size, batch = config.data.image_size, config.batch_size
  batches = [{"image": rng.integers(0, 256, (batch,) + task.image_shape, dtype=np.uint8),
              "semantic": rng.integers(0, task.num_classes, (batch, size, size),
                                       dtype=np.int32)} for _ in range(2)]
  return time_train_step(task, config, mesh, batches, steps)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "fcn_shapes.py"))
  parser.add_argument("--calls", type=int, default=5, help="timed calls of each model")
  parser.add_argument("--batch_size", type=int, default=4, help="images per call")
  parser.add_argument("--train_steps", type=int, default=0,
                      help="timed train steps per upsampler (0: no train-step table)")
  args = parser.parse_args()

  rows = []
  for variant in (None, "sliding_window"):
    config = load_config(args.config + (f":{variant}" if variant else ""))
    task = get_task(config)
    images = np.random.default_rng(0).integers(
        0, 256, (args.batch_size,) + task.image_shape, dtype=np.uint8)
    batch = {"image": images[:1]}
    with jax.threefry_partitionable(False):  # compiles faster on CPU; weights do not matter
      variables = jax.jit(task.init_variables)(jax.random.key(0), batch)
    first, seconds = median_seconds(lambda: task.predict(variables, images), args.calls)
    model = config.model
    name = (f"FCN ({model.upsampler}, {model.backbone})" if model.name == "fcn" else
            f"sliding window ({model.patch_size} px patches, {model.backbone})")
    rows.append((name, seconds / args.batch_size, first))

  size = config.data.image_size
  print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; {args.batch_size} "
        f"images of {size} x {size} px per call; median of {args.calls} calls")
  print("| model | ms / image | images / s | compile + first call |")
  print("|---|---|---|---|")
  for name, per_image, first in rows:
    print(f"| {name} | {per_image * 1e3:.1f} | {1 / per_image:.1f} | {first:.0f} s |")
  print(f"sliding window / FCN: {rows[1][1] / rows[0][1]:.0f}x the time per image")
  if args.train_steps:
    config = load_config(args.config)
    print(f"\ntrain step: global batch {config.batch_size} on {jax.device_count()} devices, "
          f"median of {args.train_steps} steps")
    print("| upsampler | parameters | ms / step |")
    print("|---|---:|---:|")
    for upsampler in UPSAMPLERS:
      config.model.upsampler = upsampler
      parameters, seconds = train_step_seconds(config, args.train_steps)
      print(f"| {upsampler} | {parameters:,} | {seconds * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
  main()
