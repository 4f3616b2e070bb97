"""SimCLR (Chen et al. 2020): the shared backbone, an MLP projection head, the NT-Xent loss.

``nt_xent(z_a, z_b, temperature)`` is the paper's loss on already-gathered ``[N, D]``
embeddings of two views of N images: every one of the 2N embeddings is an anchor whose
positive is the other view of its image and whose negatives are the other 2N - 2
embeddings; cosine similarities divided by the temperature are the logits of a softmax
over the 2N - 1 candidates (the anchor itself is excluded):

  l(i, j) = -log( exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t) )

averaged over the 2N anchors.

``global_nt_xent(z_a, z_b, temperature, axis_name)`` is the same loss computed inside
``jax.shard_map`` over the data axis: each device holds its rows of the batch, gathers every
device's embeddings as candidates (``all_gather(tiled=True)``, so gradients flow back
through the gather) and scores only its own anchors, whose positives and selves lie at its
offset in the gathered batch; the sum is reduced with ``psum``. On any number of devices it
equals ``nt_xent`` of the whole batch.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.models.resnet import build_backbone, make_norm

# Logit of the excluded candidates (the anchor itself, padding rows): exp() of it is 0 in
# float32, and unlike -inf it keeps 0 * logit finite in the gradients.
_EXCLUDED = -1e9


def l2_normalize(x: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  """Rows of ``x`` scaled to unit L2 norm (an all-zero row stays 0)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), epsilon)


def contrastive_terms(anchors: jax.Array, candidates: jax.Array, positives: jax.Array,
                      selves: jax.Array, temperature: float,
                      candidate_mask: jax.Array | None = None
                      ) -> tuple[jax.Array, jax.Array]:
  """Per-anchor NT-Xent terms and top-1 hits of L2-normalized embeddings.

  Args:
    anchors: float [M, D], unit rows.
    candidates: float [K, D], unit rows; row ``selves[m]`` is anchor m itself.
    positives: int [M], the candidate row of each anchor's positive.
    selves: int [M], the candidate row of each anchor itself (excluded from its softmax).
    temperature: positive.
    candidate_mask: optional bool [K]; False rows (padding) are excluded everywhere.

  Returns:
    float32 [M] ``-log softmax(sim / t)[positive]`` and bool [M] whether the positive is
    the most similar candidate.
  """
  chex.assert_rank([anchors, candidates], 2)
  chex.assert_equal_shape([positives, selves])
  logits = jnp.matmul(anchors, candidates.T, precision=jax.lax.Precision.HIGHEST) / temperature
  excluded = jnp.arange(candidates.shape[0])[None, :] == selves[:, None]
  if candidate_mask is not None:
    excluded = excluded | ~candidate_mask[None, :]
  logits = jnp.where(excluded, _EXCLUDED, logits)
  positive_logits = jnp.take_along_axis(logits, positives[:, None], axis=1)[:, 0]
  loss = jax.nn.logsumexp(logits, axis=1) - positive_logits
  return loss, jnp.argmax(logits, axis=1) == positives


def pair_indices(count: int, offset: jax.Array | int, total: int
                 ) -> tuple[jax.Array, jax.Array]:
  """Candidate rows ``[2 count]`` of the positives and selves of ``count`` anchors per view.

  The candidates are ``[all views a; all views b]`` of ``total`` images; the anchors are
  ``[views a; views b]`` of images ``offset .. offset + count``.
  """
  rows = offset + jnp.arange(count)
  selves = jnp.concatenate([rows, total + rows])
  positives = jnp.concatenate([total + rows, rows])
  return positives, selves


def nt_xent(z_a: jax.Array, z_b: jax.Array, temperature: float) -> jax.Array:
  """SimCLR's NT-Xent loss of two views' embeddings ``[N, D]`` (row i of each: one image).

  Embeddings are L2-normalized here (cosine similarity); each of the 2N anchors has one
  positive and 2N - 2 negatives; the result is the mean over the 2N anchors.
  """
  return nt_xent_with_accuracy(z_a, z_b, temperature)[0]


def nt_xent_with_accuracy(z_a: jax.Array, z_b: jax.Array, temperature: float
                          ) -> tuple[jax.Array, jax.Array]:
  """:func:`nt_xent` and the fraction of anchors whose positive is their top-1 candidate."""
  chex.assert_equal_shape([z_a, z_b])
  chex.assert_rank(z_a, 2)
  if temperature <= 0:
    raise ValueError(f"The NT-Xent temperature must be positive; got {temperature}.")
  count = z_a.shape[0]
  z = l2_normalize(jnp.concatenate([z_a, z_b]).astype(jnp.float32))
  positives, selves = pair_indices(count, 0, count)
  loss, hits = contrastive_terms(z, z, positives, selves, temperature)
  return jnp.mean(loss), jnp.mean(hits.astype(jnp.float32))


def global_nt_xent(z_a: jax.Array, z_b: jax.Array, temperature: float, axis_name: str
                   ) -> tuple[jax.Array, jax.Array]:
  """NT-Xent and top-1 accuracy over the batch of every device along ``axis_name``.

  Call inside ``jax.shard_map`` with ``z_a``, ``z_b`` this device's ``[n, D]`` rows (the
  devices' rows in order make the global batch). Returns the loss and accuracy of the
  global batch, identical on every device (as :func:`nt_xent` of the gathered batch).
  """
  chex.assert_equal_shape([z_a, z_b])
  if temperature <= 0:
    raise ValueError(f"The NT-Xent temperature must be positive; got {temperature}.")
  count = z_a.shape[0]
  local = l2_normalize(jnp.concatenate([z_a, z_b]).astype(jnp.float32))
  local_a, local_b = local[:count], local[count:]
  gathered_a = jax.lax.all_gather(local_a, axis_name, tiled=True)
  gathered_b = jax.lax.all_gather(local_b, axis_name, tiled=True)
  total = gathered_a.shape[0]
  positives, selves = pair_indices(count, jax.lax.axis_index(axis_name) * count, total)
  loss, hits = contrastive_terms(local, jnp.concatenate([gathered_a, gathered_b]), positives,
                                 selves, temperature)
  anchors = 2 * total
  return (jax.lax.psum(jnp.sum(loss), axis_name) / anchors,
          jax.lax.psum(jnp.sum(hits.astype(jnp.float32)), axis_name) / anchors)


class ProjectionHead(nn.Module):
  """SimCLR's MLP head: ``Dense(hidden) -> BatchNorm -> ReLU -> Dense(features)``.

  Attributes:
    hidden: width of the hidden layer.
    features: dimension of the projection the loss sees.
  """
  hidden: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    chex.assert_rank(x, 2)
    x = nn.Dense(self.hidden, use_bias=False)(x)
    x = nn.relu(make_norm("batch", train)()(x))
    return nn.Dense(self.features)(x)


class SimCLR(nn.Module):
  """Backbone + projection head.

  Returns ``{"pooled": [B, C] backbone features (the representation), "projection": [B,
  projection_dim] (what NT-Xent compares)}``.

  Attributes:
    backbone: a preset of ``jaxvision.models.resnet.BACKBONES``.
    backbone_kwargs: its overrides (``stem``, ``width``, ...).
    hidden: the head's hidden width.
    projection_dim: the head's output dimension.
  """
  backbone: str = "resnet_tiny"
  backbone_kwargs: Any = None
  hidden: int = 128
  projection_dim: int = 64

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> dict[str, jax.Array]:
    features = build_backbone(self.backbone, **dict(self.backbone_kwargs or {}),
                              name="backbone")(images, train)
    projection = ProjectionHead(self.hidden, self.projection_dim, name="head")(
        features["pooled"], train)
    return {"pooled": features["pooled"], "projection": projection}
