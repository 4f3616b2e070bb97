"""Test-wide set-up: 8 fake CPU devices and one shared synthetic-data directory.

``XLA_FLAGS`` must be set before jax is imported, so it happens here, at collection time.
Every test process (pytest-xdist workers and the subprocesses tests start) reads the
datasets from one directory per test session; ``build_dataset`` locks while building.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

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
