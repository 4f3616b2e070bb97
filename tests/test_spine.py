"""Spine v2: a task with two networks and two optimizers (the GAN's shape), a mesh collective
inside a step, the likelihood and sample evaluator hooks, and host syncs at log steps only.

The toy task reads an ``.npz`` through the ``arrays`` source: 8 x 8 one-channel images whose
pixels are on with a probability that depends on the label. Its two networks are trained
alternately with their own optimizers: a linear ``classifier`` (AdamW, even steps) and an
independent-pixel Bernoulli ``density`` (SGD, odd steps) whose loss is reduced over the
global batch by ``psum`` inside ``jax.shard_map``.
"""

import contextlib
import functools
import json
import os
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxvision import checkpoint, data, optim, parallel, trainer
from jaxvision.tasks import base

SIDE, NUM_EXAMPLES = 8, 128


class PixelLogits(nn.Module):
  """One Bernoulli logit per pixel: an independent-pixels density."""

  @nn.compact
  def __call__(self, x):
    return jnp.broadcast_to(self.param("logits", nn.initializers.zeros, x.shape[1:]), x.shape)


def binarize(images):
  return (images.reshape(images.shape[0], -1) > 127).astype(jnp.float32)


@base.register("toy_two_networks")
class TwoNetworks(base.MultiNetworkTask):
  """Two networks, two optimizers, updated alternately; see the module docstring."""

  networks = ("classifier", "density")
  guarded_metrics = ("classifier_loss", "density_loss")

  def __init__(self, config, mesh=None):
    super().__init__(config, mesh)
    self.modules = {"classifier": nn.Dense(2), "density": PixelLogits()}
    self.tx = {"classifier": optim.make_optimizer(config.optimizer, config.total_steps),
               "density": optim.make_optimizer(config.density_optimizer, config.total_steps)}

  def init_state(self, rng, batch):
    x = binarize(jnp.asarray(batch["image"]))
    state = {"step": jnp.zeros((), jnp.int32)}
    for name, key in zip(self.networks, jax.random.split(rng)):
      params = self.modules[name].init(key, x)["params"]
      state[name] = {"params": params, "opt_state": self.tx[name].init(params)}
    return state

  def classifier_loss(self, params, batch):
    logits = self.modules["classifier"].apply({"params": params}, binarize(batch["image"]))
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

  def density_loss(self, params, batch):
    """Mean negative log-likelihood over the global batch, reduced across devices by hand."""

    @functools.partial(jax.shard_map, mesh=self.mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                       out_specs=P())
    def global_mean(params, images):
      nll = -self.log_likelihood({"params": params}, {"image": images}, None)
      return (jax.lax.psum(jnp.sum(nll), parallel.DATA_AXIS)
              / jax.lax.psum(nll.shape[0], parallel.DATA_AXIS))

    return global_mean(params, batch["image"])

  def train_step(self, state, batch, rng):
    del rng
    losses = {"classifier": self.classifier_loss, "density": self.density_loss}

    def update(name):
      params, opt_state = state[name]["params"], state[name]["opt_state"]
      grads = jax.grad(losses[name])(params, batch)
      updates, opt_state = self.tx[name].update(grads, opt_state, params)
      return {**state, name: {"params": optax.apply_updates(params, updates),
                              "opt_state": opt_state}}

    new_state = jax.lax.cond(state["step"] % 2 == 0, lambda: update("classifier"),
                             lambda: update("density"))
    new_state["step"] = state["step"] + 1
    metrics = {f"{name}_loss": losses[name](state[name]["params"], batch)
               for name in self.networks}
    return new_state, metrics

  def log_likelihood(self, variables, batch, rng):
    del rng
    x = binarize(batch["image"])
    logits = self.modules["density"].apply(variables, x)
    return -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)

  def sample(self, variables, rng, num_samples):
    shape = (num_samples, SIDE * SIDE)
    logits = self.modules["density"].apply(variables, jnp.zeros(shape))
    on = jax.random.bernoulli(rng, jax.nn.sigmoid(logits))
    return on.reshape(num_samples, SIDE, SIDE, 1).astype(jnp.uint8) * 255


@pytest.fixture(scope="module")
def npz_path(tmp_path_factory):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, NUM_EXAMPLES)
  # Label 1 lights the top half more often: both networks have something to learn.
  probability = np.where(labels[:, None, None] == 1,
                         np.where(np.arange(SIDE)[:, None] < SIDE // 2, 0.8, 0.2), 0.4)
  images = (rng.random((NUM_EXAMPLES, SIDE, SIDE)) < probability).astype(np.uint8) * 255
  path = tmp_path_factory.mktemp("toy_data") / "toy.npz"
  np.savez(path, images=images, labels=labels)
  return str(path)


def toy_config(npz_path, **overrides):
  config = ml_collections.ConfigDict(dict(
      task="toy_two_networks", seed=0, total_steps=8, batch_size=16, eval_every=8,
      checkpoint_every=2, log_every=4, init_from="", eval_split="validation",
      inference_network="classifier", model=ml_collections.ConfigDict(),
      optimizer=optim.default_optimizer_config(name="adamw", learning_rate=0.05),
      density_optimizer=optim.default_optimizer_config(name="sgd", learning_rate=5.0,
                                                        momentum=0.0, weight_decay=0.0)))
  config.data = data.data_config(
      name="arrays", path=npz_path, splits={"train": [0, 96], "validation": [96, 128]},
      image_size=SIDE, channels=1, mean=(0.5,), std=(0.5,), features=("image", "label"),
      flip=False, num_threads=1, prefetch_batches=1)
  config.evals = {"likelihood": {"kind": "likelihood", "network": "density"},
                  "samples": {"kind": "samples", "network": "density", "num_samples": 8}}
  config.update(overrides)
  return config


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_steps_alternate_between_the_two_networks(npz_path):
  config = toy_config(npz_path)
  task = base.get_task(config, mesh_of(2))
  state = trainer.init_state(task, config, task.train_batch(0))
  step = trainer.make_train_step(task, config)
  before = jax.device_get(state)
  state, _ = step(state, parallel.global_batch(task.train_batch(0), task.mesh))
  after_even = jax.device_get(state)
  state, metrics = step(state, parallel.global_batch(task.train_batch(1), task.mesh))
  after_odd = jax.device_get(state)
  assert set(metrics) == {"classifier_loss", "density_loss"}

  def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

  assert not same(before["classifier"], after_even["classifier"])
  assert same(before["density"], after_even["density"])
  assert same(after_even["classifier"], after_odd["classifier"])
  assert not same(after_even["density"], after_odd["density"])
  assert int(after_odd["step"]) == 2


def test_shard_map_loss_sees_the_global_batch(npz_path):
  """The density loss on 2 devices equals the plain mean over the whole batch; a mean of
  one device's rows (what a loss without the psum would see) differs from it."""
  config = toy_config(npz_path)
  task = base.get_task(config, mesh_of(2))
  batch = task.train_batch(0)
  params = {"logits": jnp.linspace(-2.0, 2.0, SIDE * SIDE)}
  loss = jax.jit(task.density_loss)(params, parallel.global_batch(batch, task.mesh))
  nll = -np.asarray(task.log_likelihood({"params": params}, batch, None))
  np.testing.assert_allclose(float(loss), nll.mean(), rtol=1e-6)
  assert abs(nll[:8].mean() - nll.mean()) > 1e-3


def test_two_networks_train_checkpoint_resume_and_restore(npz_path, tmp_path):
  config = toy_config(npz_path)
  reference = str(tmp_path / "reference")
  trainer.train_and_evaluate(config, reference, mesh=mesh_of(2))

  # Interrupted after step 5 (checkpoints at 2 and 4), then resumed by the same command.
  resumed = str(tmp_path / "resumed")
  original = TwoNetworks.train_batches

  def failing_batches(self, start_step):
    for step, batch in enumerate(original(self, start_step), start_step):
      if step == 5:
        raise KeyboardInterrupt("killed")
      yield batch

  TwoNetworks.train_batches = failing_batches
  try:
    with pytest.raises(KeyboardInterrupt):
      trainer.train_and_evaluate(config, resumed, mesh=mesh_of(2))
  finally:
    TwoNetworks.train_batches = original
  assert checkpoint.Checkpointer(resumed).latest_step() == 4
  trainer.train_and_evaluate(config, resumed, mesh=mesh_of(2))

  sharding = parallel.replicated(mesh_of(1))
  expected, _, _ = checkpoint.restore_replicated(os.path.join(reference, "checkpoints"), sharding)
  actual, _, _ = checkpoint.restore_replicated(os.path.join(resumed, "checkpoints"), sharding)
  assert int(actual["step"]) == 8
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(expected), jax.device_get(actual))
  initial = jax.device_get(trainer.init_state(
      base.get_task(config, mesh_of(1)), config,
      base.get_task(config, mesh_of(1)).train_batch(0)))
  for name in ("classifier", "density"):
    assert not np.array_equal(jax.tree.leaves(initial[name]["params"])[0],
                              jax.tree.leaves(jax.device_get(actual)[name]["params"])[0])

  # Notebook restore: the config's inference_network by default, or the one asked for.
  restored_config, model, variables = checkpoint.restore_for_inference(resumed)
  assert restored_config.task == "toy_two_networks" and isinstance(model, nn.Dense)
  np.testing.assert_array_equal(variables["params"]["kernel"],
                                expected["classifier"]["params"]["kernel"])
  _, density, variables = checkpoint.restore_for_inference(resumed, network="density")
  assert isinstance(density, PixelLogits)
  np.testing.assert_array_equal(variables["params"]["logits"],
                                expected["density"]["params"]["logits"])
  with pytest.raises(ValueError, match=r"no network 'generator'.*\['classifier', 'density'\]"):
    checkpoint.restore_for_inference(resumed, network="generator")

  # The evaluator hooks ran on the density network: a likelihood and a sample grid.
  final = [line for line in read_metrics(reference) if "eval/nll_nats" in line][-1]
  assert final["step"] == 8
  np.testing.assert_allclose(final["eval/bits_per_dim"],
                             final["eval/nll_nats"] / (SIDE * SIDE * np.log(2)), rtol=1e-6)
  assert final["eval/nll_nats"] < SIDE * SIDE * np.log(2)  # better than p = 1/2 everywhere
  assert any(name.endswith("_samples.png") for name in os.listdir(
      os.path.join(reference, "pictures")))


def test_likelihood_evaluator_is_the_mean_nll_of_the_split(npz_path):
  from jaxvision.evaluation import evaluators

  config = toy_config(npz_path)
  task = base.get_task(config, mesh_of(2))
  state = trainer.init_state(task, config, task.train_batch(0))
  state["density"]["params"] = {"logits": jnp.linspace(-1.0, 1.0, SIDE * SIDE)}
  metrics = evaluators.run_evaluators(evaluators.make_evaluators(task, config, None), state, 0,
                                      config.seed)
  images = np.load(npz_path)["images"][96:]
  x = (images.reshape(len(images), -1) > 127).astype(np.float64)
  logits = np.linspace(-1.0, 1.0, SIDE * SIDE)
  log_p = x * -np.log1p(np.exp(-logits)) + (1 - x) * -np.log1p(np.exp(logits))
  np.testing.assert_allclose(metrics["nll_nats"], -log_p.sum(axis=1).mean(), rtol=1e-5)


def test_host_reads_device_values_only_at_log_checkpoint_and_eval_steps(npz_path, tmp_path,
                                                                        monkeypatch):
  """Every device-to-host read of an array (``float(x)``, ``jax.device_get``) outside the
  trainer's ``host_sync`` blocks is recorded: there must be none (CPU arrays also convert by
  zero-copy ``np.asarray``, which this cannot see)."""
  from jax._src import array as array_lib

  reads, inside = [], [False]
  value = array_lib.ArrayImpl._value

  def recorded(self):
    if not inside[0]:
      reads.append("".join(traceback.format_stack(limit=8)))
    return value.fget(self)

  @contextlib.contextmanager
  def sync():
    inside[0] = True
    try:
      yield
    finally:
      inside[0] = False

  monkeypatch.setattr(array_lib.ArrayImpl, "_value", property(recorded))
  monkeypatch.setattr(trainer, "host_sync", sync)
  float(jnp.ones(()) + 1)  # what a per-step ``float(metrics["loss"])`` would do
  assert len(reads) == 1
  reads.clear()
  config = toy_config(npz_path, checkpoint_every=8, log_every=4)
  trainer.train_and_evaluate(config, str(tmp_path), mesh=mesh_of(2))
  assert not reads, reads[0]
  logged = [line["step"] for line in read_metrics(str(tmp_path)) if "train/density_loss" in line]
  assert logged == [4, 8]


def test_non_finite_guarded_metric_stops_before_the_next_checkpoint(npz_path, tmp_path):
  config = toy_config(npz_path, checkpoint_every=1, log_every=4)
  config.density_optimizer.learning_rate = float("inf")
  with pytest.raises(FloatingPointError, match=r"Non-finite parameters or optimizer state at "
                                               r"step 2;.*step 1\)"):
    trainer.train_and_evaluate(config, str(tmp_path), mesh=mesh_of(2))
  state, _, step = checkpoint.restore_replicated(os.path.join(tmp_path, "checkpoints"),
                                                 parallel.replicated(mesh_of(1)))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(jax.device_get(state)))
  assert step == 1  # the classifier's step was fine, the density's overflowed


def test_bad_eval_settings_are_named(npz_path):
  config = toy_config(npz_path)
  config.evals = {"nll": {"kind": "likelihod"}}
  with pytest.raises(ValueError, match=r"config.evals.nll.kind is 'likelihod'"):
    trainer.validate_config(config)
  config.evals = {"nll": {"kind": "likelihood", "splt": "test"}}
  with pytest.raises(ValueError, match=r"Unknown settings \['splt'\] in config.evals.nll"):
    trainer.validate_config(config)
