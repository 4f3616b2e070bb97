"""The ``context_prediction`` task: its patch pairs, a learnable step, the quick config."""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import parallel, trainer
from jaxvision.data import transforms
from jaxvision.models import context_prediction as cp
from jaxvision.tasks import base

import configs.context_prediction_shapes as cp_config


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


def test_rows_pair_the_centre_with_the_neighbour_at_their_position():
  config = cp_config.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  size = config.model.grid.patch_size
  held_out = next(task.eval_batches("validation"))  # unaugmented image + fixed pretext row
  for i in range(8):
    image, grid = held_out["image"][i], held_out["grid"][i]
    centre, neighbour = held_out["pair"][i]
    cell = cp.NEIGHBOURS[held_out["position"][i]]
    for patch, (row, col) in ((centre, grid[cp.CENTRE]), (neighbour, grid[cell])):
      np.testing.assert_array_equal(patch, image[row:row + size, col:col + size])
    # The cells lie on a 3 x 3 grid, patch_size + gap apart, up to the jitter.
    offsets = grid.reshape(3, 3, 2) - grid[cp.CENTRE]
    step = size + config.model.grid.gap
    expected = (np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij"), -1) * step)
    assert np.abs(offsets - expected).max() <= 2 * config.model.grid.jitter
  assert set(np.unique(held_out["position"])) <= set(range(8))
  again = next(base.get_task(config, mesh_of(1)).eval_batches("validation"))
  np.testing.assert_array_equal(again["pair"], held_out["pair"])
  train = task.train_batch(0)
  assert train["pair"].shape == (config.batch_size, 2, size, size, 3)
  assert "image" not in train and len(np.unique(train["position"])) > 1


def test_steps_on_one_batch_learn_its_positions():
  """The labels and the two towers are wired right: repeated steps on one batch fit it."""
  config = cp_config.get_config("quick")
  config.optimizer.learning_rate = 1e-2
  config.model.colour_guard = "drop"
  task = base.get_task(config, mesh_of(2))
  batch = task.train_batch(0)
  assert not np.all(batch["kept_channel"] == 0)
  state = trainer.init_state(task, config, batch)
  step = trainer.make_train_step(task, config)
  global_batch = parallel.global_batch(batch, task.mesh)
  losses = []
  for _ in range(30):
    state, metrics = step(state, global_batch)
    losses.append(float(metrics["loss"]))
  assert losses[0] > 1.9  # about log(8) = 2.08 at the start
  assert losses[-1] < 0.5 * losses[0], losses
  assert float(metrics["position_accuracy"]) > 0.8


def test_quick_config_trains_and_evaluates(tmp_path):
  config = cp_config.get_config("quick")
  workdir = str(tmp_path)
  final = trainer.train_and_evaluate(config, workdir, mesh=mesh_of(2))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  assert len(losses) == config.total_steps // config.log_every
  assert losses[-1] < losses[0], losses
  assert {"position_accuracy", "knn_accuracy", "linear_probe_accuracy"} <= set(final)
  assert 0 <= final["position_accuracy"] <= 1
  assert final["num_examples"] == config.data.num_validation
  assert os.listdir(os.path.join(workdir, "pictures")) == ["step_0000040_positions.png"]


def test_bad_settings_are_named():
  config = cp_config.get_config("quick")
  config.model.colour_guard = "greyscale"
  with pytest.raises(ValueError, match="Unknown model.colour_guard 'greyscale'"):
    base.get_task(config, mesh_of(1))
  config = cp_config.get_config("quick")
  config.model.grid.patch_size = 12  # 3 * 12 + 2 * 2 + 2 * 1 = 42 > 32 pixels
  with pytest.raises(ValueError, match="spans 42 pixels, but the image is 32 x 32"):
    base.get_task(config, mesh_of(1))
  config = cp_config.get_config("quick")
  config.model.grid.gapp = 2
  with pytest.raises(ValueError, match=r"Unknown config.model.grid fields \['gapp'\]"):
    base.get_task(config, mesh_of(1))
  task = base.get_task(cp_config.get_config("quick"), mesh_of(1))
  with pytest.raises(ValueError, match=r"batch\['pair'\] must be \[B, 2, 8, 8, 3\]"):
    task.validate_batch({"pair": np.zeros((2, 2, 16, 16, 3), np.uint8),
                         "position": np.zeros(2, np.int32)})
  with pytest.raises(ValueError, match=r"batch\['position'\] must lie in \[0, 8\)"):
    task.validate_batch({"pair": np.zeros((2, 2, 8, 8, 3), np.uint8),
                         "position": np.array([0, 8], np.int32)})


def test_patch_grid_is_the_shared_transform():
  """The task draws its grids with ``data.transforms.patch_grid`` (one implementation)."""
  config = cp_config.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
  row = task.pretext_row(image, np.random.default_rng(5))
  patches, corners = transforms.patch_grid(image, np.random.default_rng(5), 3, patch_size=8,
                                           gap=2, jitter=1)
  np.testing.assert_array_equal(row["grid"], corners)
  np.testing.assert_array_equal(row["pair"][0], patches[cp.CENTRE])
