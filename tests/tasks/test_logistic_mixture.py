"""The discretized logistic mixture (PixelCNN++) output: a normalized pmf equal to the
formula, sampling that follows it, causal networks, samplers that agree, CIFAR-10 configs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision.models import pixelcnn as pixelcnn_lib
from jaxvision.models.pixelrnn import PixelRNN
from jaxvision.tasks import base, generative

import generative_checks
from generative_checks import mesh_of

import configs.pixelcnn_cifar10 as pixelcnn_cifar10
import configs.pixelcnn_shapes as pixelcnn_shapes
import configs.pixelrnn_cifar10 as pixelrnn_cifar10
import configs.pixelrnn_shapes as pixelrnn_shapes
import configs.vae_cifar10 as vae_cifar10


# Jitted once per shape: eager op-by-op dispatch would dominate these tests' time.
log_prob = jax.jit(generative.discretized_logistic_mixture_log_prob,
                   static_argnums=(2, 3))
sample_mixture = jax.jit(generative.sample_discretized_logistic_mixture,
                         static_argnums=(2, 3, 4))


def random_params(key, lead, channels, mixtures, spread=3.0):
  """Mixture parameters with wide means (outside [-1, 1] too), tiny to large scales."""
  size = pixelcnn_lib.mixture_num_params(channels, mixtures)
  return spread * jax.random.normal(key, (*lead, size))


def all_pixels(channels, num_levels):
  """Every pixel ``[num_levels ** channels, channels]``, channel 0 slowest."""
  grids = np.meshgrid(*[np.arange(num_levels)] * channels, indexing="ij")
  return np.stack([g.ravel() for g in grids], -1).astype(np.int32)


@pytest.mark.parametrize("channels,num_levels", [(1, 256), (3, 256), (3, 8)])
def test_pmf_sums_to_one_over_every_pixel(channels, num_levels):
  if channels == 3 and num_levels == 256:
    # 256^3 pixels: sum channel by channel instead, for random values of the earlier
    # channels (each conditional must itself sum to one over the 256 values).
    params = random_params(jax.random.key(0), (64,), 3, 5)
    earlier = jax.random.randint(jax.random.key(1), (64, 1, 2), 0, 256)
    values = jnp.arange(256)[None, :, None]
    for c in range(3):
      given = jnp.concatenate([jnp.broadcast_to(earlier[..., :c], (64, 256, c)),
                               jnp.broadcast_to(values, (64, 256, 1)),
                               jnp.zeros((64, 256, 2 - c), jnp.int32)], -1)
      # log P(x_<c, x_c) - log P(x_<c): the first c + 1 channels' joint over the first c's.
      joint = log_prob(
          given[..., :c + 1], mixture_prefix(params, c + 1, 3, 5)[:, None], 5)
      total = jax.nn.logsumexp(joint, axis=1)
      if c:
        marginal = log_prob(
            earlier[:, 0, :c], mixture_prefix(params, c, 3, 5), 5)
        total = total - marginal
      np.testing.assert_allclose(np.exp(np.asarray(total)), 1.0, rtol=2e-5)
    return
  params = random_params(jax.random.key(0), (16,), channels, 4)
  pixels = all_pixels(channels, num_levels)
  log_p = log_prob(
      jnp.asarray(pixels)[None], params[:, None], 4, num_levels)
  np.testing.assert_allclose(np.exp(np.asarray(jax.nn.logsumexp(log_p, axis=1))), 1.0,
                             rtol=2e-5)


def mixture_prefix(params, keep, channels, mixtures):
  """The parameters of the mixture over the first ``keep`` channels (same components)."""
  k = mixtures
  logits = params[..., :k]
  means = params[..., k:k + channels * k].reshape(*params.shape[:-1], channels, k)
  scales = params[..., k + channels * k:k + 2 * channels * k].reshape(means.shape)
  coeffs = params[..., k + 2 * channels * k:].reshape(*params.shape[:-1], -1, k)
  flat = lambda a: a.reshape(*a.shape[:-2], -1)
  return jnp.concatenate([logits, flat(means[..., :keep, :]), flat(scales[..., :keep, :]),
                          flat(coeffs[..., :keep * (keep - 1) // 2, :])], -1)


def numpy_log_prob(levels, params, mixtures, num_levels=256):
  """The PixelCNN++ formula, directly, in float64: sigmoid differences of the bin edges."""
  levels, params = np.asarray(levels, np.float64), np.asarray(params, np.float64)
  channels, k = levels.shape[-1], mixtures
  logits = params[..., :k]
  means = params[..., k:k + channels * k].reshape(*params.shape[:-1], channels, k)
  log_scales = np.maximum(params[..., k + channels * k:k + 2 * channels * k].reshape(
      means.shape), -7.0)
  coeffs = np.tanh(params[..., k + 2 * channels * k:].reshape(*params.shape[:-1], -1, k))
  x = levels * 2 / (num_levels - 1) - 1
  sigmoid = lambda t: 0.5 * (1 + np.tanh(0.5 * t))  # no overflow warnings far in a tail
  probability = np.ones(means.shape[:-2] + (k,))
  for c in range(channels):
    mean = means[..., c, :] + sum(coeffs[..., c * (c - 1) // 2 + j, :] * x[..., j, None]
                                  for j in range(c))
    inverse_scale = np.exp(-log_scales[..., c, :])
    xc = x[..., c, None]
    upper = np.where(levels[..., c, None] == num_levels - 1, 1.0,
                     sigmoid(inverse_scale * (xc + 1 / (num_levels - 1) - mean)))
    lower = np.where(levels[..., c, None] == 0, 0.0,
                     sigmoid(inverse_scale * (xc - 1 / (num_levels - 1) - mean)))
    probability = probability * (upper - lower)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.log(np.sum(weights * probability, -1))


def test_log_prob_equals_the_formula_in_numpy():
  params = random_params(jax.random.key(2), (2000,), 3, 5, spread=1.5)
  levels = np.array(jax.random.randint(jax.random.key(3), (2000, 3), 0, 256))
  levels[:300, 0], levels[300:600, 1], levels[600:900, 2] = 0, 255, 255  # the edges
  expected = numpy_log_prob(levels, params, 5)
  actual = np.asarray(log_prob(levels, params, 5))
  keep = expected > -30  # where float64 sigmoid differences still hold digits
  assert keep.mean() > 0.9
  np.testing.assert_allclose(actual[keep], expected[keep], rtol=2e-4, atol=2e-4)
  # Far in a tail the stable form stays finite where the naive difference underflows.
  far = log_prob(
      jnp.array([[128]]), jnp.array([[0.0, -0.9, -7.0]]), 1)
  assert np.isfinite(far).all() and float(far[0]) < -50


def test_samples_follow_the_pmf():
  num_levels, count = 4, 40000
  params = random_params(jax.random.key(4), (), 3, 3, spread=1.0)
  draws = sample_mixture(
      jax.random.key(5), jnp.broadcast_to(params, (count, params.shape[-1])), 3, 3, num_levels)
  draws = np.asarray(draws)
  assert draws.dtype == np.int32 and draws.min() >= 0 and draws.max() < num_levels
  pixels = all_pixels(3, num_levels)
  pmf = np.exp(np.asarray(log_prob(
      pixels, params[None], 3, num_levels), np.float64))
  index = (draws * num_levels ** np.arange(2, -1, -1)).sum(-1)
  frequency = np.bincount(index, minlength=len(pmf)) / count
  tolerance = 5 * np.sqrt(pmf * (1 - pmf) / count) + 1e-3
  assert np.all(np.abs(frequency - pmf) < tolerance), np.abs(frequency - pmf).max()


def pixel_jacobian(model, size, channels, num_inputs=3):
  """``|d outputs(pixel p) / d input(pixel q)|`` ``[HW, HW]`` summed over outputs, input
  channels and ``num_inputs`` random inputs; pixels in raster order."""
  x = jax.random.normal(jax.random.key(1), (num_inputs, size, size, channels))
  variables = model.init(jax.random.key(0), x)

  def outputs(x):
    return model.apply(variables, x).sum(-1).reshape(num_inputs, size * size).sum(0)

  jacobian = np.asarray(jax.jacrev(outputs)(x))  # [HW, N, H, W, C]
  return np.abs(jacobian).sum((1, 4)).reshape(size * size, size * size)


@pytest.mark.parametrize("name", ["gated_pixelcnn", "pixelcnn", "row_lstm"])
def test_mixture_networks_see_only_earlier_pixels(name):
  common = dict(channels=3, num_levels=256, output="logistic_mixture", num_mixtures=2)
  model = {"gated_pixelcnn": pixelcnn_lib.GatedPixelCNN(features=4, num_layers=5, **common),
           "pixelcnn": pixelcnn_lib.PixelCNN(features=4, num_layers=2, first_kernel=3,
                                             **common),
           "row_lstm": PixelRNN(features=4, hidden=4, num_layers=2, first_kernel=3,
                                **common)}[name]
  jacobian = pixel_jacobian(model, 5, 3)
  order = np.arange(25)
  visible = order[None, :] < order[:, None]
  assert np.all(jacobian[~visible] == 0.0)  # not the pixel itself, none of its channels
  if name == "gated_pixelcnn":
    assert np.all(jacobian[visible] > 0.0)  # no blind spot
  else:
    assert jacobian[visible].mean() > 0.0


def randomized(variables, seed):
  """Larger random weights and biases: samples that depend strongly on earlier pixels."""
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [2.0 * w + 0.5 * jax.random.normal(k, w.shape)
                                      for w, k in zip(leaves, keys)])


def samplers_agree(config, size, channels):
  config.data.image_size = size
  config.data.channels = channels
  task = base.get_task(config, mesh_of(1))
  batch = {"image": np.zeros((1, size, size, channels), np.uint8)}
  variables = randomized(task.init_variables(jax.random.key(3), batch), 4)
  sample = jax.jit(task.sample, static_argnums=(2, 3))
  naive = np.asarray(sample(variables, jax.random.key(5), 3, "naive"))
  fast = np.asarray(sample(variables, jax.random.key(5), 3, "fast"))
  np.testing.assert_array_equal(fast, naive)
  assert naive.shape == (3, size, size, channels)
  assert not np.array_equal(naive, np.asarray(sample(variables, jax.random.key(6), 3, "fast")))
  return task, naive


def mixture_config(module, **network):
  config = module.get_config("quick")
  config.model.update(pixels="8bit", output="logistic_mixture", num_mixtures=3)
  config.data.mean, config.data.std = (0.5,) * 3, (0.5,) * 3
  config.model.network = ml_collections.ConfigDict(network)
  return config


def test_gated_pixelcnn_mixture_samplers_agree():
  config = mixture_config(pixelcnn_shapes, features=6, num_layers=2, kernel=3)
  task, images = samplers_agree(config, 7, 3)
  assert task.model.rows_above + 1 < 7
  assert len(np.unique(images)) > 20  # 8-bit values, not a handful of levels


@pytest.mark.parametrize("output", ["softmax", "logistic_mixture"])
def test_row_lstm_fast_sampler_equals_the_naive_loop(output):
  if output == "softmax":
    config = pixelrnn_shapes.get_config("quick")
    config.model.network.update(features=8, hidden=8, num_layers=2, first_kernel=3)
    samplers_agree(config, 7, 1)
  else:
    samplers_agree(mixture_config(pixelrnn_shapes, features=6, hidden=6, num_layers=2,
                                  first_kernel=5, kernel=3), 6, 3)


def test_mixture_config_errors_are_named():
  config = pixelcnn_shapes.get_config("quick")
  config.model.output = "logistic_mixture"
  with pytest.raises(ValueError, match="model.pixels='8bit'"):
    base.get_task(config, mesh_of(1))
  config.model.output = "gaussian"
  with pytest.raises(ValueError, match="model.output 'gaussian'"):
    base.get_task(config, mesh_of(1))


@pytest.mark.parametrize("module", [pixelcnn_cifar10, pixelrnn_cifar10, vae_cifar10])
def test_cifar10_config_trains_one_step_on_a_fake_batch(module):
  config = module.get_config("quick")
  assert config.data.name == "tfds:cifar10" and config.model.pixels == "8bit"
  assert module.get_config().model.output == "logistic_mixture"
  metrics = generative_checks.check_one_step_on_a_fake_8bit_batch(config)
  dims = 32 * 32 * 3
  nll = -metrics["elbo_nats"] if config.task == "vae" else metrics["nll_nats"]
  np.testing.assert_allclose(metrics["bits_per_dim"], nll / (dims * np.log(2)), rtol=1e-5)
  # An untrained model of 8-bit values: a few bits per value, not per image or per pixel.
  assert 1.0 < metrics["bits_per_dim"] < 20.0


def test_mixture_mean_and_the_vae_pictures():
  config = vae_cifar10.get_config("quick")
  task = base.get_task(config, mesh_of(1))
  params = random_params(jax.random.key(7), (2, 4), 3, 2, spread=0.5)
  mean = np.asarray(generative.discretized_logistic_mixture_mean(params, 3, 2))
  # The mean by the pmf: sum over the 256 values of each channel's marginal (one component:
  # the chained means are exact there up to the clipped tails).
  one = params.at[..., :2].set(jnp.array([30.0, -30.0]))  # all weight on component 0
  # Narrow logistics well inside [-1, 1]: the clipped tails are negligible.
  one = one.at[..., 2:8].set(jnp.clip(one[..., 2:8], -0.7, 0.7)).at[..., 8:14].set(-3.0)
  pixels = jnp.asarray(all_pixels(1, 256))
  marginal = np.exp(np.asarray(log_prob(pixels[:, None, None], mixture_prefix(one, 1, 3, 2), 2)))
  expected_red = (marginal * (np.arange(256)[:, None, None] / 127.5 - 1)).sum(0)
  np.testing.assert_allclose(
      np.asarray(generative.discretized_logistic_mixture_mean(one, 3, 2))[..., 0], expected_red,
      atol=0.02)
  assert mean.shape == (2, 4, 3)
  # The VAE's pictures of a mixture decoder: the mean image in [0, 255].
  image = np.asarray(task.mean_image(params[:, None, :, None, :]))
  assert image.shape == (2, 1, 4, 3) and 0 <= image.min() <= image.max() <= 255
