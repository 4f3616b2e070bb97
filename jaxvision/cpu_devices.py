"""On a CPU-only machine, split the host into one JAX device per core (power of two, <= 8).

XLA:CPU runs one program on a pool of threads but leaves much of a small convolutional
network's work (weight gradients in particular) on one core; data parallelism over several
host-platform devices keeps more cores busy (on 2 cores: the classification train step
1.8x faster, detection inference 1.4x; see docs/BENCHMARKS.md). The batch is sharded over
devices exactly as on accelerators (BatchNorm statistics are still those of the global
batch), so only float reduction order changes.

``configure()`` must run before jax is imported; the command-line entry points
(``jaxvision.train``, ``jaxvision.evaluate``) call it first. It does nothing when
``XLA_FLAGS`` already sets ``--xla_force_host_platform_device_count``. Set
``JAXVISION_CPU_DEVICES=N`` to choose the count (``1`` turns the split off). On GPU and TPU
hosts the flag only concerns the unused CPU platform.

It also raises XLA:CPU's collective timeouts (``COLLECTIVE_TIMEOUT_FLAGS``, unless
``XLA_FLAGS`` sets them): by default a host-platform device that reaches an all-reduce more
than 40 s after the others aborts the process ("Termination timeout for all reduce ...
exceeded"), which happens on a laptop whose cores are busy with other work.
"""

from __future__ import annotations

import os
import sys

ENV = "JAXVISION_CPU_DEVICES"
FLAG = "--xla_force_host_platform_device_count"
MAX_DEFAULT_DEVICES = 8
# Seconds: long enough for any step on a loaded machine, short enough to end a real deadlock.
COLLECTIVE_TIMEOUT_FLAGS = {"--xla_cpu_collective_call_terminate_timeout_seconds": 1800,
                            "--xla_cpu_collective_timeout_seconds": 1800}


def with_collective_timeouts(flags: str) -> str:
  """``flags`` (an ``XLA_FLAGS`` value) plus the ``COLLECTIVE_TIMEOUT_FLAGS`` it lacks."""
  added = [f"{flag}={seconds}" for flag, seconds in COLLECTIVE_TIMEOUT_FLAGS.items()
           if flag not in flags]
  return " ".join([flags, *added]).strip()


def default_count() -> int:
  """The largest power of two not above the usable cores (at most 8): divides usual batches."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  count = 1
  while count * 2 <= min(cores or 1, MAX_DEFAULT_DEVICES):
    count *= 2
  return count


def configure() -> int | None:
  """Adds the device-count flag to ``XLA_FLAGS``; returns the count set, or None if left alone."""
  if "jax" in sys.modules:
    return None
  flags = with_collective_timeouts(os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = flags
  if FLAG in flags:
    return None
  requested = os.environ.get(ENV)
  if requested is None:
    count = default_count()
  else:
    try:
      count = int(requested)
    except ValueError:
      count = 0
    if count < 1:
      raise ValueError(f"{ENV}={requested!r} must be a positive integer (1 = one CPU device).")
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()
  return count
