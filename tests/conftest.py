"""Test-wide set-up: 8 fake CPU devices, one shared synthetic-data directory, one XLA cache.

``XLA_FLAGS`` must be set before jax is imported, so it happens here, at collection time.
Every test process (pytest-xdist workers and the subprocesses tests start) reads the
datasets from one directory per test session; ``build_dataset`` locks while building.

They also share a persistent compilation cache for the session (created by the first
process that loads this file, before xdist starts its workers, which inherit the
environment): the many tests and subprocesses that build the same quick-config programs
compile each once. The size limit turns on jax's file lock, so concurrent writers are safe.

Random numbers come from the unpartitionable threefry (``JAX_THREEFRY_PARTITIONABLE=0``,
also inherited by subprocesses): XLA:CPU compiles a model's random initialization about
three times faster with it. No test depends on the default's exact values (the goldens are
made from numpy inputs), and a comparison's two sides (devices, processes, resumed runs)
always draw from the same one. Tests that need the default set ``jax.threefry_partitionable``.
"""

import atexit
import os
import shutil
import tempfile

from jaxvision import cpu_devices  # imports nothing else (no jax)

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# 8 devices on 2 busy cores: a device may reach a collective long after the others.
os.environ["XLA_FLAGS"] = cpu_devices.with_collective_timeouts(os.environ["XLA_FLAGS"])
os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="jaxvision_xla_cache_")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                    JAX_COMPILATION_CACHE_MAX_SIZE=str(4 * 2**30))

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shared_data_dir(tmp_path_factory):
  """``JAXVISION_DATA_DIR`` for this session, shared by xdist workers and subprocesses."""
  root = tmp_path_factory.getbasetemp()
  # Under xdist each worker has its own basetemp below a common parent: share the parent's.
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  directory = root / "tensorflow_datasets"
  directory.mkdir(exist_ok=True)
  os.environ["JAXVISION_DATA_DIR"] = str(directory)
  return str(directory)
