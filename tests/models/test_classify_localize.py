"""The multitask model, its regularizers and its box losses against numpy references."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models.classify_localize import (ClassifyLocalize, multitask_regularizer,
                                                stacked_head_weights)
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks.classify_localize import box_loss


def test_backbone_features_are_named_and_strided():
  backbone = build_backbone("resnet_tiny")
  images = jnp.zeros((2, 64, 64, 3))
  # Jitted: one compile instead of one per operation (eager flax is slow on XLA:CPU).
  variables = jax.jit(functools.partial(backbone.init, train=False))(jax.random.key(0), images)
  features = jax.jit(functools.partial(backbone.apply, train=False))(variables, images)
  for name, stride in backbone.strides.items():
    chex.assert_shape(features[name], (2, 64 // stride, 64 // stride, None))
  chex.assert_shape(features["pooled"], (2, 64))


@pytest.mark.parametrize("preset, expected", [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_resnet_parameter_counts_match_the_papers(preset, expected):
  # torchvision's resnet18/resnet50 without the final fc layer have exactly these counts.
  backbone = build_backbone(preset)
  shapes = jax.eval_shape(
      lambda: backbone.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"])) == expected


def test_heads_share_the_neck_and_stack_into_w():
  model = ClassifyLocalize(num_classes=6, backbone="resnet_tiny", hidden=16, neck_channels=4)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  out = jax.jit(functools.partial(model.apply, train=False))(variables, jnp.zeros((3, 64, 64, 3)))
  chex.assert_shape(out["logits"], (3, 6))
  chex.assert_shape(out["boxes"], (3, 4))
  chex.assert_shape(out["coarse_boxes"], (3, 4))
  # Shared features: the 16-unit FC on C5 + the 16-unit FC on the RoI features.
  chex.assert_shape(stacked_head_weights(variables["params"]), (16 + 16, 10))


@pytest.mark.parametrize("roi_feature, channels", [("C2", 8), ("C3", 16)])
def test_roi_features_come_from_the_named_backbone_level(roi_feature, channels):
  model = ClassifyLocalize(num_classes=6, backbone="resnet_tiny", hidden=16, neck_channels=4,
                           roi_feature=roi_feature)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  # resnet_tiny: 8 channels in C2, 16 in C3; the RoI FC reads a 7 x 7 grid of them.
  chex.assert_shape(variables["params"]["roi_fc"]["kernel"], (7 * 7 * channels, 16))


def test_unknown_roi_feature_is_an_error_naming_it():
  model = ClassifyLocalize(num_classes=6, backbone="resnet_tiny", roi_feature="P3")
  with pytest.raises(ValueError, match="roi_feature 'P3'"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))


def test_regularizers_match_numpy():
  w = np.random.default_rng(0).normal(size=(12, 10)).astype(np.float32)
  np.testing.assert_allclose(multitask_regularizer(w, "frobenius"), np.sum(w**2), rtol=1e-5)
  np.testing.assert_allclose(multitask_regularizer(w, "l21"),
                             np.sum(np.linalg.norm(w, axis=1)), rtol=1e-5)
  np.testing.assert_allclose(multitask_regularizer(w, "trace"),
                             np.sum(np.linalg.svd(w, compute_uv=False)), rtol=1e-5)
  with pytest.raises(ValueError, match="nuclear"):
    multitask_regularizer(w, "nuclear")


def test_l21_gradient_is_finite_on_zero_rows_and_shrinks_rows():
  w = jnp.zeros((4, 3)).at[0].set(jnp.array([3.0, 4.0, 0.0]))
  grad = jax.grad(lambda w: multitask_regularizer(w, "l21"))(w)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad[0], np.array([0.6, 0.8, 0.0]), rtol=1e-5)


def test_trace_norm_prefers_low_rank():
  rng = np.random.default_rng(1)
  u, v = rng.normal(size=(8, 1)), rng.normal(size=(1, 6))
  rank_one = u @ v
  full = rng.normal(size=(8, 6))
  full *= np.linalg.norm(rank_one) / np.linalg.norm(full)  # Same Frobenius norm.
  assert multitask_regularizer(rank_one, "trace") < multitask_regularizer(full, "trace")


def test_box_losses_and_paired_iou():
  target = jnp.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]])
  predicted = jnp.array([[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 0.5, 1.0]])
  np.testing.assert_allclose(ops.paired_box_iou(predicted * 64, target * 64), [1.0, 0.5],
                             rtol=1e-6)
  np.testing.assert_allclose(box_loss(predicted, target, "l2"), [0.0, 0.25], rtol=1e-6)
  np.testing.assert_allclose(box_loss(predicted, target, "giou"), [0.0, 0.5], rtol=1e-5)
  smooth = box_loss(predicted, target, "smooth_l1")
  assert smooth[0] == 0.0 and smooth[1] > 0.0
  with pytest.raises(ValueError, match="box_loss"):
    box_loss(predicted, target, "l3")
