"""The VAE: its bounds (ELBO, IWAE) and their ordering, KL annealing and free bits, the
discretized logistic, training, resume and restore."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import checkpoint, trainer
from jaxvision.models.vae import VAE
from jaxvision.tasks import base, generative

import generative_checks
from generative_checks import mesh_of, read_metrics

import configs.vae_mnist as mnist_config
import configs.vae_shapes as shapes_config


def small_config(**model):
  config = shapes_config.get_config("quick")
  config.model.update(model)
  return config


@pytest.fixture(scope="module")
def task_and_batch():
  """A VAE briefly fitted to random binary images (so its posterior is not the prior)."""
  config = small_config(iwae_samples=256, iwae_chunk=64)
  task = base.get_task(config, mesh_of(1))
  rng = np.random.default_rng(0)
  probability = rng.random((1, 16, 16, 1))
  images = (rng.random((16, 16, 16, 1)) < probability).astype(np.uint8) * 255
  batch = {"image": images, "step": jnp.asarray(100)}
  state = task.init_state(jax.random.key(0), batch)
  step = jax.jit(task.train_step)
  for i in range(30):
    state, _ = step(state, {"image": images}, jax.random.key(i))
  return task, {"params": state["params"]}, {"image": images}


def analytic_elbo(task, variables, batch, num_samples=2000):
  """``E_q[log p(x|z)] - KL`` per image, its expectation by Monte Carlo (many samples)."""
  levels = task.levels(jnp.asarray(batch["image"]))
  noise = jax.random.normal(jax.random.key(99), (num_samples, len(levels), 4))
  reconstruction = jax.vmap(lambda eps: task.elbo_terms(variables, levels, eps)[0])(noise)
  _, kl = task.elbo_terms(variables, levels, noise[0])
  return np.asarray(reconstruction.mean(0) - kl.sum(-1))


def test_iwae_with_one_sample_is_an_unbiased_elbo_estimate(task_and_batch):
  """k = 1: one log weight per image, whose mean over draws is the ELBO."""
  task, variables, batch = task_and_batch
  task.config.model.update(iwae_samples=1, iwae_chunk=1)  # read when traced
  try:
    keys = jax.random.split(jax.random.key(0), 400)
    estimates = np.asarray(jax.jit(jax.vmap(
        lambda key: task.log_likelihood(variables, batch, key)))(keys))
  finally:
    task.config.model.update(iwae_samples=256, iwae_chunk=64)
  elbo = analytic_elbo(task, variables, batch)
  standard_error = estimates.std(0) / math.sqrt(len(estimates))
  assert np.all(np.abs(estimates.mean(0) - elbo) < 4 * standard_error + 1e-3)
  # The single log weight is log p(x, z) - log q(z | x) for the drawn z.
  levels = task.levels(jnp.asarray(batch["image"]))
  noise = jax.random.normal(jax.random.key(7), (1, 16, 4))
  mean, log_variance = task.encode(variables, levels)
  z = mean + jnp.exp(0.5 * log_variance) * noise[0]
  reconstruction = task.reconstruction_log_prob(task.decode(variables, z), levels)
  log_prior = -0.5 * jnp.sum(z ** 2 + math.log(2 * math.pi), -1)
  log_posterior = -0.5 * jnp.sum((z - mean) ** 2 / jnp.exp(log_variance) + log_variance
                                 + math.log(2 * math.pi), -1)
  np.testing.assert_allclose(task.log_weights(variables, levels, noise)[0],
                             reconstruction + log_prior - log_posterior, rtol=1e-5)


def test_iwae_nll_is_below_the_negative_elbo_and_falls_with_k(task_and_batch):
  task, variables, batch = task_and_batch
  elbo = analytic_elbo(task, variables, batch)
  nll_256 = -np.asarray(task.log_likelihood(variables, batch, jax.random.key(1)))
  levels = task.levels(jnp.asarray(batch["image"]))
  weights = task.log_weights(variables, levels,
                             jax.random.normal(jax.random.key(2), (256, 16, 4)))
  nll_1 = -np.asarray(weights).mean(0)  # k = 1, averaged over 256 draws
  nll_16 = -np.asarray(jax.nn.logsumexp(weights.reshape(16, 16, 16), axis=1)
                       - math.log(16)).mean(0)
  assert nll_256.mean() <= -elbo.mean()
  assert nll_256.mean() < nll_16.mean() < nll_1.mean()
  assert nll_256.mean() < -elbo.mean() - 0.1  # a real gain, not noise


def test_kl_annealing_and_free_bits():
  task = base.get_task(small_config(kl_warmup_steps=10, free_bits=50.0), mesh_of(1))
  images = np.zeros((4, 16, 16, 1), np.uint8)
  params = task.init_variables(jax.random.key(0), {"image": images})["params"]
  for step, weight in ((0, 0.0), (5, 0.5), (10, 1.0), (30, 1.0)):
    loss, (metrics, _) = task.loss_fn(params, {}, {"image": images, "step": jnp.asarray(step)},
                                      jax.random.key(1))
    assert float(metrics["kl_weight"]) == weight
    # Every latent's KL is below 50 nats: the KL term is the free-bits floor.
    np.testing.assert_allclose(float(loss), -float(metrics["reconstruction_nats"])
                               + weight * 4 * 50.0, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["elbo_nats"]), float(
        metrics["reconstruction_nats"] - metrics["kl_nats"]), rtol=1e-5)


def test_discretized_logistic_is_a_distribution_over_256_levels():
  levels = jnp.arange(256)[:, None]
  mean = jnp.array([-1.2, -0.3, 0.0, 0.7, 0.99])
  log_scale = jnp.array([-4.0, -2.0, 0.0, -3.0, -6.0])
  log_p = generative.discretized_logistic_log_prob(levels, mean, log_scale)
  np.testing.assert_allclose(np.exp(np.asarray(log_p, np.float64)).sum(0), 1.0, rtol=1e-4)
  assert int(jnp.argmax(log_p[:, 3])) == round((0.7 + 1) * 127.5)


def test_bad_configs_are_named():
  with pytest.raises(ValueError, match="multiple of model.iwae_chunk"):
    base.get_task(small_config(iwae_samples=10, iwae_chunk=4), mesh_of(1))
  with pytest.raises(ValueError, match="free_bits"):
    base.get_task(small_config(free_bits=-1.0), mesh_of(1))
  config = small_config()
  config.data.image_size = 18
  task = base.get_task(config, mesh_of(1))
  with pytest.raises(ValueError, match="multiple of 4"):
    task.init_variables(jax.random.key(0), {"image": np.zeros((1, 18, 18, 1), np.uint8)})


def test_8bit_decoder_trains_one_step():
  config = small_config(pixels="8bit")
  task = base.get_task(config, mesh_of(1))
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1)).astype(np.uint8)
  task.validate_batch({"image": images})
  state = task.init_state(jax.random.key(0), {"image": images})
  state, metrics = jax.jit(task.train_step)(state, {"image": images}, jax.random.key(1))
  assert np.isfinite(float(metrics["loss"]))
  assert float(metrics["bits_per_dim"]) > 1.0  # uniform noise: no model compresses it much
  samples = task.sample({"params": state["params"]}, jax.random.key(2), 3)
  assert samples.shape == (3, 16, 16, 1)


@pytest.mark.parametrize("pixels, output", [("binary", "logistic"), ("8bit", "logistic"),
                                             ("8bit", "logistic_mixture")])
def test_drawn_samples_follow_the_decoders_distribution(pixels, output):
  """``sample_pixels="draw"``: pixel levels whose frequencies are the decoder's pmf (the one
  the likelihoods use); ``"mean"``: the grey mean images."""
  config = small_config(pixels=pixels, output=output, num_mixtures=3)
  task = base.get_task(config, mesh_of(1))
  variables = task.init_variables(jax.random.key(0), {"image": np.zeros((1, 16, 16, 1), np.uint8)})
  params = task.decode(variables, jax.random.normal(
      jax.random.key(1), (1, config.model.latents)))[:, :2, :2]
  draws = np.asarray(jax.vmap(lambda key: task.draw_image(key, params))(
      jax.random.split(jax.random.key(2), 4000)))  # [4000, 1, 2, 2, 1]
  top = task.num_levels - 1
  levels = np.round(draws * top / 255.0).astype(np.int64)
  np.testing.assert_array_equal(levels * 255.0 / top, draws)  # exactly on the levels
  # Coarse bins of levels, so that 4000 draws estimate each bin's mass well.
  bins = 2 if pixels == "binary" else 16
  for row, column in np.ndindex(2, 2):
    # The pixel's pmf: vary its level, the other three fixed (their terms cancel).
    log_p = np.array([float(task.reconstruction_log_prob(params, jnp.asarray(
        np.where(np.arange(4).reshape(2, 2) == 2 * row + column, level, 0))[None, :, :, None])[0])
                      for level in range(task.num_levels)])
    pmf = np.exp(log_p - log_p.max())
    pmf = (pmf / pmf.sum()).reshape(bins, -1).sum(1)
    frequencies = np.bincount(levels[:, 0, row, column, 0] * bins // task.num_levels,
                              minlength=bins) / len(levels)
    assert 0.5 * np.abs(frequencies - pmf).sum() < 0.04, (row, column, frequencies, pmf)

  samples = {}
  for mode in ("mean", "draw"):
    sampler = base.get_task(small_config(pixels=pixels, output=output, num_mixtures=3,
                                         sample_pixels=mode), mesh_of(1))
    samples[mode] = np.asarray(sampler.sample(variables, jax.random.key(3), 2))
  assert samples["draw"].shape == samples["mean"].shape == (2, 16, 16, 1)
  if pixels == "binary":
    assert set(np.unique(samples["draw"])) <= {0.0, 255.0}
    assert len(np.unique(samples["mean"])) > 2  # grey means
  with pytest.raises(ValueError, match="sample_pixels"):
    base.get_task(small_config(sample_pixels="mode"), mesh_of(1))


def test_one_step_on_8_devices_equals_1_device():
  generative_checks.check_one_step_on_8_devices_equals_1_device(small_config())


def test_mnist_config_trains_one_step_on_a_fake_batch():
  generative_checks.check_one_step_on_a_fake_batch(mnist_config.get_config("quick"))


def test_quick_config_trains_resumes_and_restores(tmp_path):
  config = small_config()
  reference = str(tmp_path / "reference")
  trainer.train_and_evaluate(config, reference, mesh=mesh_of(2))
  lines = read_metrics(reference)
  elbos = [line["train/elbo_nats"] for line in lines if "train/elbo_nats" in line]
  assert elbos[-1] > elbos[0] + 5, elbos
  final = [line for line in lines if "eval/nll_nats" in line][-1]
  assert final["step"] == config.total_steps
  assert final["eval/nll_nats"] < 16 * 16 * np.log(2)
  # Both are estimates: the IWAE bound (k = 8) is at most -ELBO up to sampling noise.
  assert final["eval/nll_nats"] < -final["eval/elbo_nats"] + 2.0
  pictures = os.listdir(os.path.join(reference, "pictures"))
  for kind in ("reconstructions", "interpolations", "samples"):
    assert any(name.endswith(f"_{kind}.png") for name in pictures), (kind, pictures)

  expected = generative_checks.check_resume_is_bit_identical(
      config, reference, str(tmp_path / "resumed"), interrupt_step=45)
  restored_config, model, variables = checkpoint.restore_for_inference(reference)
  assert restored_config.task == "vae" and isinstance(model, VAE)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               jax.device_get(expected["params"]))
