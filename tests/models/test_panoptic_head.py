"""Panoptic FPN's semantic head: shapes, stride, stages, targets, loss, and its model checks."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.detection import FasterRCNN
from jaxvision.models.panoptic_head import (UNLABELLED, SemanticFPNHead, semantic_loss,
                                            semantic_targets)


def fake_pyramid(height, width, channels=8, batch=2, seed=0):
  """Random ``P2..P6`` maps with the FPN's sizes (each level half the previous, rounded up)."""
  rng = np.random.default_rng(seed)
  pyramid = {}
  for level in range(2, 7):
    stride = 2 ** level
    shape = (batch, math.ceil(height / stride), math.ceil(width / stride), channels)
    pyramid[f"P{level}"] = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return pyramid


@pytest.mark.parametrize("size", [(64, 64), (50, 38)])
def test_logits_have_the_image_size_and_one_channel_per_class(size):
  head = SemanticFPNHead(num_classes=5, channels=16)
  pyramid = fake_pyramid(*size)
  variables = head.init(jax.random.key(0), pyramid, size, train=False)
  logits = head.apply(variables, pyramid, size, train=False)
  chex.assert_shape(logits, (2, *size, 5))
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))


def test_stages_per_level_follow_the_stride_and_p6_is_not_read():
  head = SemanticFPNHead(num_classes=3, channels=8)
  pyramid = fake_pyramid(64, 64)
  params = head.init(jax.random.key(0), pyramid, (64, 64), train=False)["params"]
  # log2(stride / 4) conv stages, at least one: P2 1, P3 1, P4 2, P5 3 (detectron2).
  convs = {level: sorted(k for k in params if k.startswith(f"{level}_conv"))
           for level in ("P2", "P3", "P4", "P5")}
  assert {level: len(names) for level, names in convs.items()} == {
      "P2": 1, "P3": 1, "P4": 2, "P5": 3}
  assert not any(k.startswith("P6") for k in params)
  logits = head.apply({"params": params}, pyramid, (64, 64), train=False)
  changed = dict(pyramid, P6=pyramid["P6"] + 1.0)
  np.testing.assert_array_equal(head.apply({"params": params}, changed, (64, 64), train=False),
                                logits)
  # Every level reaches the logits.
  for level in ("P2", "P3", "P4", "P5"):
    changed = dict(pyramid, **{level: pyramid[level] * 2.0})
    assert not np.allclose(head.apply({"params": params}, changed, (64, 64), train=False),
                           logits), level


def test_logits_are_predicted_at_stride_4():
  # With nearest upsampling the final 4x upsampling repeats each stride-4 logit in a 4 x 4
  # block; the bilinear default interpolates between those same stride-4 values.
  head = SemanticFPNHead(num_classes=3, channels=8, upsampler="nearest")
  pyramid = fake_pyramid(32, 32)
  variables = head.init(jax.random.key(0), pyramid, (32, 32), train=False)
  logits = np.asarray(head.apply(variables, pyramid, (32, 32), train=False))
  blocks = logits.reshape(2, 8, 4, 8, 4, 3)
  np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))
  assert np.abs(np.diff(logits[:, ::4], axis=1)).max() > 0  # not constant across blocks


def test_unknown_upsampler_is_an_error_naming_the_choices():
  head = SemanticFPNHead(num_classes=3, channels=8, upsampler="max_unpool")
  with pytest.raises(ValueError, match="semantic_upsampler.*bilinear"):
    head.init(jax.random.key(0), fake_pyramid(32, 32), (32, 32), train=False)


def test_targets_map_things_to_0_stuff_to_their_class_and_the_rest_to_unlabelled():
  num_things, num_stuff = 6, 3
  semantic = np.array([[1, 6, 7, 9], [0, 255, 10, 3]])
  expected = np.array([[0, 0, 1, 3], [UNLABELLED, UNLABELLED, UNLABELLED, 0]])
  np.testing.assert_array_equal(semantic_targets(semantic, num_things, num_stuff), expected)


def test_loss_leaves_unlabelled_pixels_out_and_scores_the_others():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 6, 5, 4)), jnp.float32)
  semantic = rng.integers(1, 10, size=(2, 6, 5))  # 6 things, 3 stuff classes
  semantic[0, :2] = 255  # letterbox padding
  targets = semantic_targets(semantic, 6, 3)
  loss, accuracy = semantic_loss(logits, targets)
  ignored = np.asarray(targets) == UNLABELLED
  assert ignored.sum() == 10
  noisy = jnp.where(jnp.asarray(ignored)[..., None], 100.0 * logits, logits)
  assert float(semantic_loss(noisy, targets)[0]) == pytest.approx(float(loss))
  # The reference: mean cross-entropy over the labelled pixels, accuracy over the same.
  log_p = np.asarray(jax.nn.log_softmax(logits))
  picked = np.take_along_axis(log_p, np.maximum(np.asarray(targets), 0)[..., None], -1)[..., 0]
  assert float(loss) == pytest.approx(-picked[~ignored].mean(), rel=1e-5)
  hits = (np.asarray(logits).argmax(-1) == np.asarray(targets))[~ignored]
  assert float(accuracy) == pytest.approx(hits.mean())
  changed = logits.at[1, 0, 0, 0].add(5.0)  # one class: the softmax moves
  assert abs(float(semantic_loss(changed, targets)[0]) - float(loss)) > 1e-4
  everything_ignored = jnp.full(targets.shape, UNLABELLED)
  assert float(semantic_loss(logits, everything_ignored)[0]) == 0.0


def _tiny_detector(**fields):
  return FasterRCNN(num_classes=6, backbone="resnet_tiny",
                    backbone_kwargs={"stem": "imagenet", "norm": "batch"}, fpn_channels=8,
                    rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                    detection_candidates=50, max_detections=10, **fields)


@pytest.mark.parametrize("fields, match", [
    (dict(semantic_head=True, num_stuff_classes=3), "mask_head=True"),
    (dict(semantic_head=True, mask_head=True, mask_head_channels=8, num_stuff_classes=0),
     "num_stuff_classes >= 1"),
])
def test_semantic_head_needs_the_mask_head_and_stuff_classes(fields, match):
  with pytest.raises(ValueError, match=match):
    _tiny_detector(**fields).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
