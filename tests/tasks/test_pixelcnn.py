"""PixelCNN and gated PixelCNN: causality, normalized likelihoods, samplers, training.

Causality is checked on the gradient of each output pixel's logits with respect to every
input value: zero for inputs at or after it in the generation order (raster order, channels
R -> G -> B within a pixel), non-zero for every earlier input in the gated variant (no blind
spot); the masked PixelCNN has the blind spot the gated stacks remove.
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxvision import checkpoint, trainer
from jaxvision.models import pixelcnn as pixelcnn_lib
from jaxvision.tasks import base

import generative_checks
from generative_checks import mesh_of, read_metrics

import configs.pixelcnn_mnist as mnist_config
import configs.pixelcnn_shapes as shapes_config


def input_jacobian(model, height, width, channels, num_inputs=4):
  """``|d logits(output value i) / d input value j|`` summed over levels and over
  ``num_inputs`` random inputs (a ReLU dead at one input does not hide a connection):
  ``[HWC, HWC]``, values in generation order (the row-major flattening of ``[H, W, C]``)."""
  x = jax.random.normal(jax.random.key(1), (num_inputs, height, width, channels))
  variables = model.init(jax.random.key(0), x)
  size = height * width * channels

  def outputs(x):  # Examples are independent: the batch sum keeps each one's derivatives.
    return model.apply(variables, x).sum(-1).reshape(num_inputs, size).sum(0)

  jacobian = np.asarray(jax.jacrev(outputs)(x)).reshape(size, num_inputs, size)
  return np.abs(jacobian).sum(1)


def earlier(size):
  order = np.arange(size)
  return order[None, :] < order[:, None]  # [i, j]: input j comes before output i


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_pixelcnn_sees_exactly_the_earlier_values(channels):
  model = pixelcnn_lib.GatedPixelCNN(channels=channels, num_levels=4, features=4 * channels,
                                     num_layers=5, kernel=3)
  jacobian = input_jacobian(model, 6, 6, channels)
  visible = earlier(jacobian.shape[0])
  assert np.all(jacobian[~visible] == 0.0)
  assert np.all(jacobian[visible] > 0.0)  # No blind spot.


@pytest.mark.parametrize("channels", [1, 3])
def test_masked_pixelcnn_is_causal_with_a_blind_spot(channels):
  model = pixelcnn_lib.PixelCNN(channels=channels, num_levels=4, features=6, num_layers=3,
                                first_kernel=3, kernel=3)
  jacobian = input_jacobian(model, 6, 6, channels)
  visible = earlier(jacobian.shape[0])
  assert np.all(jacobian[~visible] == 0.0)
  # Output (3, 3) sees the input right above it and to its left, but not (2, 5), one row up
  # and two columns right: well inside its receptive field's box, yet in the blind spot.
  def value(row, column):
    return (row * 6 + column) * channels

  i = value(3, 3)
  assert jacobian[i, value(2, 3)] > 0.0 and jacobian[i, value(3, 2)] > 0.0
  assert jacobian[i, value(2, 5)] == 0.0 and visible[i, value(2, 5)]


def test_masks_reject_bad_shapes_and_types():
  groups = np.zeros(2, int)
  with pytest.raises(ValueError, match="odd kernel"):
    pixelcnn_lib.causal_mask((2, 3), groups, groups, "A", "full")
  with pytest.raises(ValueError, match="mask type 'C'"):
    pixelcnn_lib.causal_mask((3, 3), groups, groups, "C", "full")
  with pytest.raises(ValueError, match="1 x k"):
    pixelcnn_lib.causal_mask((3, 3), groups, groups, "A", "horizontal")
  with pytest.raises(ValueError, match="multiple of 6"):
    pixelcnn_lib.feature_groups(4, 3, chunks=2)


def small_config(**model):
  config = shapes_config.get_config("quick")
  config.model.update(model)
  return config


@pytest.mark.parametrize("architecture,conditional", [("independent", False),
                                                      ("pixelcnn", False),
                                                      ("gated_pixelcnn", False),
                                                      ("gated_pixelcnn", True)])
def test_likelihood_sums_to_one_over_all_binary_images(architecture, conditional):
  """Exact likelihoods of a 3 x 3 binary image model: the 512 images' probabilities add to 1
  (which needs the model to be causal and normalized), for every class."""
  config = small_config(architecture=architecture, num_classes=3 if conditional else 0)
  config.model.network = ml_collections.ConfigDict(
      {} if architecture == "independent" else dict(features=4, num_layers=2, kernel=3))
  config.data.image_size = 3  # only the task's shapes are used: no data is read
  task = base.get_task(config, mesh_of(1))
  bits = (np.arange(2**9)[:, None] >> np.arange(9)) & 1
  images = (bits.reshape(-1, 3, 3, 1) * 255).astype(np.uint8)
  for label in range(3 if conditional else 1):
    batch = {"image": images, "label": np.full(len(images), label, np.int32)}
    variables = task.init_variables(jax.random.key(label), batch)
    log_p = task.log_likelihood(variables, batch, None)
    np.testing.assert_allclose(float(jnp.exp(jax.nn.logsumexp(log_p))), 1.0, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["pixelcnn", "gated_pixelcnn", "independent"])
def test_fast_sampler_equals_the_naive_loop(architecture):
  config = small_config(architecture=architecture)
  config.model.network = ml_collections.ConfigDict(
      {} if architecture == "independent" else dict(features=8, num_layers=2, kernel=3))
  if architecture == "pixelcnn":
    config.model.network.first_kernel = 3
  config.data.image_size = 9
  task = base.get_task(config, mesh_of(1))
  # The convolutional models' fast window is smaller than the image; the per-position
  # baseline's is the whole image.
  assert (task.model.rows_above + 1 < 9) == (architecture != "independent")
  batch = {"image": np.zeros((1, 9, 9, 1), np.uint8)}
  variables = task.init_variables(jax.random.key(3), batch)
  # Random biases and larger weights: samples that depend strongly on the pixels before them.
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(4), len(leaves))
  variables = jax.tree.unflatten(treedef, [2.0 * w + 0.5 * jax.random.normal(k, w.shape)
                                           for w, k in zip(leaves, keys)])
  sample = jax.jit(task.sample, static_argnums=(2, 3))
  naive = np.asarray(sample(variables, jax.random.key(5), 4, "naive"))
  fast = np.asarray(sample(variables, jax.random.key(5), 4, "fast"))
  np.testing.assert_array_equal(fast, naive)
  assert set(np.unique(naive)) == {0, 255}
  assert not np.array_equal(naive, np.asarray(sample(variables, jax.random.key(6), 4, "fast")))


def test_stochastic_binarization_is_fresh_in_training_and_fixed_in_evaluation():
  config = small_config(binarize="stochastic")
  task = base.get_task(config, mesh_of(1))
  example = {"image": np.full((16, 16, 1), 128, np.uint8), "image_id": np.int32(7)}
  draws = [task.preprocess(dict(example), np.random.default_rng(seed))["image"]
           for seed in (0, 1)]
  assert not np.array_equal(*draws)
  assert 0.35 < np.mean(draws[0] == 255) < 0.65
  held_out = [task.preprocess(dict(example), None)["image"] for _ in range(2)]
  np.testing.assert_array_equal(*held_out)
  other = task.preprocess({**example, "image_id": np.int32(8)}, None)["image"]
  assert not np.array_equal(held_out[0], other)
  threshold = base.get_task(small_config(binarize="threshold"), mesh_of(1))
  assert np.all(threshold.preprocess(dict(example), None)["image"] == 255)


def test_bad_config_and_batches_are_named():
  with pytest.raises(ValueError, match="model.architecture 'pixelrnn'"):
    base.get_task(small_config(architecture="pixelrnn"), mesh_of(1)).model
  with pytest.raises(ValueError, match="model.pixels '4bit'"):
    base.get_task(small_config(pixels="4bit"), mesh_of(1))
  with pytest.raises(ValueError, match="model.sampler 'slow'"):
    base.get_task(small_config(sampler="slow"), mesh_of(1))
  config = small_config()
  config.data.channels = 3
  with pytest.raises(ValueError, match="data.channels=1"):
    base.get_task(config, mesh_of(1))
  task = base.get_task(small_config(), mesh_of(1))
  with pytest.raises(ValueError, match="0 and 255 only"):
    task.validate_batch({"image": np.full((2, 16, 16, 1), 7, np.uint8)})
  with pytest.raises(ValueError, match=r"\[B, 16, 16, 1\]"):
    task.validate_batch({"image": np.zeros((2, 28, 28, 1), np.uint8)})
  with pytest.raises(ValueError, match="'label'"):
    base.get_task(small_config(num_classes=3), mesh_of(1)).validate_batch(
        {"image": np.zeros((2, 16, 16, 1), np.uint8)})


def test_one_step_on_8_devices_equals_1_device():
  generative_checks.check_one_step_on_8_devices_equals_1_device(small_config())


def test_mnist_config_trains_one_step_on_a_fake_batch():
  generative_checks.check_one_step_on_a_fake_batch(mnist_config.get_config("quick"))


def test_quick_config_trains_resumes_and_restores(tmp_path):
  config = small_config()
  reference = str(tmp_path / "reference")
  trainer.train_and_evaluate(config, reference, mesh=mesh_of(2))
  lines = read_metrics(reference)
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  assert losses[-1] < 0.8 * losses[0], losses
  final = [line for line in lines if "eval/nll_nats" in line][-1]
  assert final["step"] == config.total_steps
  dims = 16 * 16
  assert final["eval/nll_nats"] < dims * np.log(2)  # better than a fair coin per pixel
  np.testing.assert_allclose(final["eval/bits_per_dim"],
                             final["eval/nll_nats"] / (dims * np.log(2)), rtol=1e-6)
  assert any(name.endswith("_samples.png")
             for name in os.listdir(os.path.join(reference, "pictures")))

  expected = generative_checks.check_resume_is_bit_identical(
      config, reference, str(tmp_path / "resumed"), interrupt_step=15)

  restored_config, model, variables = checkpoint.restore_for_inference(reference)
  assert restored_config.task == "pixelcnn" and isinstance(model, nn.Module)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               jax.device_get(expected["params"]))
  task = base.get_task(restored_config, mesh_of(1))
  images = np.asarray(task.sample(variables, jax.random.key(0), 2))
  assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
  log_p = task.predict(variables, images)["log_likelihood"]
  assert log_p.shape == (2,) and np.all(np.asarray(log_p) < 0)
