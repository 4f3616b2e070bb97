"""Segmentation inference speed: the sliding-window baseline against the FCN, per image.

The lecture's efficiency argument: the sliding-window baseline runs its CNN once per pixel,
on the patch around it, recomputing the features shared by overlapping patches; the FCN
computes every feature once and classifies all pixels in one pass. Both are the task's
jitted ``predict`` (every pixel's class and probabilities) on the same random images of the
config's size, with random weights (the time does not depend on them); each time is the
median of several calls, the compiling call excluded.

  python benchmarks/segmentation.py [--config configs/fcn_shapes.py] [--calls 5]
                                    [--batch_size 4]

The FCN is the config's default model, the baseline its ``:sliding_window`` variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

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


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "fcn_shapes.py"))
  parser.add_argument("--calls", type=int, default=5, help="timed calls of each model")
  parser.add_argument("--batch_size", type=int, default=4, help="images per call")
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


if __name__ == "__main__":
  main()
