"""Learning-rate schedules, backbone multiplier, freezing, LARS, Adam's betas, lazy
construction and config validation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxvision.optim import default_optimizer_config, learning_rate_schedule, make_optimizer

PARAMS = {"backbone": {"conv": {"kernel": jnp.ones((3, 3))}},
          "head": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))}}


def test_warmup_then_cosine_and_step():
  config = default_optimizer_config(learning_rate=1.0, warmup_steps=10, schedule="cosine")
  schedule = learning_rate_schedule(config, 110)
  assert schedule(0) == 0.0 and schedule(5) == pytest.approx(0.5)
  assert schedule(10) == pytest.approx(1.0) and schedule(110) == pytest.approx(0.0, abs=1e-6)
  config = default_optimizer_config(learning_rate=1.0, schedule="step", decay_boundaries=(0.5,))
  schedule = learning_rate_schedule(config, 100)
  assert schedule(49) == 1.0 and schedule(51) == pytest.approx(0.1)


def _one_update(**overrides):
  config = default_optimizer_config(name="sgd", learning_rate=1.0, momentum=0.0,
                                    weight_decay=0.0, schedule="constant", **overrides)
  tx = make_optimizer(config, 10, PARAMS)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  return updates


def test_backbone_multiplier_and_freeze():
  updates = _one_update(backbone_lr_multiplier=0.1)
  np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -0.1)
  np.testing.assert_allclose(updates["head"]["kernel"], -1.0)
  updates = _one_update(freeze_regex="^backbone/")
  np.testing.assert_array_equal(updates["backbone"]["conv"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["head"]["bias"], -1.0)


def test_weight_decay_skips_biases():
  config = default_optimizer_config(name="sgd", learning_rate=1.0, momentum=0.0,
                                    weight_decay=0.5, schedule="constant")
  tx = make_optimizer(config, 10, PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["head"]["kernel"], -0.5)
  np.testing.assert_array_equal(updates["head"]["bias"], 0.0)


def test_bad_optimizer_configs_are_named():
  with pytest.raises(ValueError, match="freeze_regex"):
    _one_update(freeze_regex="^nothing_matches")
  with pytest.raises(ValueError, match="adamz"):
    make_optimizer(default_optimizer_config(name="adamz"), 10, PARAMS)
  with pytest.raises(ValueError, match="lamb"):
    make_optimizer(default_optimizer_config(name="lamb"), 10)
  config = default_optimizer_config()
  config.lr = 0.1
  with pytest.raises(ValueError, match="lr"):
    make_optimizer(config, 10, PARAMS)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_lazily_built_optimizer_matches_eager_bit_for_bit(name):
  config = default_optimizer_config(name=name, learning_rate=0.1, weight_decay=0.05,
                                    backbone_lr_multiplier=0.1, freeze_regex="bias$",
                                    grad_clip_norm=1.0)
  params = {"backbone": {"conv": {"kernel": jnp.arange(9.0).reshape(3, 3) / 9,
                                  "bias": jnp.ones((3,))}},
            "head": {"kernel": jnp.linspace(-1.0, 1.0, 6).reshape(3, 2),
                     "norm": {"scale": jnp.full((2,), 2.0)}, "bias": jnp.ones((2,))}}
  grads = jax.tree.map(lambda x: jnp.cos(jnp.arange(x.size, dtype=x.dtype).reshape(x.shape)),
                       params)
  eager = make_optimizer(config, 10, params)
  lazy = make_optimizer(config, 10)
  eager_state, lazy_state = eager.init(params), jax.jit(lazy.init)(params)
  for _ in range(3):
    # Both under jit: eager dispatch and a fused XLA program may round differently.
    eager_updates, eager_state = jax.jit(eager.update)(grads, eager_state, params)
    lazy_updates, lazy_state = jax.jit(lazy.update)(grads, lazy_state, params)
    jax.tree.map(np.testing.assert_array_equal, lazy_updates, eager_updates)
  np.testing.assert_array_equal(lazy_updates["head"]["bias"], 0.0)


def test_lazily_built_optimizer_names_a_freeze_regex_matching_nothing_at_init():
  tx = make_optimizer(default_optimizer_config(freeze_regex="^nothing_matches"), 10)
  with pytest.raises(ValueError, match="freeze_regex"):
    jax.jit(tx.init)(PARAMS)


def test_lars_adapts_weights_and_gives_biases_plain_momentum():
  learning_rate, weight_decay, trust, momentum = 0.5, 0.1, 0.01, 0.9
  config = default_optimizer_config(name="lars", learning_rate=learning_rate,
                                    weight_decay=weight_decay, trust_coefficient=trust,
                                    momentum=momentum, schedule="constant")
  kernel = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.0]], np.float32)
  bias = np.array([0.5, -0.5], np.float32)
  params = {"head": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}
  kernel_grad = np.array([[0.3, 0.1], [-0.2, 0.4], [0.0, -0.6]], np.float32)
  bias_grad = np.array([0.2, -0.7], np.float32)
  grads = {"head": {"kernel": jnp.asarray(kernel_grad), "bias": jnp.asarray(bias_grad)}}
  tx = make_optimizer(config, 10)
  state = tx.init(params)
  first, state = tx.update(grads, state, params)
  # SimCLR's LARS (and optax.lars): the decay joins the gradient before the trust ratio.
  decayed = kernel_grad + weight_decay * kernel
  trust_ratio = trust * np.linalg.norm(kernel) / np.linalg.norm(decayed)
  np.testing.assert_allclose(first["head"]["kernel"], -learning_rate * trust_ratio * decayed,
                             rtol=1e-6)
  np.testing.assert_allclose(first["head"]["bias"], -learning_rate * bias_grad, rtol=1e-6)
  second, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(second["head"]["bias"],
                             -learning_rate * (1 + momentum) * bias_grad, rtol=1e-6)


def test_adam_betas_reach_optax_and_default_to_0_9_and_0_999():
  grads = jax.tree.map(lambda x: jnp.full_like(x, 2.0), PARAMS)

  def moments(config):
    tx = make_optimizer(config, 10, PARAMS)
    _, state = tx.update(grads, tx.init(PARAMS), PARAMS)
    return (optax.tree_utils.tree_get(state, "mu")["head"]["kernel"],
            optax.tree_utils.tree_get(state, "nu")["head"]["kernel"])

  # After one update from zero moments: mu = (1 - b1) g, nu = (1 - b2) g^2.
  mu, nu = moments(default_optimizer_config(name="adamw", b1=0.5, b2=0.75, weight_decay=0.0))
  np.testing.assert_allclose(mu, 0.5 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(nu, 0.25 * 4.0, rtol=1e-6)
  mu, nu = moments(default_optimizer_config(name="adamw", weight_decay=0.0))
  np.testing.assert_allclose(mu, 0.1 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(nu, 0.001 * 4.0, rtol=1e-5)
  # A config written before b1/b2 existed (e.g. restored from an older checkpoint) builds.
  legacy = default_optimizer_config(name="adamw", weight_decay=0.0).to_dict()
  del legacy["b1"], legacy["b2"]
  mu, _ = moments(ml_collections.ConfigDict(legacy))
  np.testing.assert_allclose(mu, 0.1 * 2.0, rtol=1e-6)
  with pytest.raises(ValueError, match="b1"):
    make_optimizer(default_optimizer_config(b1=1.0), 10)
