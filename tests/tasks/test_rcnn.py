"""The ``rcnn`` task: R-CNN trains on 2 devices, evaluates with COCO AP, chunks its inference."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.evaluation import coco
from jaxvision.tasks import get_task

import configs.rcnn_shapes as rcnn_config
import quick_training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config (selective search proposals) trained for 10 steps on a 2-device mesh
  over two batches, then evaluated."""
  config = rcnn_config.get_config("quick")
  picture_dir = str(tmp_path_factory.mktemp("rcnn_pictures"))
  run = quick_training.train_and_evaluate(config, 10, picture_dir)
  return (config, run.task, run.state, run.batches, run.history, run.eval_metrics,
          picture_dir)


def test_quick_config_trains_on_two_devices_with_falling_loss(trained):
  config, _, state, _, history, _, _ = trained
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.8 * losses[:2].mean(), losses
  assert all(m["roi_foreground_fraction"] > 0 for m in history)
  # One CNN per region: the backbone runs on the warped regions, no FPN, no RPN.
  assert set(state["params"]) == {"backbone", "box_head"}
  assert config.data_proposals.method == "selective_search"


def test_evaluation_gives_coco_numbers_and_pictures(trained):
  _, _, _, _, _, eval_metrics, picture_dir = trained
  for key in coco.DETECTION_SUMMARY_KEYS + ("rpn_AR100",):
    assert -1.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics[key])
  pictures = os.listdir(picture_dir)
  assert any(name.endswith("detections.png") for name in pictures), pictures


def test_chunked_inference_equals_one_pass_and_predict_is_valid(trained):
  config, task, state, batches, _, _, _ = trained
  variables = task.inference_variables(state)
  images = jnp.asarray(batches[0]["image"][:2])
  proposals = jnp.asarray(batches[0]["proposals"][:2])
  proposal_valid = jnp.asarray(batches[0]["proposal_valid"][:2])
  assert proposals.shape[1] > config.model.region_chunk  # several chunks, the last padded
  apply = lambda model: jax.jit(lambda v, x, p, pv: model.apply(
      v, task.normalize(x), train=False, proposals=p, proposal_valid=pv))(
          variables, images, proposals, proposal_valid)
  chunked = apply(task.model)
  one_pass = apply(task.model.clone(region_chunk=proposals.shape[1]))
  for key in ("boxes", "scores", "classes", "valid"):
    np.testing.assert_allclose(chunked[key], one_pass[key], rtol=1e-5, atol=1e-4, err_msg=key)
  out = task.predict(variables, batches[0]["image"][:2], proposals, proposal_valid)
  chex.assert_shape(out["boxes"], (2, config.model.max_detections, 4))
  boxes = np.asarray(out["boxes"])[np.asarray(out["valid"])]
  assert np.all(boxes[:, 2:] >= boxes[:, :2])
  assert np.all(boxes >= 0) and np.all(boxes <= config.data.image_size)


def test_config_errors_name_the_fix():
  config = rcnn_config.get_config("quick")
  config.model.warp_sise = 32
  with pytest.raises(ValueError, match="warp_sise"):
    get_task(config)
  config = rcnn_config.get_config("quick")
  del config.model["proposal_source"]
  with pytest.raises(ValueError, match="proposal_source='data'"):
    get_task(config)
