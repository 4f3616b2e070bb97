"""The ``simclr`` task: its views, the cross-device train step, a quick run, the CIFAR config.

The step on 8 devices must equal the step on 1 device for the same global batch: the loss
is over the global batch (negatives gathered from every device) and BatchNorm normalizes
over the global batch. A loss over each device's rows alone would not (second test).
"""

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxvision import data, parallel, trainer
from jaxvision.models import simclr as simclr_model
from jaxvision.tasks import base

import configs.simclr_cifar10 as cifar_config
import configs.simclr_shapes as shapes_config


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


@pytest.fixture(scope="module")
def quick_batch():
  config = shapes_config.get_config("quick")
  return base.get_task(config, mesh_of(1)).train_batch(0)


def test_views_are_two_independent_augmentations(quick_batch):
  config = shapes_config.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  size = config.data.image_size
  assert quick_batch["views"].shape == (config.batch_size, 2, size, size, 3)
  assert quick_batch["views"].dtype == np.uint8 and "image" not in quick_batch
  views = quick_batch["views"].astype(np.int32)
  assert np.all(np.abs(views[:, 0] - views[:, 1]).mean(axis=(1, 2, 3)) > 0)
  np.testing.assert_array_equal(task.train_batch(0)["views"], quick_batch["views"])
  # The prefetching iterator (worker threads, pooled generators) reads the same views.
  batches = task.train_batches(0)
  for step in range(3):
    np.testing.assert_array_equal(next(batches)["views"], task.train_batch(step)["views"])
  # Evaluation rows (the probes' features) are the unaugmented images.
  probe_batch = next(task.eval_batches("validation", features=("image", "label")))
  standard = next(data.Pipeline(config.data, "validation", config.batch_size, config.seed,
                                train=False, features=("image", "label")).eval_batches())
  np.testing.assert_array_equal(probe_batch["image"], standard["image"])
  assert "views" not in probe_batch
  # The task's own evaluation reads fixed views of each held-out image.
  first = next(task.eval_batches("validation"))
  again = next(base.get_task(config, mesh_of(1)).eval_batches("validation"))
  np.testing.assert_array_equal(first["views"], again["views"])
  np.testing.assert_array_equal(first["image"], probe_batch["image"])


def one_step(config, batch, devices):
  """Loss, gradients, metrics and parameters after one train step on ``devices`` devices."""
  task = base.get_task(config, mesh_of(devices))
  state = trainer.init_state(task, config, batch)
  global_batch = parallel.global_batch(batch, task.mesh)
  grad_fn = jax.jit(jax.grad(task.loss_fn, has_aux=True))
  grads, (_, model_state) = grad_fn(state["params"], {"batch_stats": state["batch_stats"]},
                                    global_batch, jax.random.key(0))
  new_state, metrics = trainer.make_train_step(task, config)(state, global_batch)
  return jax.device_get((grads, model_state, metrics, new_state))


def test_train_step_on_8_devices_equals_1_device(quick_batch):
  config = shapes_config.get_config("quick")
  one = one_step(config, quick_batch, 1)
  eight = one_step(config, quick_batch, 8)
  grads, model_state, metrics, state = one
  grads8, model_state8, metrics8, state8 = eight
  for name in ("loss", "contrastive_accuracy", "grad_norm"):
    np.testing.assert_allclose(metrics8[name], metrics[name], rtol=1e-5, err_msg=name)
  assert metrics["loss"] > 0
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
  jax.tree.map(close, grads8, grads)
  jax.tree.map(close, model_state8, model_state)  # BatchNorm statistics of the global batch
  jax.tree.map(close, state8["params"], state["params"])
  assert int(state8["step"]) == 1


def test_a_per_device_loss_would_differ(quick_batch):
  """The same projections scored per device (each device's rows against its own rows only)
  give a different loss and different gradients from the global NT-Xent."""
  config = shapes_config.get_config("quick")
  task = base.get_task(config, mesh_of(8))
  temperature = config.model.temperature
  rng = np.random.default_rng(0)
  z_a = rng.normal(size=(32, 16)).astype(np.float32)
  z_b = (z_a + rng.normal(size=(32, 16))).astype(np.float32)
  sharding = parallel.data_sharding(task.mesh)
  z_a, z_b = jax.device_put(z_a, sharding), jax.device_put(z_b, sharding)

  @functools.partial(jax.shard_map, mesh=task.mesh,
                     in_specs=(P(parallel.DATA_AXIS), P(parallel.DATA_AXIS)), out_specs=P())
  def per_device_loss(z_a, z_b):
    return jax.lax.pmean(simclr_model.nt_xent(z_a, z_b, temperature), parallel.DATA_AXIS)

  global_fn = jax.jit(jax.value_and_grad(lambda a, b: task.contrastive_loss(a, b)[0]))
  local_fn = jax.jit(jax.value_and_grad(per_device_loss))
  global_loss, global_grad = global_fn(z_a, z_b)
  local_loss, local_grad = local_fn(z_a, z_b)
  np.testing.assert_allclose(float(global_loss),
                             float(simclr_model.nt_xent(np.asarray(z_a), np.asarray(z_b),
                                                        temperature)), rtol=1e-5)
  # 4 rows per device: 6 negatives per anchor instead of 62, so a much smaller loss.
  assert float(local_loss) < float(global_loss) - 1.0
  assert np.abs(np.asarray(local_grad) - np.asarray(global_grad)).max() > 1e-3


def test_quick_config_trains_with_falling_loss(tmp_path):
  config = shapes_config.get_config("quick")
  workdir = str(tmp_path)
  final = trainer.train_and_evaluate(config, workdir, mesh=mesh_of(2))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  assert len(losses) == config.total_steps // config.log_every
  chance = math.log(2 * config.batch_size - 1)  # uniform over the 2N - 1 candidates
  assert losses[-1] < losses[0] - 0.3, losses
  assert losses[-1] < chance - 0.3, (losses, chance)
  assert {"contrastive_accuracy", "contrastive_loss", "knn_accuracy",
          "linear_probe_accuracy"} <= set(final)
  assert final["num_examples"] == config.data.num_validation
  assert os.listdir(os.path.join(workdir, "pictures")) == ["step_0000040_views.png"]


def test_cifar10_config_steps_on_a_fake_batch():
  """The CIFAR-10 config's task, model and optimizer on a fake batch of its shapes (the
  dataset is never read: building the task and stepping it need no data)."""
  config = cifar_config.get_config()
  config.model.backbone = "resnet_tiny"  # Its shapes, a smaller network: a fast test.
  config.model.hidden = 64
  task = base.get_task(config, mesh_of(2))
  rng = np.random.default_rng(0)
  batch = {"views": rng.integers(0, 256, (8, 2, 32, 32, 3), dtype=np.uint8),
           "image_id": np.arange(8, dtype=np.int32)}
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  state, metrics = trainer.make_train_step(task, config)(
      state, parallel.global_batch(batch, task.mesh))
  assert np.isfinite(float(metrics["loss"])) and int(state["step"]) == 1
  assert config.data.name == "tfds:cifar10" and config.model.backbone_kwargs.stem == "small"
  assert config.optimizer.name == "lars" and config.optimizer.warmup_steps > 0


def test_lars_by_default_adam_selectable():
  default, adam = shapes_config.get_config(), shapes_config.get_config("adam")
  assert default.optimizer.name == "lars" and default.optimizer.schedule == "cosine"
  assert default.optimizer.warmup_steps > 0
  assert adam.optimizer.name == "adamw" and adam.optimizer.warmup_steps > 0
  with pytest.raises(ValueError, match="Unknown variant 'fast' of simclr_shapes"):
    shapes_config.get_config("fast")


def test_bad_config_and_batches_are_named():
  config = shapes_config.get_config("quick")
  config.augment.blur_sgima = (0.1, 1.0)
  with pytest.raises(ValueError, match=r"Unknown config.augment fields \['blur_sgima'\]"):
    base.get_task(config, mesh_of(1))
  config = shapes_config.get_config("quick")
  config.model.projection = 8
  with pytest.raises(ValueError, match=r"Unknown config.model fields \['projection'\]"):
    base.get_task(config, mesh_of(1))
  config = shapes_config.get_config("quick")
  config.augment.grayscale_probability = 1.5
  with pytest.raises(ValueError, match="grayscale_probability must be a probability"):
    base.get_task(config, mesh_of(1))
  task = base.get_task(shapes_config.get_config("quick"), mesh_of(1))
  with pytest.raises(ValueError, match=r"batch\['views'\] must be \[B, 2, H, W, C\]"):
    task.validate_batch({"views": np.zeros((4, 16, 16, 3), np.uint8)})
  with pytest.raises(ValueError, match=r"must be \[B, 16, 16, 3\]"):
    task.validate_batch({"views": np.zeros((4, 2, 32, 32, 3), np.uint8)})
