"""Losses shared by the heads of several model families."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def smooth_l1(predicted: jax.Array, target: jax.Array, beta: float) -> jax.Array:
  """Elementwise smooth-L1 (torchvision's convention): quadratic below ``beta``, L1 above.

  ``beta == 0`` is the plain L1 loss.
  """
  if beta == 0:
    return jnp.abs(predicted - target)
  return optax.huber_loss(predicted, target, delta=beta) / beta


def sigmoid_focal_loss(logits: jax.Array, labels: jax.Array, alpha: float | None = 0.25,
                       gamma: float = 2.0) -> jax.Array:
  """Elementwise sigmoid focal loss (Lin et al., 2017): ``-alpha_t (1 - p_t)^gamma log(p_t)``.

  ``p_t = p`` where the label is 1 and ``1 - p`` where it is 0 (``p = sigmoid(logits)``);
  ``alpha_t = alpha`` / ``1 - alpha`` likewise. The cross-entropy term is optax's stable
  ``sigmoid_binary_cross_entropy``, and ``1 - p_t`` is taken as ``sigmoid(-logit)`` /
  ``sigmoid(logit)`` rather than ``1 - sigmoid(.)``, so that a confident prediction's
  weight does not round to 0 before its loss does. Soft labels in ``[0, 1]`` interpolate
  both. Equal to ``optax.sigmoid_focal_loss`` (tests/models/test_losses.py).

  Args:
    logits: ``[...]`` float logits.
    labels: ``[...]`` targets in ``[0, 1]``, broadcastable to ``logits``.
    alpha: weight of the positives (0.25 in RetinaNet), ``1 - alpha`` of the negatives;
      ``None`` weighs both by 1.
    gamma: focusing exponent (2 in RetinaNet; 0 gives the cross-entropy).

  Returns:
    The loss, shaped like ``logits`` (sum it and divide by the positives' count).
  """
  labels = jnp.asarray(labels, logits.dtype)
  cross_entropy = optax.sigmoid_binary_cross_entropy(logits, labels)
  one_minus_p_t = labels * jax.nn.sigmoid(-logits) + (1 - labels) * jax.nn.sigmoid(logits)
  loss = cross_entropy * one_minus_p_t ** gamma
  if alpha is None:
    return loss
  return (alpha * labels + (1 - alpha) * (1 - labels)) * loss


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array, ignore_label: int,
                        class_weights: jax.Array | None = None) -> jax.Array:
  """Softmax cross-entropy averaged over the scored pixels, optionally class-weighted.

  ``sum_p w[y_p] CE_p / sum_p w[y_p]`` over the pixels whose label is not ``ignore_label``
  (PyTorch's ``cross_entropy(weight=w, ignore_index=ignore_label)``); 0 when no pixel is
  scored. Labels outside ``[0, C)`` are not scored either.

  Args:
    logits: ``[..., C]`` float.
    labels: int ``[...]``.
    ignore_label: label of the pixels left out.
    class_weights: optional ``[C]`` weight of each true class (e.g. inverse frequencies).

  Returns:
    float32 scalar.
  """
  num_classes = logits.shape[-1]
  scored = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  safe_labels = jnp.where(scored, labels, 0)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                          safe_labels)
  weights = scored.astype(jnp.float32)
  if class_weights is not None:
    weights = weights * jnp.asarray(class_weights, jnp.float32)[safe_labels]
  total = jnp.sum(weights)
  return jnp.sum(weights * losses) / jnp.where(total > 0, total, 1.0)
