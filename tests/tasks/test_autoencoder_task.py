"""The ``autoencoder`` task: the reconstruction error falls, pictures, bad settings."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import parallel, trainer
from jaxvision.tasks import autoencoder, base

import configs.autoencoder_shapes as ae_config


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


def test_reconstruction_errors_are_per_image_mse_in_unit_pixels():
  images = np.zeros((2, 2, 2, 1), np.uint8)
  images[1] = 255
  reconstructions = jnp.full((2, 2, 2, 1), 0.5)
  np.testing.assert_allclose(np.asarray(autoencoder.reconstruction_errors(images,
                                                                          reconstructions)),
                             [0.25, 0.25])


def test_quick_config_reconstructs_better_after_training(tmp_path):
  config = ae_config.get_config("quick")
  workdir = str(tmp_path)
  final = trainer.train_and_evaluate(config, workdir, mesh=mesh_of(2))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  assert len(losses) == config.total_steps // config.log_every
  assert losses[-1] < 0.95 * losses[0], losses
  mse = {line["step"]: line["eval/reconstruction_mse"] for line in lines
         if "eval/reconstruction_mse" in line}
  assert sorted(mse) == [0, config.total_steps]
  assert mse[config.total_steps] < 0.95 * mse[0], mse
  assert {"knn_accuracy", "linear_probe_accuracy"} <= set(final)
  pictures = sorted(os.listdir(os.path.join(workdir, "pictures")))
  assert pictures == ["step_0000000_reconstructions.png", "step_0000040_reconstructions.png"]


def test_predict_and_bad_settings():
  config = ae_config.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  images = np.zeros((2, 16, 16, 3), np.uint8)
  variables = task.init_variables(jax.random.key(0), {"image": images})
  assert task.predict(variables, images)["reconstruction"].shape == (2, 16, 16, 3)
  with pytest.raises(ValueError, match=r"must be \[B, 16, 16, 3\]"):
    task.predict(variables, np.zeros((2, 8, 8, 3), np.uint8))
  config = ae_config.get_config("quick")
  config.data.image_size = 20
  with pytest.raises(ValueError, match="image_size=20 must be a multiple of the encoder's "
                                       "stride 8"):
    base.get_task(config, mesh_of(1))
  config = ae_config.get_config("quick")
  config.model.latent = 4
  with pytest.raises(ValueError, match=r"Unknown config.model fields \['latent'\]"):
    base.get_task(config, mesh_of(1))
