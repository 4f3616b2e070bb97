"""NT-Xent against the SimCLR paper's formula, its minimum, and its cross-device version."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxvision.models import simclr


def paper_nt_xent(z_a, z_b, temperature):
  """The paper's Algorithm 1, written as loops in float64: z_{2k-1}, z_{2k} are the views of
  image k, l(i, j) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t)), and
  L = 1 / (2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]."""
  z = []
  for a, b in zip(np.asarray(z_a, np.float64), np.asarray(z_b, np.float64)):
    z += [a / np.linalg.norm(a), b / np.linalg.norm(b)]
  count = len(z)

  def sim(i, j):
    return float(np.dot(z[i], z[j]))

  def term(i, j):
    denominator = sum(np.exp(sim(i, k) / temperature) for k in range(count) if k != i)
    return -np.log(np.exp(sim(i, j) / temperature) / denominator)

  return sum(term(2 * k, 2 * k + 1) + term(2 * k + 1, 2 * k)
             for k in range(count // 2)) / count


@pytest.mark.parametrize("count,dim,temperature", [(1, 3, 0.5), (5, 8, 0.1), (12, 4, 1.0)])
def test_nt_xent_equals_the_papers_formula(count, dim, temperature):
  rng = np.random.default_rng(count)
  z_a = rng.normal(size=(count, dim)).astype(np.float32) * 3
  z_b = rng.normal(size=(count, dim)).astype(np.float32)
  loss = simclr.nt_xent(jnp.asarray(z_a), jnp.asarray(z_b), temperature)
  np.testing.assert_allclose(float(loss), paper_nt_xent(z_a, z_b, temperature), rtol=2e-5)


def test_nt_xent_is_minimal_when_each_view_matches_only_its_partner():
  """Identical views, orthogonal images: the closed form; any perturbation, a swap of
  partners or a shared direction raises it."""
  count, temperature = 6, 0.2
  z = np.eye(count, 8, dtype=np.float32)
  best = float(simclr.nt_xent(z, z, temperature))
  closed_form = -np.log(np.exp(1 / temperature) / (np.exp(1 / temperature) + 2 * count - 2))
  np.testing.assert_allclose(best, closed_form, rtol=1e-5)
  rng = np.random.default_rng(0)
  for _ in range(10):
    noisy = z + 0.1 * rng.normal(size=z.shape).astype(np.float32)
    assert float(simclr.nt_xent(z, noisy, temperature)) > best
  assert float(simclr.nt_xent(z, np.roll(z, 1, axis=0), temperature)) > best + 1
  shared = z + np.ones_like(z)
  assert float(simclr.nt_xent(shared, shared, temperature)) > best + 1
  # The gradient at the optimum along the partners is zero; the loss rises either way.
  gradient = jax.grad(lambda b: simclr.nt_xent(z, b, temperature))(z)
  np.testing.assert_allclose(np.sum(gradient * z, axis=1), 0, atol=1e-5)


def test_accuracy_counts_anchors_whose_partner_is_nearest():
  z_a = np.eye(4, dtype=np.float32)
  z_b = z_a[[0, 1, 3, 2]]  # images 2 and 3 have each other's partner
  _, accuracy = simclr.nt_xent_with_accuracy(z_a, z_b, 0.5)
  # Anchors 2a, 3a, 2b, 3b find the other image's view first: 4 of the 8 are right.
  assert float(accuracy) == pytest.approx(0.5)


def test_global_nt_xent_on_8_devices_equals_nt_xent_of_the_whole_batch():
  mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
  rng = np.random.default_rng(1)
  z_a = rng.normal(size=(16, 5)).astype(np.float32)
  z_b = (z_a + 0.5 * rng.normal(size=(16, 5))).astype(np.float32)

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P("data"), P("data")),
                     out_specs=P())
  def global_loss(z_a, z_b):
    return simclr.global_nt_xent(z_a, z_b, 0.3, "data")[0]

  loss, grads = jax.jit(jax.value_and_grad(global_loss, argnums=(0, 1)))(z_a, z_b)
  expected, expected_grads = jax.value_and_grad(simclr.nt_xent, argnums=(0, 1))(z_a, z_b, 0.3)
  np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
  for got, want in zip(grads, expected_grads):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(loss), paper_nt_xent(z_a, z_b, 0.3), rtol=2e-5)


def test_bad_inputs_are_named():
  z = np.ones((3, 4), np.float32)
  with pytest.raises(ValueError, match="temperature must be positive"):
    simclr.nt_xent(z, z, 0.0)
  with pytest.raises(AssertionError):
    simclr.nt_xent(z, np.ones((4, 4), np.float32), 0.5)


def test_simclr_model_returns_the_pooled_representation_and_the_projection():
  model = simclr.SimCLR(backbone="resnet_tiny", hidden=16, projection_dim=8)
  images = jnp.zeros((2, 16, 16, 3))
  variables = model.init(jax.random.key(0), images, train=False)
  outputs = model.apply(variables, images, train=False)
  assert outputs["pooled"].shape == (2, 64) and outputs["projection"].shape == (2, 8)
  assert {"backbone", "head"} == set(variables["params"])
