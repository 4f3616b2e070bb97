"""The ``sliding_window_detection`` task: its window grid, training, evaluation, and a
hand-made image whose one bright window must come out as the top detection."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.evaluation import coco
from jaxvision.models.rcnn import RCNN
from jaxvision.tasks.rcnn import sliding_windows

import configs.sliding_window_shapes as sliding_window_config
import quick_training


def test_windows_tile_the_image_at_every_size_and_reach_its_far_edge():
  windows = sliding_windows(64, sizes=(16, 24), strides=(8, 16))
  # Size 16: starts 0, 8, ..., 48 (7 per axis); size 24: 0, 16, 32 and 40 flush with the edge.
  assert windows.shape == (7 * 7 + 4 * 4, 4)
  np.testing.assert_array_equal(windows[0], [0, 0, 16, 16])
  np.testing.assert_array_equal(windows[1], [8, 0, 24, 16])
  np.testing.assert_array_equal(windows[-1], [40, 40, 64, 64])
  sides = windows[:, 2:] - windows[:, :2]
  assert np.all(sides[:49] == 16) and np.all(sides[49:] == 24)
  assert windows.min() == 0 and windows.max() == 64
  with pytest.raises(ValueError, match="one stride per window size"):
    sliding_windows(64, sizes=(16, 24), strides=(8,))
  with pytest.raises(ValueError, match="Window size 80"):
    sliding_windows(64, sizes=(80,), strides=(8,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for 10 steps on a 2-device mesh over two batches, evaluated."""
  config = sliding_window_config.get_config("quick")
  run = quick_training.train_and_evaluate(config, 10,
                                          str(tmp_path_factory.mktemp("pictures")))
  return config, run.task, run.state, run.batches, run.history, run.eval_metrics


def test_quick_config_trains_on_two_devices_and_evaluates(trained):
  config, task, state, batches, history, eval_metrics = trained
  assert "proposals" not in batches[0]  # the windows are the task's, not the data's
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.8 * losses[:2].mean(), losses
  for key in coco.DETECTION_SUMMARY_KEYS:
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  out = task.predict(task.inference_variables(state), batches[0]["image"][:2])
  chex.assert_shape(out["boxes"], (2, config.model.max_detections, 4))
  boxes = np.asarray(out["boxes"])[np.asarray(out["valid"])]
  assert len(boxes) and np.all(boxes[:, 2:] >= boxes[:, :2])
  assert np.all(boxes >= 0) and np.all(boxes <= config.data.image_size)


class _BrightnessScoredWindows(RCNN):
  """The classify_localize window network with its class scores replaced: a window's logit
  for class 1 is its total brightness (mean x area, largest for the window that fits the
  bright square exactly), background 0, other classes -30."""

  def classify_regions(self, images, regions, train):
    logits, deltas = super().classify_regions(images, regions, train)
    brightness = ops.warp_regions(images, regions, self.warp_size).mean(axis=(2, 3, 4))
    total = 10 * brightness * ops.box_area(regions) / 1024
    forced = jnp.full(logits.shape, -30.0).at[..., 0].set(0.0).at[..., 2].set(total)
    return forced, deltas


def test_the_brightest_window_comes_out_as_its_box(trained):
  """An image dark but for one window-sized square: the top detection is that window, as the
  untrained classify_localize model localizes it (its zero-initialized box layers predict
  the window's central half), mapped back to image pixels."""
  config, task, state, _, _, _ = trained
  window = np.array([16, 16, 48, 48])  # a 32 px window at stride 16 of the quick grid
  assert any(np.array_equal(w, window) for w in task.windows)
  image = np.zeros((1, 64, 64, 3), np.uint8)
  image[0, 16:48, 16:48] = 255
  forced = _BrightnessScoredWindows(**{name: getattr(task.model, name) for name in (
      "num_classes", "region_network", "backbone", "backbone_kwargs", "warp_size",
      "context_padding", "neck_channels", "hidden", "roi_feature", "region_chunk")})
  variables = jax.jit(lambda key, x: forced.init(key, task.normalize(x), train=False,
                                                 **task._window_inputs(1)))(
                                                     jax.random.key(0), jnp.asarray(image))
  original, task._model = task._model, forced
  try:
    out = jax.jit(task._forward)(variables, jnp.asarray(image), {})
  finally:
    task._model = original
  assert bool(out["valid"][0, 0]) and int(out["classes"][0, 0]) == 1
  np.testing.assert_allclose(out["boxes"][0, 0], [24, 24, 40, 40], atol=1e-3)
  assert float(out["scores"][0, 0]) > 0.99
