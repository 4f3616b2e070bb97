"""Classification + localization: one backbone, a class head and a box head.

The classic single-object setup: a shared backbone, a small shared neck, and two linear
heads reading the same neck features, one for class logits and one for the normalized box
``(x1, y1, x2, y2) / size``. The neck concatenates the global max of C5 (translation
invariant, and not diluted by the background around a small object: what the object is)
with an FC layer on the flattened, channel-reduced C5 (which keeps the spatial layout:
where it is).
Multitask regularizers act on the stacked head matrix ``W = [W_class | W_box]``.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.resnet import build_backbone

HEAD_NAMES = ("class_head", "box_head")


class ClassifyLocalize(nn.Module):
  """Backbone -> neck -> {class logits ``[B, C]``, normalized boxes ``[B, 4]``}."""
  num_classes: int
  backbone: str = "resnet_small"
  backbone_kwargs: Any = None
  neck_channels: int = 32
  hidden: int = 256

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    chex.assert_rank(images, 4)
    features = build_backbone(self.backbone, name="backbone", **(self.backbone_kwargs or {}))(
        images, train)
    x = nn.relu(nn.Conv(self.neck_channels, (1, 1), name="neck_reduce")(features["C5"]))
    x = nn.relu(nn.Dense(self.hidden, name="neck_fc")(x.reshape(x.shape[0], -1)))
    x = jnp.concatenate([jnp.max(features["C5"], axis=(1, 2)), x], axis=-1)
    logits = nn.Dense(self.num_classes, name="class_head")(x)
    # Start from a centred box covering a quarter of the image, so early box losses are small.
    boxes = nn.Dense(4, name="box_head", kernel_init=nn.initializers.zeros,
                     bias_init=lambda *_: jnp.array([0.25, 0.25, 0.75, 0.75]))(x)
    return {"logits": logits, "boxes": boxes}


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
