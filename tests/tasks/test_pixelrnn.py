"""PixelRNN (Row LSTM, Diagonal BiLSTM): causality, normalized likelihoods, training, resume
and restore."""

import jax
import numpy as np
import pytest

from jaxvision import checkpoint, trainer
from jaxvision.models.pixelrnn import PixelRNN, skew, unskew
from jaxvision.tasks import base

import generative_checks
from generative_checks import mesh_of, read_metrics
from test_pixelcnn import earlier, input_jacobian

import configs.pixelrnn_shapes as shapes_config


@pytest.mark.parametrize("channels", [1, 3])
def test_row_lstm_is_causal(channels):
  model = PixelRNN(channels=channels, num_levels=4, features=4 * channels,
                   hidden=4 * channels, num_layers=2, first_kernel=3, kernel=3)
  jacobian = input_jacobian(model, 6, 6, channels)
  visible = earlier(jacobian.shape[0])
  assert np.all(jacobian[~visible] == 0.0)

  def value(row, column):
    return (row * 6 + column) * channels

  # The LSTM carries every row above: output (5, 2) sees the far corners of the top row (its
  # triangular receptive field widens by a pixel per row upwards), the pixel to its left and
  # those the first layer sees; (3, 5) lies outside the triangle.
  i = value(5, 2)
  for j in (value(0, 0), value(0, 5), value(4, 3), value(5, 1)):
    assert jacobian[i, j] > 0.0, j
  assert jacobian[i, value(3, 5)] == 0.0


@pytest.mark.parametrize("channels", [3])  # channel groups included (1 adds little)
def test_diagonal_bilstm_sees_exactly_the_earlier_values(channels):
  model = PixelRNN(channels=channels, num_levels=4, features=4 * channels,
                   hidden=4 * channels, num_layers=1, first_kernel=3, rnn="diagonal_bilstm")
  jacobian = input_jacobian(model, 5, 5, channels)
  visible = earlier(jacobian.shape[0])
  assert np.all(jacobian[~visible] == 0.0)
  # One layer sees every earlier value (the left-to-right direction the pixels up and to the
  # left, the right-to-left one, shifted down a row, the rows above to the right) but one:
  # the last value (last channel) of the row above, from columns the type-A convolution does
  # not reach (its own type-A features exclude it, and nothing after it in its row can
  # carry it): the paper's layer, as described, has this one-value blind spot.
  pixel, channel = np.divmod(np.arange(jacobian.shape[0]), channels)
  row, column = pixel // 5, pixel % 5
  blind = ((row[None, :] == row[:, None] - 1) & (column[None, :] == 4)
           & (channel[None, :] == channels - 1) & (column[:, None] < 4 - 3 // 2))
  assert blind.sum() == 4 * 3 * channels
  assert np.all(jacobian[visible & ~blind] > 0.0)
  assert np.all(jacobian[blind] == 0.0)


def test_diagonal_bilstm_skew_and_unskew_are_inverse():
  x = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1)
  skewed = np.asarray(skew(x))
  assert skewed.shape == (2, 3, 6, 1)
  np.testing.assert_array_equal(skewed[:, 2, 2:6], x[:, 2])  # row 2 starts at column 2
  assert np.all(skewed[:, 2, :2] == 0) and np.all(skewed[:, 0, 4:] == 0)
  np.testing.assert_array_equal(np.asarray(unskew(skew(x), 4)), x)


@pytest.mark.parametrize("architecture", ["row_lstm", "diagonal_bilstm"])
def test_likelihood_sums_to_one_over_all_binary_images(architecture):
  config = shapes_config.get_config("quick")
  config.model.architecture = architecture
  config.data.image_size = 3  # only the task's shapes are used: no data is read
  task = base.get_task(config, mesh_of(1))
  bits = (np.arange(2**9)[:, None] >> np.arange(9)) & 1
  batch = {"image": (bits.reshape(-1, 3, 3, 1) * 255).astype(np.uint8)}
  variables = task.init_variables(jax.random.key(0), batch)
  log_p = np.asarray(task.log_likelihood(variables, batch, None), np.float64)
  np.testing.assert_allclose(np.exp(log_p).sum(), 1.0, rtol=1e-5)


def test_bad_architecture_is_named():
  config = shapes_config.get_config("quick")
  config.model.architecture = "gru"
  with pytest.raises(ValueError,
                     match=r"'gru' for task 'pixelrnn'.*\['diagonal_bilstm', 'row_lstm'\]"):
    base.get_task(config, mesh_of(1)).model


def test_one_step_on_8_devices_equals_1_device():
  generative_checks.check_one_step_on_8_devices_equals_1_device(
      shapes_config.get_config("quick"))


def test_quick_config_trains_resumes_and_restores(tmp_path):
  config = shapes_config.get_config("quick")
  reference = str(tmp_path / "reference")
  trainer.train_and_evaluate(config, reference, mesh=mesh_of(2))
  lines = read_metrics(reference)
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  assert losses[-1] < 0.8 * losses[0], losses
  final = [line for line in lines if "eval/nll_nats" in line][-1]
  assert final["eval/nll_nats"] < 16 * 16 * np.log(2)
  expected = generative_checks.check_resume_is_bit_identical(
      config, reference, str(tmp_path / "resumed"), interrupt_step=15)
  restored_config, model, variables = checkpoint.restore_for_inference(reference)
  assert restored_config.task == "pixelrnn" and isinstance(model, PixelRNN)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables["params"]),
               jax.device_get(expected["params"]))
  task = base.get_task(restored_config, mesh_of(1))
  images = np.asarray(jax.jit(task.sample, static_argnums=2)(variables, jax.random.key(0), 2))
  assert images.shape == (2, 16, 16, 1) and set(np.unique(images)) <= {0, 255}
