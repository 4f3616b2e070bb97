"""Classification + localization: one backbone, a class head and a box head.

The classic single-object setup, a shared backbone and two linear heads reading the same
features, one for class logits and one for the normalized box ``(x1, y1, x2, y2) / size``,
with one addition that makes small objects on cluttered backgrounds learnable: a coarse
*locator* (an FC layer on the flattened C5, which keeps the spatial layout) predicts where
the object is, and the shared features are that global C5 vector concatenated with
RoIAlign-pooled features (``roi_feature``, C3 by default) inside the located box (what is
there, at the object's scale, free of the background). Both heads read these shared
features; the box head's output is the final box. Multitask regularizers act on the stacked
head matrix ``W = [W_class | W_box]``.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision import ops
from jaxvision.models.resnet import build_backbone

HEAD_NAMES = ("class_head", "box_head")
ROI_SIZE = (7, 7)


def _centred_box_init(*_):
  """Start from a centred box covering a quarter of the image: early box losses are small."""
  return jnp.array([0.25, 0.25, 0.75, 0.75])


def normalized_to_pixels(boxes: jax.Array, image_size: int) -> jax.Array:
  """Normalized predictions ``[B, 4]`` -> valid pixel boxes (clipped, x1 <= x2, y1 <= y2)."""
  boxes = jnp.clip(boxes, 0.0, 1.0) * image_size
  return jnp.concatenate([jnp.minimum(boxes[:, :2], boxes[:, 2:]),
                          jnp.maximum(boxes[:, :2], boxes[:, 2:])], axis=-1)


class ClassifyLocalize(nn.Module):
  """Backbone -> locator + RoI features -> {class logits ``[B, C]``, boxes ``[B, 4]``}.

  Outputs ``logits``, ``boxes`` (normalized, final) and ``coarse_boxes`` (normalized, the
  locator's; trained with the same box loss). ``dtype`` is the compute dtype
  (``jnp.bfloat16``: mixed precision); parameters and BatchNorm statistics stay float32 and
  the outputs are float32 (losses, RoI coordinates) whatever it is.
  """
  num_classes: int
  backbone: str = "resnet_small"
  backbone_kwargs: Any = None
  neck_channels: int = 32
  hidden: int = 256
  roi_feature: str = "C3"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    chex.assert_rank(images, 4)
    if self.roi_feature not in ("C2", "C3", "C4", "C5"):
      raise ValueError(f"Unknown roi_feature {self.roi_feature!r}; use 'C2', 'C3', 'C4' or 'C5'.")
    backbone = build_backbone(self.backbone, name="backbone", dtype=self.dtype,
                              **(self.backbone_kwargs or {}))
    features = backbone(images, train)
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    x = nn.relu(nn.Conv(self.neck_channels, (1, 1), dtype=self.dtype,
                        name="neck_reduce")(features["C5"]))
    x = nn.relu(dense(self.hidden, name="neck_fc")(x.reshape(x.shape[0], -1)))
    coarse = dense(4, name="locator", kernel_init=nn.initializers.zeros,
                   bias_init=_centred_box_init)(x).astype(jnp.float32)
    # The RoI only says where to look; its gradient comes from the locator's own loss.
    rois = jax.lax.stop_gradient(normalized_to_pixels(coarse, images.shape[1]))
    pooled = jax.vmap(lambda f, box: ops.roi_align(
        f, box[None], ROI_SIZE, spatial_scale=1.0 / backbone.strides[self.roi_feature],
        sampling_ratio=2, aligned=True)[0])(features[self.roi_feature], rois)
    roi = nn.relu(dense(self.hidden, name="roi_fc")(pooled.reshape(pooled.shape[0], -1)))
    shared = jnp.concatenate([x, roi], axis=-1)
    logits = dense(self.num_classes, name="class_head")(shared).astype(jnp.float32)
    boxes = coarse + dense(4, name="box_head", kernel_init=nn.initializers.zeros)(
        shared).astype(jnp.float32)
    return {"logits": logits, "boxes": boxes, "coarse_boxes": coarse}


def stacked_head_weights(params: dict[str, Any]) -> jax.Array:
  """``W``: the head kernels side by side, ``[features, num_classes + 4]`` (a column per output)."""
  return jnp.concatenate([params[name]["kernel"] for name in HEAD_NAMES], axis=1)


def multitask_regularizer(weights: jax.Array, kind: str) -> jax.Array:
  """A penalty on the stacked head matrix ``W`` (rows: shared features, columns: task outputs).

  - ``frobenius``: ``||W||_F^2``, plain weight decay of the heads.
  - ``l21``: ``sum_i ||W_i,:||_2``, row sparsity: the tasks agree on which features matter.
  - ``trace``: the nuclear norm ``sum_k sigma_k(W)``, low rank: the outputs share a subspace.
  """
  chex.assert_rank(weights, 2)
  if kind == "frobenius":
    return jnp.sum(weights**2)
  if kind == "l21":
    # The epsilon keeps the gradient finite on rows that are exactly zero.
    return jnp.sum(jnp.sqrt(jnp.sum(weights**2, axis=1) + 1e-12))
  if kind == "trace":
    return jnp.sum(jnp.linalg.svd(weights, compute_uv=False))
  raise ValueError(f"Unknown multitask regularizer {kind!r}; use 'none', 'frobenius', 'l21' "
                   "or 'trace'.")
