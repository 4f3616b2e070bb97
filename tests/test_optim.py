"""Learning-rate schedules, backbone multiplier, freezing and config validation."""

import jax
import jax.numpy as jnp
import numpy as np
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
  config = default_optimizer_config()
  config.lr = 0.1
  with pytest.raises(ValueError, match="lr"):
    make_optimizer(config, 10, PARAMS)
