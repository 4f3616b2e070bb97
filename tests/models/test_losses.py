"""Shared losses: the sigmoid focal loss against optax and the paper's formula."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.models.losses import sigmoid_focal_loss


def _paper_focal_loss(logits, labels, alpha, gamma):
  """Lin et al. 2017, eq. 5, in float64: ``-alpha_t (1 - p_t)^gamma log(p_t)``."""
  logits = np.asarray(logits, np.float64)
  p = 1 / (1 + np.exp(-logits))
  p_t = np.where(labels == 1, p, 1 - p)
  alpha_t = np.where(labels == 1, alpha, 1 - alpha) if alpha is not None else 1.0
  return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 2.0), (0.5, 0.5), (0.25, 0.0)])
def test_focal_loss_equals_optax_and_the_paper(alpha, gamma):
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 4, (64, 5)).astype(np.float32)
  labels = (rng.uniform(size=(64, 5)) < 0.3).astype(np.float32)
  ours = np.asarray(sigmoid_focal_loss(jnp.asarray(logits), jnp.asarray(labels), alpha, gamma))
  reference = np.asarray(optax.sigmoid_focal_loss(jnp.asarray(logits), jnp.asarray(labels),
                                                  alpha=alpha, gamma=gamma))
  np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ours, _paper_focal_loss(logits, labels, alpha, gamma),
                             rtol=1e-4, atol=1e-7)


def test_focal_loss_with_gamma_zero_is_weighted_cross_entropy_and_focuses_on_hard_examples():
  logits = jnp.array([-3.0, 0.0, 3.0])
  labels = jnp.array([1.0, 1.0, 1.0])
  np.testing.assert_allclose(sigmoid_focal_loss(logits, labels, alpha=None, gamma=0.0),
                             optax.sigmoid_binary_cross_entropy(logits, labels), rtol=1e-6)
  # gamma = 2 shrinks an easy example's loss (p_t = 0.95) far more than a hard one's.
  ratio = (sigmoid_focal_loss(logits, labels, None, 2.0)
           / optax.sigmoid_binary_cross_entropy(logits, labels))
  np.testing.assert_allclose(ratio, (1 - jax.nn.sigmoid(logits)) ** 2, rtol=1e-5)


def test_focal_loss_gradient_is_finite_for_confident_logits():
  grad = jax.grad(lambda x: sigmoid_focal_loss(x, jnp.array([1.0, 0.0, 1.0, 0.0])).sum())(
      jnp.array([40.0, -40.0, -40.0, 40.0]))
  assert np.all(np.isfinite(grad))
  # Wrong and confident: the gradient pushes towards the label.
  assert grad[2] < 0 and grad[3] > 0
