"""Devices, meshes, shardings and multi-host start-up.

One global mesh spans every device of every host with a single ``data`` axis: batches
are sharded along it, parameters are replicated. Each host feeds only its own rows of the
global batch; :func:`global_batch` stitches them into global ``jax.Array``s.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Set by launch/local.sh (and usable by any launcher that does not set a cluster environment).
_ENV_COORDINATOR = "JAXVISION_COORDINATOR"
_ENV_NUM_PROCESSES = "JAXVISION_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXVISION_PROCESS_ID"
_ENV_AUTO = "JAXVISION_DISTRIBUTED"  # "1": let jax.distributed detect the cluster.


def initialize() -> None:
  """Joins the multi-host runtime when a launcher asks for one; no-op otherwise.

  - explicit: ``JAXVISION_COORDINATOR`` (``host:port``), ``JAXVISION_NUM_PROCESSES`` and
    ``JAXVISION_PROCESS_ID`` (``launch/local.sh`` sets them);
  - ``JAXVISION_DISTRIBUTED=1`` (``launch/tpu_pod.sh``), or SLURM with ``SLURM_NTASKS`` > 1
    (``launch/slurm.sbatch``): ``jax.distributed.initialize()`` detects the cluster (Cloud TPU
    pod, SLURM, ...) itself.

  Must run before anything touches ``jax.devices()``. Safe to call twice.
  """
  if jax.distributed.is_initialized():
    return
  if os.environ.get(_ENV_COORDINATOR):
    missing = [k for k in (_ENV_NUM_PROCESSES, _ENV_PROCESS_ID) if not os.environ.get(k)]
    if missing:
      raise ValueError(f"{_ENV_COORDINATOR} is set but {missing} are not; set all three "
                       "or use launch/local.sh.")
    jax.distributed.initialize(os.environ[_ENV_COORDINATOR],
                               num_processes=int(os.environ[_ENV_NUM_PROCESSES]),
                               process_id=int(os.environ[_ENV_PROCESS_ID]))
  elif os.environ.get(_ENV_AUTO) == "1" or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()


def make_mesh() -> Mesh:
  """A 1-D ``data`` mesh over all devices, grouped by host.

  Devices are ordered by (process, id) so that host ``p`` owns the contiguous rows
  ``[p * B / P, (p + 1) * B / P)`` of every global batch, the slice the data pipeline loads.
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over all devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """A full copy on every device (parameters, optimizer state, metrics)."""
  return NamedSharding(mesh, P())


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """Raises a ValueError unless the global batch splits evenly over devices and hosts."""
  if global_batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {global_batch_size} is not divisible by the "
                     f"{mesh.devices.size} devices; choose a multiple of {mesh.devices.size}.")


def global_batch(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds global data-sharded arrays from this host's rows of the batch."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def to_host(tree: Any) -> Any:
  """Full numpy copies of (possibly multi-host sharded) global arrays, on every host."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, jax.device_get(tree))
  return multihost_utils.process_allgather(tree, tiled=True)


def is_main_process() -> bool:
  """Only process 0 logs, writes metrics and pictures."""
  return jax.process_index() == 0
