"""Runs the real command line in fresh processes: multi-host training and kill -9 recovery."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxvision import checkpoint
from jaxvision.data import build_dataset

import configs.classify_localize_shapes as classify_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "configs/classify_localize_shapes.py:quick"


def _env(devices):
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _params(workdir):
  return jax.device_get(checkpoint.restore_for_inference(workdir)[2])


def _assert_trees_equal(a, b, **tolerance):
  check = np.testing.assert_allclose if tolerance else np.testing.assert_array_equal
  jax.tree.map(lambda x, y: check(x, y, **tolerance), a, b)


@pytest.fixture(scope="module", autouse=True)
def built_data():
  """Build the quick dataset once, before several processes read it."""
  build_dataset(classify_config.get_config("quick").data)


@pytest.mark.slow
def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path):
  # SGD: see tests/test_trainer.py::parity_config for why Adam would blur the comparison.
  args = ["--config", QUICK, "--config.total_steps=4", "--config.eval_every=4",
          "--config.checkpoint_every=4", "--config.optimizer.name=sgd",
          "--config.optimizer.learning_rate=0.01"]
  single = tmp_path / "single"
  subprocess.run([sys.executable, "-m", "jaxvision.train", *args, f"--workdir={single}"],
                 env=_env(4), cwd=ROOT, check=True, timeout=600)
  multi = tmp_path / "multi"
  subprocess.run(["bash", "launch/local.sh", "2", *args, f"--workdir={multi}"],
                 env=_env(2), cwd=ROOT, check=True, timeout=600)
  # Gloo's cross-process all-reduce sums in another order than one process's reduction;
  # after 4 steps that leaves differences of about 1e-5 relative, a few times 1e-5 at most.
  _assert_trees_equal(_params(single), _params(multi), rtol=1e-3, atol=1e-4)
  # Only process 0 wrote metrics, and its eval saw the whole split.
  with open(multi / "metrics.jsonl") as f:
    assert sum('"eval/accuracy"' in line for line in f) == 1


def _checkpoint_entries(workdir):
  directory = os.path.join(workdir, "checkpoints")
  return os.listdir(directory) if os.path.isdir(directory) else []


@pytest.mark.slow
def test_sigkill_and_restart_gives_the_uninterrupted_parameters(tmp_path):
  args = [sys.executable, "-m", "jaxvision.train", "--config", QUICK,
          "--config.total_steps=24", "--config.checkpoint_every=1", "--config.eval_every=24",
          "--config.log_every=4"]
  reference = tmp_path / "reference"
  # The restarts reuse the reference run's compiled programs from the persistent XLA cache
  # (tests/conftest.py): the same HLO gives the same executable, so this costs no exactness.
  subprocess.run([*args, f"--workdir={reference}"], env=_env(1), cwd=ROOT, check=True,
                 timeout=600)

  resumed = tmp_path / "resumed"
  kills_during_save = kills = 0
  for _ in range(6):
    if kills >= 2 and kills_during_save >= 1:
      break
    process = subprocess.Popen([*args, f"--workdir={resumed}"], env=_env(1), cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = set(_checkpoint_entries(resumed))
    deadline = time.time() + 300
    # Kill as soon as a new checkpoint starts being written: orbax writes into a temporary
    # directory and renames it when done, so this usually lands in the middle of a save.
    while process.poll() is None and time.time() < deadline:
      new = set(_checkpoint_entries(resumed)) - before
      if any("tmp" in entry for entry in new) or len(new) >= 2:
        process.send_signal(signal.SIGKILL)
        kills += 1
        kills_during_save += any("tmp" in entry for entry in new)
        break
      time.sleep(0.002)
    process.wait()
    if process.returncode == 0:
      break
  assert kills >= 2, "the run finished before it could be interrupted"
  assert kills_during_save >= 1, "no kill landed inside a checkpoint save"
  subprocess.run([*args, f"--workdir={resumed}"], env=_env(1), cwd=ROOT, check=True, timeout=600)
  assert checkpoint.Checkpointer(str(resumed)).latest_step() == 24
  _assert_trees_equal(_params(reference), _params(resumed))
