"""Mixed precision (``model.dtype = "bfloat16"``): bf16 activations, float32 parameters,
optimizer state, BatchNorm statistics and losses; the bf16 loss is the float32 one to bf16
accuracy, and it trains."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.tasks import get_task

CONFIGS = os.path.join(os.path.dirname(__file__), os.pardir, "configs")


def _config(name, dtype, **model):
  spec = importlib.util.spec_from_file_location(name, os.path.join(CONFIGS, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("quick")
  config.model.dtype = dtype
  config.model.update(model)
  return config


def _batch(rng, batch_size, image_size, max_boxes, num_classes):
  """Images with one bright square per object and its box (no dataset needed)."""
  images = rng.integers(0, 60, (batch_size, image_size, image_size, 3)).astype(np.uint8)
  boxes = np.zeros((batch_size, max_boxes, 4), np.float32)
  labels = rng.integers(0, num_classes, (batch_size, max_boxes)).astype(np.int32)
  for i in range(batch_size):
    for j in range(max_boxes):
      x, y = rng.integers(0, image_size // 2, 2)
      side = int(rng.integers(image_size // 4, image_size // 2))
      images[i, y:y + side, x:x + side] = 60 + 190 * labels[i, j] // max(num_classes - 1, 1)
      boxes[i, j] = (x, y, x + side, y + side)
  return {"image": images, "boxes": boxes, "labels": labels,
          "box_valid": np.ones((batch_size, max_boxes), bool)}


def _float_dtypes(tree):
  return {leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)}


def _init(task, batch):
  state = jax.jit(task.init_state)(jax.random.key(0), jax.tree.map(lambda x: x[:1], batch))
  # Parameters, BatchNorm statistics and the optimizer's moments are float32.
  assert _float_dtypes(state["params"]) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(state["opt_state"]) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(state["batch_stats"]) <= {jnp.dtype(jnp.float32)}
  return state


def _train_and_compare(config, state, batch, steps, loss_rtol):
  """``steps`` bf16 train steps on ``batch``; the first one's loss (at the initial parameters)
  against the float32 model's loss with the same parameters. Returns the bf16 losses."""
  task = get_task(config)
  reference = get_task(_with_dtype(config, "float32"))
  assert task.compute_dtype == jnp.bfloat16 and reference.compute_dtype == jnp.float32
  f32_loss = jax.jit(lambda s, b, rng: reference.loss_fn(
      s["params"], {"batch_stats": s["batch_stats"]}, b, rng)[0])(state, batch, jax.random.key(0))
  step = jax.jit(task.train_step)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, batch, jax.random.key(0))
    assert metrics["loss"].dtype == jnp.float32
    losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(losses[0], f32_loss, rtol=loss_rtol)
  assert _float_dtypes(state["params"]) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(state["opt_state"]) == {jnp.dtype(jnp.float32)}
  assert _float_dtypes(state["batch_stats"]) <= {jnp.dtype(jnp.float32)}
  return losses


def _with_dtype(config, dtype):
  config = config.copy_and_resolve_references()
  config.model.dtype = dtype
  return config


def _variables(state):
  return {"params": state["params"], "batch_stats": state["batch_stats"]}


def test_classify_localize_in_bfloat16_matches_float32_and_trains():
  config = _config("classify_localize_shapes", "bfloat16", num_classes=4)
  batch = _batch(np.random.default_rng(0), 8, config.data.image_size, 1, 4)
  task = get_task(config)
  state = _init(task, batch)
  # Activations are bf16 (the backbone's features, captured inside the model); the outputs
  # the losses read are float32.
  outputs, captured = jax.jit(lambda v, x: task.model.apply(
      v, task.normalize(x), train=False, mutable=["intermediates"],
      capture_intermediates=lambda module, _: module.name == "backbone"))(
          _variables(state), batch["image"])
  features = captured["intermediates"]["backbone"]["__call__"][0]
  assert {features[name].dtype for name in ("C2", "C5")} == {jnp.dtype(jnp.bfloat16)}
  assert {v.dtype for v in outputs.values()} == {jnp.dtype(jnp.float32)}
  losses = _train_and_compare(config, state, batch, 8, loss_rtol=1e-2)
  assert losses[-1] < 0.7 * losses[0], losses


def test_faster_rcnn_in_bfloat16_matches_float32_and_trains():
  config = _config("faster_rcnn_shapes", "bfloat16")
  batch = _batch(np.random.default_rng(0), 2, config.data.image_size, config.data.max_boxes,
                 config.model.num_classes)
  task = get_task(config)
  state = _init(task, batch)
  pyramid = jax.jit(lambda v, x: task.model.apply(
      v, task.normalize(x), method=lambda model, images: model._pyramid(images, train=False)))(
          _variables(state), batch["image"])
  assert {level.dtype for level in pyramid.values()} == {jnp.dtype(jnp.bfloat16)}
  # Proposals (hence the RoI sample) follow the RPN's bf16 outputs, so the RoI losses see
  # slightly different RoIs than in float32: a looser bound than classify_localize's.
  losses = _train_and_compare(config, state, batch, 4, loss_rtol=5e-2)
  assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("config_name, dtype, message", [
    ("classify_localize_shapes", "float16", "Unknown model.dtype 'float16'"),
    ("autoencoder_shapes", "bfloat16", "computes in ['float32'] only"),
])
def test_unknown_or_unsupported_dtype_is_an_error_naming_it(config_name, dtype, message):
  config = _config(config_name, "float32")
  config.model.dtype = dtype
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    get_task(config)
