"""One CPU device against one device per core: train-step and inference speed of a config.

Runs ``benchmarks/detection.py`` (the trainer's jitted step on real batches, compile
excluded) in a fresh process per device count, with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, and prints the side-by-side ratio.

  python benchmarks/cpu_devices.py [--config configs/classify_localize_shapes.py] [--steps 20]
                                   [--counts 1,2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW = re.compile(r"\| (train step|inference)\s*\| ([\d.]+) images/s \| (\d+) ms")


def measure(config: str, steps: int, count: int) -> dict[str, tuple[float, int]]:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"}
  output = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "detection.py"), "--config", config,
       "--steps", str(steps)], env=env, cwd=ROOT, check=True, capture_output=True,
      text=True).stdout
  return {name: (float(rate), int(ms)) for name, rate, ms in ROW.findall(output)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/classify_localize_shapes.py")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--counts", default="1,2", help="device counts, the first is the baseline")
  args = parser.parse_args()
  counts = [int(c) for c in args.counts.split(",")]
  results = {count: measure(args.config, args.steps, count) for count in counts}
  base = results[counts[0]]
  print(f"{args.config}, {os.cpu_count()} cores")
  print("| devices | train images/s | train ms/step | inference images/s "
        "| speed-up (train, inference) |")
  print("|---:|---:|---:|---:|---:|")
  for count in counts:
    train, infer = results[count]["train step"], results[count]["inference"]
    print(f"| {count} | {train[0]:.1f} | {train[1]} | {infer[0]:.1f} | "
          f"{train[0] / base['train step'][0]:.2f}x, {infer[0] / base['inference'][0]:.2f}x |")


if __name__ == "__main__":
  main()
