"""Mask R-CNN's mask head: exact targets, zero weight of negatives, torchvision parity."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.models.roi_heads import MaskHead, mask_loss, mask_targets

import make_mask_head_golden as golden
from torch_reference import import_torchvision


def _block_mask(pattern: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
  """A ``size x size`` mask: ``pattern`` upsampled by whole pixels to fill ``box``."""
  x1, y1, x2, y2 = box
  block = (y2 - y1) // pattern.shape[0], (x2 - x1) // pattern.shape[1]
  mask = np.zeros((size, size), np.uint8)
  mask[y1:y2, x1:x2] = np.kron(pattern, np.ones(block, np.uint8))
  return mask


@pytest.mark.parametrize("block", [1, 2])
def test_proposal_equal_to_a_ground_truth_box_gets_its_mask_resampled_exactly(block):
  """A RoI equal to an object's box ``k * 28`` pixels wide, ``k x k`` samples per bin: the
  target is exactly the object's 28 x 28 pattern, and the matched object's, not another's."""
  rng = np.random.default_rng(block)
  size, resolution = 64, 28
  side = block * resolution
  boxes = [(3, 5, 3 + side, 5 + side), (64 - side, 64 - side, 64, 64)]
  patterns = [(rng.uniform(size=(resolution, resolution)) < 0.5).astype(np.uint8)
              for _ in boxes]
  masks = np.stack([_block_mask(p, b, size) for p, b in zip(patterns, boxes)])
  rois = jnp.asarray(np.array(boxes[::-1], np.float32))
  targets = jax.jit(mask_targets, static_argnums=3, static_argnames="sampling_ratio")(
      rois, jnp.array([1, 0]), jnp.asarray(masks), resolution, sampling_ratio=block)
  np.testing.assert_array_equal(np.asarray(targets), np.stack(patterns[::-1]).astype(np.float32))


def test_mask_loss_weighs_negative_rois_and_other_classes_zero():
  rng = np.random.default_rng(0)
  n, f, m, c = 2, 4, 6, 3
  logits = jnp.asarray(rng.normal(size=(n, f, m, m, c)), jnp.float32)
  targets = jnp.asarray(rng.uniform(size=(n, f, m, m)), jnp.float32)
  classes = jnp.array([[1, 3, 0, 2], [2, 0, 0, 0]])
  foreground = jnp.array([[True, True, False, False], [True, False, False, False]])
  loss = mask_loss(logits, classes, targets, foreground)
  # Exactly the mean BCE of the three foreground RoIs' true-class maps.
  picked = [(0, 0, 0), (0, 1, 2), (1, 0, 1)]
  expected = np.mean([optax.sigmoid_binary_cross_entropy(logits[i, j, ..., k], targets[i, j])
                      for i, j, k in picked])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  # Negative slots (background, or a class but not foreground) and other classes' maps:
  # changing them, even to NaN logits, changes nothing, and their gradient is zero.
  negative = ~np.asarray(foreground)
  changed_logits = np.array(logits)
  changed_logits[negative] = np.nan
  changed_logits[0, 0, ..., 1] = 50.0  # RoI (0, 0) is class 1: map 0 only counts
  changed_targets = np.array(targets)
  changed_targets[negative] = 1.0 - changed_targets[negative]
  np.testing.assert_allclose(mask_loss(jnp.asarray(changed_logits), classes,
                                       jnp.asarray(changed_targets), foreground), loss,
                             rtol=1e-6)
  gradient = np.asarray(jax.grad(mask_loss)(logits, classes, targets, foreground))
  assert np.all(gradient[negative] == 0) and np.all(gradient[0, 0, ..., 1:] == 0)
  assert np.all(np.abs(gradient[0, 0, ..., 0]) > 0)
  # No foreground at all: zero loss, not NaN.
  assert float(mask_loss(logits, classes, targets, jnp.zeros_like(foreground))) == 0.0


def _jaxvision_targets_and_loss(inputs):
  """Our targets (torchvision's legacy aligned=False pixel model) and loss on the golden
  inputs, with two extra negative slots per image that must not count."""
  targets = jax.vmap(lambda r, i, m: mask_targets(r, i, m, golden.RESOLUTION, aligned=False))(
      jnp.asarray(inputs["rois"]), jnp.asarray(inputs["matched"]), jnp.asarray(inputs["masks"]))
  classes = np.take_along_axis(inputs["labels"], inputs["matched"], 1)
  pad = lambda x, value: np.concatenate([x, np.full((x.shape[0], 2) + x.shape[2:], value,
                                                    x.dtype)], 1)
  loss = mask_loss(jnp.asarray(pad(inputs["logits"], 9.0)), jnp.asarray(pad(classes, 1)),
                   jnp.asarray(pad(np.asarray(targets), 0.0)),
                   jnp.asarray(pad(np.ones(classes.shape, bool), False)))
  return np.asarray(targets), float(loss)


def test_targets_and_loss_match_the_torchvision_golden_file():
  with np.load(golden.GOLDEN_PATH) as saved:
    reference = dict(saved)
  targets, loss = _jaxvision_targets_and_loss(golden.golden_inputs())
  np.testing.assert_allclose(targets, reference["targets"], atol=1e-6)
  np.testing.assert_allclose(loss, reference["loss"], rtol=1e-5)
  # Soft targets at the blobs' edges, so the comparison is not of 0/1 values only.
  assert np.any((targets > 0.05) & (targets < 0.95))


def test_targets_and_loss_match_torchvision_live():
  torchvision = import_torchvision()
  inputs = golden.golden_inputs(seed=1)
  reference = golden.torchvision_reference(torchvision, inputs)
  targets, loss = _jaxvision_targets_and_loss(inputs)
  np.testing.assert_allclose(targets, reference["targets"], atol=1e-6)
  np.testing.assert_allclose(loss, reference["loss"], rtol=1e-5)


def test_mask_head_doubles_the_pooled_size_into_per_class_float32_logits():
  head = MaskHead(num_classes=5, channels=8, dtype=jnp.bfloat16)
  features = jnp.ones((2, 3, 14, 14, 16), jnp.float32)
  variables = head.init(jax.random.key(0), features)
  logits = head.apply(variables, features)
  chex.assert_shape(logits, (2, 3, 28, 28, 5))
  assert logits.dtype == jnp.float32
  names = set(variables["params"])
  assert names == {"conv1", "conv2", "conv3", "conv4", "upsample", "mask_logits"}, names


def test_mask_head_learns_a_mask_from_its_features():
  """A few Adam steps on a fixed batch: the loss of the true class's mask falls."""
  rng = np.random.default_rng(0)
  features = jnp.asarray(rng.normal(size=(1, 4, 7, 7, 4)), jnp.float32)
  # Targets that depend on the features: the first channel's sign, upsampled 2x.
  targets = jnp.repeat(jnp.repeat((features[..., 0] > 0).astype(jnp.float32), 2, 2), 2, 3)
  classes, foreground = jnp.array([[1, 2, 1, 2]]), jnp.ones((1, 4), bool)
  head = MaskHead(num_classes=2, channels=16)
  params = head.init(jax.random.key(0), features)["params"]
  optimizer = optax.adam(1e-2)
  state = optimizer.init(params)
  loss_fn = lambda p: mask_loss(head.apply({"params": p}, features), classes, targets,
                                foreground)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = optimizer.update(grads, state)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(40):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert losses[-1] < 0.3 * losses[0], losses
