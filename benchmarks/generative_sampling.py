"""PixelCNN sampling speed: the fast sampler (only the rows the next pixel depends on)
against the naive loop (the whole image per pixel value), on one config's image shape.

  python benchmarks/generative_sampling.py [--config configs/pixelcnn_shapes.py]
                                           [--num_samples 16] [--repeats 2]
  python benchmarks/generative_sampling.py --config configs/pixelrnn_shapes.py

For the Row LSTM (``pixelrnn`` configs) the fast sampler carries the LSTM states row by row.

Both samplers are jitted once (their compilation is not counted) and run on the same random
initial parameters and rng; the script checks that their samples are identical and prints
images per second (best of ``--repeats``).
"""

from __future__ import annotations

from jaxvision import cpu_devices

cpu_devices.configure()  # Before jax is imported.

# pylint: disable=wrong-import-position
import argparse
import time

import jax
import numpy as np

from jaxvision import parallel
from jaxvision.tasks import get_task

from detection import load_config  # benchmarks/detection.py (this script's directory)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/pixelcnn_shapes.py")
  parser.add_argument("--num_samples", type=int, default=16)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  config = load_config(args.config)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  height, width, channels = task.image_shape
  batch = {"image": np.zeros((1, height, width, channels), np.uint8),
           "label": np.zeros((1,), np.int32)}
  variables = task.init_variables(jax.random.key(0), batch)
  sample = jax.jit(task.sample, static_argnums=(2, 3))
  rng = jax.random.key(1)
  images, rates = {}, {}
  for sampler in ("naive", "fast"):
    images[sampler] = np.asarray(sample(variables, rng, args.num_samples, sampler))  # compiles
    best = float("inf")
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(sample(variables, rng, args.num_samples, sampler))
      best = min(best, time.perf_counter() - start)
    rates[sampler] = args.num_samples / best
  identical = np.array_equal(images["naive"], images["fast"])
  if config.task == "pixelrnn":
    fast = "fast: LSTM states carried row by row"
  else:
    fast = f"fast window {min(height, task.model.rows_above + 1)} of {height} rows"
  output = config.model.get("output", "softmax")
  print(f"{config.model.architecture} ({output}) {height}x{width}x{channels}, "
        f"{args.num_samples} images, {fast}")
  for sampler in ("naive", "fast"):
    print(f"  {sampler:5s} {rates[sampler]:8.3f} images/s")
  print(f"  speed-up {rates['fast'] / rates['naive']:.2f}x; identical samples: {identical}")


if __name__ == "__main__":
  main()
