"""Fast R-CNN on selective search proposals (``configs/fast_rcnn_shapes.py``)."""

import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import ops, parallel, trainer
from jaxvision.data import proposals as proposals_lib
from jaxvision.tasks import detection as detection_task
from jaxvision.tasks import get_task

import configs.fast_rcnn_shapes as fast_rcnn_config


@pytest.fixture(scope="module")
def trained():
  """The quick config trained for a few steps on a 2-device mesh (two batches in turn)."""
  config = fast_rcnn_config.get_config("quick")
  mesh = Mesh(np.asarray(jax.devices()[:2]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  batches = [task.train_batch(0), task.train_batch(1)]
  state = trainer.init_state(task, config, batches[0])
  train_step = trainer.make_train_step(task, config)
  history = []
  for step in range(10):
    state, metrics = train_step(state, parallel.global_batch(batches[step % 2], mesh))
    history.append(jax.device_get(metrics))
  return config, task, state, batches, history


def test_trains_on_two_devices_with_finite_falling_loss(trained):
  _, _, _, _, history = trained
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.8 * losses[:2].mean(), losses
  assert "rpn_objectness" not in history[0]  # no RPN: the proposals come with the data


def test_batches_carry_the_selective_search_proposals_of_their_images(trained):
  config, task, _, batches, _ = trained
  count = config.data_proposals.num_proposals
  batch = batches[0]
  chex.assert_shape(batch["proposals"], (config.batch_size, count, 4))
  chex.assert_shape(batch["proposal_valid"], (config.batch_size, count))
  assert batch["proposal_valid"].any(axis=1).all()
  # Each row's proposals are the search of its stored image, mirrored when the row was
  # flipped (the stored shapes images are already image_size square: no letterbox here).
  size = config.data.image_size
  settings = dict(mode=config.data_proposals.mode, max_proposals=count,
                  min_size=config.data_proposals.min_size)
  flipped_rows = 0
  for image, proposals, valid in zip(batch["image"], batch["proposals"],
                                     batch["proposal_valid"]):
    unflipped, unflipped_valid = proposals_lib.selective_search(image, **settings)
    if np.array_equal(valid, unflipped_valid) and np.array_equal(proposals, unflipped):
      continue
    flipped_rows += 1
    original, original_valid = proposals_lib.selective_search(image[:, ::-1], **settings)
    np.testing.assert_array_equal(valid, original_valid)
    mirrored = np.stack([size - proposals[:, 2], proposals[:, 1], size - proposals[:, 0],
                         proposals[:, 3]], axis=1)
    np.testing.assert_array_equal(mirrored[valid], original[original_valid])
  assert 0 < flipped_rows < len(batch["image"])  # both cases seen (seeded flips)


def test_proposals_are_letterboxed_and_flipped_with_the_image(trained):
  config, task, _, _, _ = trained
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (48, 96, 3), dtype=np.uint8)
  image[10:40, 20:60] = (200, 40, 40)  # one flat region selective search will find
  example = {"image": image, "image_id": np.int32(7),
             "boxes": np.array([[20, 10, 60, 40]], np.float32),
             "labels": np.array([0], np.int32), "area": np.array([1200], np.float32),
             "is_crowd": np.array([False])}
  searched = proposals_lib.ProposalCache(None, mode="fast", min_size=4).boxes(image)
  assert len(searched) > 1
  scale = config.data.image_size / 96  # the longer side becomes image_size
  count = min(len(searched), config.data_proposals.num_proposals)
  expected = searched[:count] * scale
  row = task.preprocess(example, None)  # evaluation: letterbox only
  np.testing.assert_allclose(row["proposals"][:count], expected, rtol=1e-6)
  assert row["proposal_valid"][:count].all() and not row["proposal_valid"][count:].any()
  np.testing.assert_allclose(row["boxes"][0], [20 * scale, 10 * scale, 60 * scale, 40 * scale])
  # Training rows: a flip moves the proposals exactly as it moves the object's box.
  seen = set()
  for seed in range(8):
    row = task.preprocess(example, np.random.default_rng(seed))
    flipped = not np.allclose(row["boxes"][0], [20 * scale, 10 * scale, 60 * scale, 40 * scale])
    seen.add(flipped)
    want = expected.copy()
    if flipped:
      size = config.data.image_size
      want = np.stack([size - expected[:, 2], expected[:, 1], size - expected[:, 0],
                       expected[:, 3]], axis=1)
    np.testing.assert_allclose(row["proposals"][:count], want, rtol=1e-6, atol=1e-5)
  assert seen == {False, True}


def test_eval_and_predict_use_the_same_proposals(trained):
  config, task, state, _, _ = trained
  batch = next(task.eval_batches(config.eval_split))
  images = batch["image"][:2]
  proposals, valid = task.selective_search_proposals(images)
  np.testing.assert_array_equal(proposals, batch["proposals"][:2])
  np.testing.assert_array_equal(valid, batch["proposal_valid"][:2])
  variables = task.inference_variables(state)
  searched = task.predict(variables, images)
  given = task.predict(variables, images, proposals, valid)
  for key in ("boxes", "scores", "classes", "valid"):
    np.testing.assert_allclose(np.asarray(searched[key]), np.asarray(given[key]), atol=1e-5)


def test_unknown_proposal_method_is_rejected_before_compiling():
  config = fast_rcnn_config.get_config("quick")
  config.data_proposals.method = "edge_boxes"
  with pytest.raises(ValueError, match="data_proposals.method"):
    get_task(config)
