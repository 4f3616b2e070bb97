"""SimCLR train-step throughput on 1 vs N devices, and the cost of gathering the negatives.

The train step is the trainer's jitted, data-parallel step (forward of both views, backward,
LARS update) of ``configs/simclr_shapes.py`` on its global batch of random views; images/s
counts source images (each with its two views). The loss alone is then timed on all the
devices two ways: the global NT-Xent (``jax.shard_map`` + ``all_gather`` of every device's
projections, each device scoring its anchors against all ``2N - 1`` candidates: what the task
trains with), and a per-device NT-Xent (each device's anchors against its own rows only, no
collective: the wrong loss, the cost baseline), forward and backward, on random ``[N, D]``
projections of the config's global batch.

  python benchmarks/simclr.py [--config configs/simclr_shapes.py] [--steps 10]

Each time is the median of ``--steps`` calls after the compiling one.
"""

from __future__ import annotations

from jaxvision import cpu_devices

cpu_devices.configure()  # As jaxvision.train does: one CPU device per core unless XLA_FLAGS says.

# pylint: disable=wrong-import-position
import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxvision import parallel
from jaxvision.models.simclr import global_nt_xent, nt_xent
from jaxvision.tasks import get_task

from detection import load_config  # benchmarks/detection.py (this script's directory)
from segmentation import median_seconds, time_train_step  # benchmarks/segmentation.py


def train_step_seconds(config, devices, steps: int) -> float:
  """Median seconds of one train step of ``config`` on a mesh of ``devices``."""
  mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  rng = np.random.default_rng(0)
  size = config.data.image_size
  batches = [{"views": rng.integers(0, 256, (config.batch_size, 2, size, size, 3),
                                    dtype=np.uint8)} for _ in range(2)]
  return time_train_step(task, config, mesh, batches, steps)[1]


def loss_seconds(config, steps: int) -> tuple[float, float]:
  """Median seconds of value-and-grad of the global and of the per-device NT-Xent."""
  mesh = Mesh(np.asarray(jax.devices()), (parallel.DATA_AXIS,))
  temperature = config.model.temperature
  sharded = jax.sharding.NamedSharding(mesh, P(parallel.DATA_AXIS))
  keys = jax.random.split(jax.random.key(0))
  z_a, z_b = (jax.device_put(jax.random.normal(key, (config.batch_size,
                                                     config.model.projection_dim)), sharded)
              for key in keys)
  spec = dict(mesh=mesh, in_specs=(P(parallel.DATA_AXIS),) * 2, out_specs=P())

  @functools.partial(jax.shard_map, **spec)
  def global_loss(a, b):
    return global_nt_xent(a, b, temperature, parallel.DATA_AXIS)[0]

  @functools.partial(jax.shard_map, **spec)
  def local_loss(a, b):
    return jax.lax.pmean(nt_xent(a, b, temperature), parallel.DATA_AXIS)

  times = []
  for loss in (global_loss, local_loss):
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    times.append(median_seconds(lambda step=step: step(z_a, z_b), steps)[1])
  return times[0], times[1]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "simclr_shapes.py"))
  parser.add_argument("--steps", type=int, default=10, help="timed calls of each")
  args = parser.parse_args()
  config = load_config(args.config)
  devices = jax.devices()
  print(f"{config.batch_size} images ({2 * config.batch_size} views) of "
        f"{config.data.image_size} px per step; median of {args.steps} steps")
  print("| devices | ms / step | images / s | vs 1 device |")
  print("|---:|---:|---:|---:|")
  one = None
  for count in sorted({1, len(devices)}):
    seconds = train_step_seconds(config, devices[:count], args.steps)
    one = one or seconds
    print(f"| {count} | {seconds * 1e3:.0f} | {config.batch_size / seconds:.0f} | "
          f"{one / seconds:.2f}x |", flush=True)
  global_time, local_time = loss_seconds(config, args.steps)
  print(f"\nNT-Xent value and gradients on {len(devices)} devices, {config.batch_size} pairs "
        f"of {config.model.projection_dim}-d projections:")
  print(f"| global (all_gather) | {global_time * 1e3:.2f} ms |")
  print(f"| per device (no collective) | {local_time * 1e3:.2f} ms |")
  print(f"gather cost: {(global_time - local_time) * 1e3:.2f} ms "
        f"({global_time / local_time:.2f}x the per-device loss)")


if __name__ == "__main__":
  main()
