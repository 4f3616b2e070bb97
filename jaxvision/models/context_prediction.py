"""Context prediction (Doersch, Gupta and Efros 2015): where is this patch relative to that one?

The centre patch of a 3 x 3 grid and one of its 8 neighbours pass through the same backbone
(two towers sharing weights); each tower's pooled feature goes through a shared fully
connected layer, the two are concatenated, and a small MLP classifies the neighbour's
position (``NEIGHBOURS``: raster order of the grid without its centre).

The paper's guards against trivial shortcuts, as pure array functions applied to patches on
the device:

* :func:`normalize_patches`: each patch is standardized on its own (its per-channel mean
  subtracted, divided by its standard deviation), so absolute brightness and colour, which
  vary smoothly across an image, do not give the position away;
* chromatic aberration, whose colour fringes point to the image centre:
  :func:`project_out_green_magenta` (colour projection: remove each pixel's component along
  the green-magenta axis) or :func:`keep_one_channel` (channel dropping: of each patch only
  one random channel is kept, the others are set to their mean).
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.models.resnet import build_backbone

GRID_SIZE = 3
CENTRE = 4
# Grid cell (raster index) of each of the 8 positions the classifier predicts.
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
NUM_POSITIONS = len(NEIGHBOURS)
# The green-magenta axis of RGB (green minus the mean of red and blue), unit length.
GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0], np.float32) / np.sqrt(6.0)


def normalize_patches(patches: jax.Array, epsilon: float = 1e-3) -> jax.Array:
  """Each ``[..., H, W, C]`` patch minus its per-channel mean, divided by its std (over pixels
  and channels); ``epsilon`` keeps a flat patch finite."""
  patches = patches.astype(jnp.float32)
  centred = patches - jnp.mean(patches, axis=(-3, -2), keepdims=True)
  scale = jnp.sqrt(jnp.mean(centred ** 2, axis=(-3, -2, -1), keepdims=True) + epsilon ** 2)
  return centred / scale


def project_out_green_magenta(images: jax.Array) -> jax.Array:
  """RGB ``[..., 3]`` without its component along the green-magenta axis (Doersch et al.'s
  colour projection): green and magenta shifted toward grey."""
  chex.assert_axis_dimension(images, -1, 3)
  axis = jnp.asarray(GREEN_MAGENTA)
  return images - (images @ axis)[..., None] * axis


def keep_one_channel(patches: jax.Array, kept: jax.Array) -> jax.Array:
  """Channel dropping: ``[N, H, W, C]`` normalized patches with every channel but ``kept[n]``
  (int ``[N]``) set to 0, the mean of a normalized patch."""
  chex.assert_rank(patches, 4)
  mask = jax.nn.one_hot(kept, patches.shape[-1], dtype=patches.dtype)
  return patches * mask[:, None, None, :]


class ContextPrediction(nn.Module):
  """Two weight-sharing towers and the position classifier.

  ``__call__(pairs [B, 2, h, w, C] (centre, neighbour), train) -> logits [B, 8]``.

  Attributes:
    backbone: a preset of ``jaxvision.models.resnet.BACKBONES`` (the tower).
    backbone_kwargs: its overrides.
    hidden: width of the per-tower and the joint fully connected layers.
  """
  backbone: str = "resnet_tiny"
  backbone_kwargs: Any = None
  hidden: int = 128

  @nn.compact
  def __call__(self, pairs: jax.Array, train: bool) -> jax.Array:
    chex.assert_rank(pairs, 5)
    chex.assert_axis_dimension(pairs, 1, 2)
    count = pairs.shape[0]
    # Both towers in one batch (each pair's patches adjacent: a device's rows stay on it).
    features = build_backbone(self.backbone, **dict(self.backbone_kwargs or {}),
                              name="backbone")(pairs.reshape((-1,) + pairs.shape[2:]), train)
    x = nn.relu(nn.Dense(self.hidden, name="tower_fc")(features["pooled"]))
    x = nn.relu(nn.Dense(self.hidden, name="joint_fc")(x.reshape(count, 2 * self.hidden)))
    return nn.Dense(NUM_POSITIONS, name="classifier")(x)
