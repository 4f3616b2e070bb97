"""DCGAN on the two-network state: the losses, the alternating updates, parallelism, resume."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import checkpoint, trainer
from jaxvision.models.dcgan import Discriminator, Generator
from jaxvision.tasks import base, dcgan

import generative_checks
from generative_checks import mesh_of, read_metrics

import configs.dcgan_shapes as shapes_config


def test_losses_are_the_logistic_and_non_saturating_ones():
  real, fake = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
  sigmoid = jax.nn.sigmoid
  expected_d = (-np.log(sigmoid(real)).mean() - np.log(1 - sigmoid(fake)).mean())
  np.testing.assert_allclose(dcgan.discriminator_loss(real, fake), expected_d, rtol=1e-6)
  np.testing.assert_allclose(dcgan.non_saturating_generator_loss(fake),
                             -np.log(sigmoid(fake)).mean(), rtol=1e-6)
  # Non-saturating: a confident discriminator (D(G(z)) -> 0) still gives the generator a
  # gradient of about -1 per logit, where log(1 - D(G(z))) would give about 0.
  grad = jax.grad(dcgan.non_saturating_generator_loss)(jnp.array([-10.0]))
  np.testing.assert_allclose(grad, [-1.0], atol=1e-3)


def test_step_updates_the_discriminator_then_the_generator_against_it():
  config = shapes_config.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1)).astype(np.uint8)
  state = task.init_state(jax.random.key(0), {"image": images})
  new_state, metrics = jax.jit(task.train_step)(state, {"image": images}, jax.random.key(1))
  for name in ("generator", "discriminator"):
    assert not np.array_equal(jax.tree.leaves(state[name]["params"])[0],
                              jax.tree.leaves(new_state[name]["params"])[0]), name
  # The reported generator loss is measured against the updated discriminator.
  _, g_key = jax.random.split(jax.random.key(1))
  fake = task.generate(state["generator"]["params"], task.latents(g_key, 8))
  np.testing.assert_allclose(
      metrics["generator_loss"], dcgan.non_saturating_generator_loss(
          task.discriminate(new_state["discriminator"]["params"], fake)), rtol=1e-5)
  assert int(new_state["step"]) == 1


def test_image_size_must_be_a_multiple_of_4():
  with pytest.raises(ValueError, match="multiple of 4"):
    Generator(image_size=18).init(jax.random.key(0), jnp.zeros((1, 4)))


def test_one_step_on_8_devices_equals_1_device():
  generative_checks.check_one_step_on_8_devices_equals_1_device(
      shapes_config.get_config("quick"), loss="discriminator_loss")


def test_quick_config_trains_resumes_and_restores(tmp_path):
  config = shapes_config.get_config("quick")
  reference = str(tmp_path / "reference")
  trainer.train_and_evaluate(config, reference, mesh=mesh_of(2))
  lines = read_metrics(reference)
  assert all(np.isfinite(line["train/generator_loss"]) for line in lines
             if "train/generator_loss" in line)
  assert any(name.endswith("_samples.png")
             for name in os.listdir(os.path.join(reference, "pictures")))
  expected = generative_checks.check_resume_is_bit_identical(
      config, reference, str(tmp_path / "resumed"), interrupt_step=15)
  _, generator, variables = checkpoint.restore_for_inference(reference)
  assert isinstance(generator, Generator)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               jax.device_get(expected["generator"]["params"]))
  _, discriminator, variables = checkpoint.restore_for_inference(reference,
                                                                 network="discriminator")
  assert isinstance(discriminator, Discriminator)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               jax.device_get(expected["discriminator"]["params"]))
