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
