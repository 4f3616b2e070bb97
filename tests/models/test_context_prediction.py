"""Context prediction's shortcut guards and its two-tower model."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.models import context_prediction as cp


def test_neighbours_are_the_grid_without_its_centre():
  assert cp.NEIGHBOURS == tuple(i for i in range(9) if i != cp.CENTRE)
  assert cp.NUM_POSITIONS == 8


def test_normalize_patches_standardizes_each_patch_on_its_own():
  rng = np.random.default_rng(0)
  patches = rng.uniform(0, 1, (5, 6, 6, 3)).astype(np.float32)
  patches[1] = patches[1] * 0.1 + 0.8  # a dim, bright patch: same result up to scale
  out = np.asarray(cp.normalize_patches(patches))
  np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(np.sqrt((out ** 2).mean(axis=(1, 2, 3))), 1, rtol=1e-3)
  shifted = np.asarray(cp.normalize_patches(patches * 3 + 0.2))
  np.testing.assert_allclose(shifted, out, atol=1e-3)
  assert np.all(np.isfinite(np.asarray(cp.normalize_patches(np.ones((1, 4, 4, 3))))))


def test_colour_projection_removes_the_green_magenta_component():
  rng = np.random.default_rng(1)
  pixels = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
  projected = np.asarray(cp.project_out_green_magenta(pixels))
  np.testing.assert_allclose(projected @ cp.GREEN_MAGENTA, 0, atol=1e-6)
  grey = np.full((2, 2, 3), 0.3, np.float32)  # grey has no green-magenta component
  np.testing.assert_allclose(np.asarray(cp.project_out_green_magenta(grey)), grey, atol=1e-6)
  # Idempotent: a projection.
  np.testing.assert_allclose(np.asarray(cp.project_out_green_magenta(projected)), projected,
                             atol=1e-6)


def test_keep_one_channel_zeroes_the_dropped_channels():
  patches = jnp.ones((3, 2, 2, 3))
  out = np.asarray(cp.keep_one_channel(patches, jnp.array([0, 2, 1])))
  np.testing.assert_array_equal(out[:, 0, 0], np.eye(3)[[0, 2, 1]])


def test_towers_share_their_weights():
  model = cp.ContextPrediction(backbone="resnet_tiny", hidden=8)
  pairs = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 3))
  variables = model.init(jax.random.key(1), pairs, train=False)
  assert set(variables["params"]) == {"backbone", "tower_fc", "joint_fc", "classifier"}
  logits = model.apply(variables, pairs, train=False)
  assert logits.shape == (3, 8)
  # Swapping the two patches changes the prediction (the towers' order matters to the
  # joint layer), but one backbone serves both.
  swapped = model.apply(variables, pairs[:, ::-1], train=False)
  assert not np.allclose(np.asarray(logits), np.asarray(swapped))
