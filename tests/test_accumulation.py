"""Gradient accumulation (``optimizer.accumulate_steps``): k micro-batches per update give the
one-big-batch update, with the step, the schedule and the optimizer's counters counting
updates; configs it cannot honour are errors naming the fix."""

import importlib.util
import os

import jax
import numpy as np
import pytest

from jaxvision import parallel, trainer
from jaxvision.tasks import get_task

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


def _config(name, arg="quick"):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _classify_config(accumulate_steps):
  config = _config("classify_localize_shapes")
  config.model.num_classes = 4
  # GroupNorm normalizes each example by itself, so the loss is a mean over independent
  # examples and k micro-batches must give exactly the big batch's mean gradient. (BatchNorm
  # would normalize each micro-batch by its own statistics: a different, if similar, loss.)
  config.model.backbone_kwargs.norm = "group"
  # SGD with momentum: the update is linear in the gradient, so the comparison measures the
  # accumulation itself (Adam's first update, g / |g|, would amplify rounding in tiny gradients).
  config.optimizer.update(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-3,
                          warmup_steps=1, schedule="cosine", accumulate_steps=accumulate_steps)
  return config


def _batch(rng, batch_size, image_size, num_classes):
  images = rng.integers(0, 255, (batch_size, image_size, image_size, 3)).astype(np.uint8)
  corners = rng.uniform(0, image_size / 2, (batch_size, 1, 2))
  boxes = np.concatenate([corners, corners + rng.uniform(8, image_size / 2, (batch_size, 1, 2))],
                         -1).astype(np.float32)
  return {"image": images, "boxes": boxes,
          "labels": rng.integers(0, num_classes, (batch_size, 1)).astype(np.int32),
          "box_valid": np.ones((batch_size, 1), bool)}


def _train(config, batches):
  """The trainer's jitted, sharded step on every device, from the seed's initial state."""
  task = get_task(config)
  state = trainer.init_state(task, config, batches[0])
  initial = jax.device_get(state["params"])
  step = trainer.make_train_step(task, config)
  metrics = []
  for batch in batches:
    state, step_metrics = step(state, parallel.global_batch(batch, task.mesh))
    metrics.append(jax.device_get(step_metrics))
  return initial, jax.device_get(state), metrics


def test_accumulated_steps_equal_one_big_batch():
  rng = np.random.default_rng(0)
  big = _classify_config(1)
  # Every micro-batch spans all (8 test) devices: 16 = 2 micro-batches x 8 devices.
  assert big.batch_size == 16 and jax.device_count() == 8
  batches = [_batch(rng, big.batch_size, big.data.image_size, 4) for _ in range(2)]
  initial, expected, expected_metrics = _train(big, batches)
  _, state, metrics = _train(_classify_config(2), batches)

  # Two updates, whatever the micro-batches: the step, the schedule and MultiSteps' counters.
  assert int(state["step"]) == 2
  assert int(state["opt_state"].gradient_step) == 2 and int(state["opt_state"].mini_step) == 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7),
               state["params"], expected["params"])
  for got, want in zip(metrics, expected_metrics):
    for name in ("loss", "grad_norm", "learning_rate", "class_loss", "box_loss"):
      np.testing.assert_allclose(got[name], want[name], rtol=2e-5, err_msg=name)
  # The updates did something: the parameters moved from their initial values.
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(initial),
                                                   jax.tree.leaves(state["params"]))]
  assert sum(moved) > len(moved) // 2


def test_batch_size_not_divisible_by_accumulation_is_an_error():
  config = _classify_config(3)
  with pytest.raises(ValueError, match=r"batch_size=16 must be a multiple of "
                                       r"optimizer.accumulate_steps=3 x 8 devices"):
    get_task(config)
  config.optimizer.accumulate_steps = 0
  with pytest.raises(ValueError, match="accumulate_steps must be a positive integer"):
    get_task(config)


def test_tasks_whose_step_cannot_be_split_refuse_accumulation():
  config = _config("simclr_shapes")
  config.optimizer.accumulate_steps = 2
  with pytest.raises(ValueError, match="set optimizer.accumulate_steps=1"):
    get_task(config)
