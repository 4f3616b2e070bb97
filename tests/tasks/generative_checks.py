"""Checks every generative task passes: data parallelism, bit-identical resume, restore.

Imported by the generative task tests (``tests/tasks/test_pixelcnn.py``, ...).
"""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import checkpoint, parallel, trainer
from jaxvision.tasks import base


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def check_one_step_on_8_devices_equals_1_device(config, loss="loss"):
  """One train step from the same state on 1 and on 8 devices gives the same state (and the
  same metric ``loss``)."""
  states, metrics = [], []
  for count in (1, 8):
    task = base.get_task(config, mesh_of(count))
    batch = task.train_batch(0)
    state = trainer.init_state(task, config, batch)
    state, step_metrics = trainer.make_train_step(task, config)(
        state, parallel.global_batch(batch, task.mesh))
    states.append(jax.device_get(state))
    metrics.append(jax.device_get(step_metrics))
  np.testing.assert_allclose(metrics[0][loss], metrics[1][loss], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *states)


def check_resume_is_bit_identical(config, reference, resumed, interrupt_step):
  """Runs ``config`` in ``resumed``, killed before step ``interrupt_step``, then resumes it;
  its final state must equal the uninterrupted run's in ``reference``."""
  task_class = type(base.get_task(config, mesh_of(1)))
  original = task_class.train_batches

  def failing_batches(self, start_step):
    for step, batch in enumerate(original(self, start_step), start_step):
      if step == interrupt_step:
        raise KeyboardInterrupt("killed")
      yield batch

  task_class.train_batches = failing_batches
  try:
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(config, resumed, mesh=mesh_of(2))
  finally:
    task_class.train_batches = original
  saved = checkpoint.Checkpointer(resumed).latest_step()
  assert saved is not None and 0 < saved < interrupt_step
  trainer.train_and_evaluate(config, resumed, mesh=mesh_of(2))
  sharding = parallel.replicated(mesh_of(1))
  expected, _, _ = checkpoint.restore_replicated(os.path.join(reference, "checkpoints"), sharding)
  actual, _, _ = checkpoint.restore_replicated(os.path.join(resumed, "checkpoints"), sharding)
  assert int(actual["step"]) == config.total_steps
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(expected), jax.device_get(actual))
  return expected


def check_one_step_on_a_fake_batch(config):
  """The config's task and one train step on a random binary batch of its image shape (for
  configs whose dataset is not in the tests: MNIST); no data is read."""
  assert config.data.name == "tfds:mnist" and config.data.image_size == 28
  task = base.get_task(config, mesh_of(1))
  rng = np.random.default_rng(0)
  batch = {"image": (rng.random((8, *task.image_shape)) < 0.2).astype(np.uint8) * 255,
           "label": rng.integers(0, 10, 8).astype(np.int32)}
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  state, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and int(state["step"]) == 1


def check_one_step_on_a_fake_8bit_batch(config):
  """The config's task and one train step on a random 8-bit batch of its image shape (for
  configs whose dataset is not in the tests: CIFAR-10); returns the step's metrics."""
  task = base.get_task(config, mesh_of(1))
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (4, *task.image_shape)).astype(np.uint8),
           "label": rng.integers(0, 10, 4).astype(np.int32)}
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  state, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(0))
  metrics = {name: float(value) for name, value in jax.device_get(metrics).items()
             if np.ndim(value) == 0}
  assert np.isfinite(metrics["loss"]) and int(state["step"]) == 1
  return metrics
