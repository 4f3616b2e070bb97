"""The generic training loop: init, train step, evaluation, checkpoints, logs, pictures.

It knows no task: everything task-specific comes from the :class:`~jaxvision.tasks.base.Task`
named by ``config.task``. Importable from a notebook:
``train_and_evaluate(config, workdir) -> final eval metrics``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tensorboardX import SummaryWriter
from tqdm import tqdm

from jaxvision import checkpoint as checkpoint_lib
from jaxvision import optim, parallel
from jaxvision.tasks.base import Task, get_task

REQUIRED_FIELDS = ("task", "seed", "total_steps", "batch_size", "eval_every", "checkpoint_every",
                   "log_every", "init_from", "eval_split", "data", "model", "optimizer")
TrainState = dict[str, Any]  # {"params", "batch_stats", "opt_state", "step"}: what is checkpointed.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming missing or out-of-range top-level fields."""
  missing = [f for f in REQUIRED_FIELDS if f not in config]
  if missing:
    raise ValueError(f"The config lacks the required fields {missing}; every config defines "
                     f"{list(REQUIRED_FIELDS)} (see configs/classify_localize_shapes.py).")
  for field in ("total_steps", "batch_size", "eval_every", "checkpoint_every", "log_every"):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise ValueError(f"config.{field} must be a positive integer, got {config[field]!r}.")


class MetricWriter:
  """``metrics.jsonl`` (one JSON object per logged step) plus TensorBoard event files."""

  def __init__(self, workdir: str):
    self._enabled = parallel.is_main_process()
    if self._enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled:
      return
    self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self._jsonl.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(name, value, step)
    self._tensorboard.flush()

  def close(self) -> None:
    if self._enabled:
      self._jsonl.close()
      self._tensorboard.close()


def create_train_state(task: Task, config: ml_collections.ConfigDict, mesh,
                       host_batch: dict[str, np.ndarray]) -> tuple[TrainState, optax.GradientTransformation]:
  """Fresh, replicated parameters and optimizer state (identical on every host: same seed).

  Only the shapes of ``host_batch`` matter; its first row is the example input of ``init``.
  """
  replicated = parallel.replicated(mesh)
  example = jax.tree.map(lambda x: x[:1], host_batch)
  variables = jax.jit(lambda rng: task.init_variables(rng, example), out_shardings=replicated)(
      jax.random.key(config.seed))
  tx = optim.make_optimizer(config.optimizer, config.total_steps, variables["params"])

  def init_state(variables):
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(variables["params"]), "step": jnp.zeros((), jnp.int32)}

  return jax.jit(init_state, out_shardings=replicated)(variables), tx


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of ``tree``: the target orbax restores onto."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def transfer_backbone(state: TrainState, init_from: str, mesh) -> TrainState:
  """Replaces the backbone parameters and statistics with those of another run."""
  loaded = checkpoint_lib.load_backbone(init_from, parallel.replicated(mesh))
  for collection in ("params", "batch_stats"):
    if "backbone" not in state[collection]:
      continue
    checkpoint_lib.check_compatible(loaded[collection], state[collection]["backbone"],
                                    f"init_from={init_from!r}", prefix=f"{collection}/backbone")
    state[collection] = {**state[collection], "backbone": loaded[collection]}
  return state


def make_train_step(task: Task, config: ml_collections.ConfigDict,
                    tx: optax.GradientTransformation, mesh):
  """The jitted, data-parallel train step ``(state, batch) -> (state, metrics)``.

  Parameters are replicated and the batch is sharded, so XLA inserts the gradient
  all-reduce; the state is donated. A non-finite loss leaves the state unchanged (the host
  then stops the run), so the last good parameters are never overwritten.
  """
  schedule = optim.learning_rate_schedule(config.optimizer, config.total_steps)

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(config.seed), state["step"])
    grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(
        state["params"], {"batch_stats": state["batch_stats"]}, batch, rng)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    new_state = {"params": optax.apply_updates(state["params"], updates),
                 "batch_stats": model_state.get("batch_stats", state["batch_stats"]),
                 "opt_state": opt_state, "step": state["step"] + 1}
    finite = jnp.isfinite(loss)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state["step"])}
    return new_state, metrics

  replicated = parallel.replicated(mesh)
  return jax.jit(train_step, in_shardings=(replicated, parallel.data_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def evaluate(task: Task, variables: dict[str, Any], mesh, split: str,
             picture_dir: str | None = None, step: int = 0) -> dict[str, float]:
  """Runs the task's evaluator over ``split``; process 0 writes pictures of the first batch."""
  eval_step = jax.jit(task.eval_outputs, in_shardings=(parallel.replicated(mesh),
                                                       parallel.data_sharding(mesh)),
                      out_shardings=parallel.data_sharding(mesh))
  evaluator = task.make_evaluator()
  for index, host_batch in enumerate(task.eval_batches(split)):
    task.validate_batch(host_batch)
    outputs = eval_step(variables, parallel.global_batch(host_batch, mesh))
    host_outputs = parallel.to_host(outputs)
    labels = {k: v for k, v in host_batch.items() if k != "image"}
    evaluator.add(host_outputs, parallel.to_host(parallel.global_batch(labels, mesh)))
    if index == 0 and picture_dir and parallel.is_main_process():
      rows = len(host_batch["image"])  # Process 0's rows come first in the global batch.
      task.write_pictures(variables, host_batch, jax.tree.map(lambda x: x[:rows], host_outputs),
                          picture_dir, step)
  return evaluator.result()


def variables_of(state: TrainState) -> dict[str, Any]:
  """The Flax variables dict of a train state (``batch_stats`` only when the model has them)."""
  variables = {"params": state["params"]}
  if state["batch_stats"]:
    variables["batch_stats"] = state["batch_stats"]
  return variables


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint); returns eval metrics."""
  validate_config(config)
  parallel.initialize()
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)
  task = get_task(config)
  writer = MetricWriter(workdir)
  checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.get("keep_checkpoints", 3))

  start = checkpointer.latest_step() or 0
  batches: Iterator[dict[str, np.ndarray]] = task.train_batches(start)
  first_batch = next(batches)
  task.validate_batch(first_batch)
  state, tx = create_train_state(task, config, mesh, first_batch)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(abstract_like(state))
    if parallel.is_main_process():
      print(f"Resuming from step {start} in {checkpointer.directory}.", flush=True)
  elif config.init_from:
    state = transfer_backbone(state, config.init_from, mesh)

  train_step = make_train_step(task, config, tx, mesh)
  picture_dir = os.path.join(workdir, "pictures")
  eval_metrics: dict[str, float] = {}
  pending: list[dict[str, jax.Array]] = []
  last_log = (start, time.perf_counter())
  progress = tqdm(total=config.total_steps, initial=start, desc="train", unit="step",
                  disable=not parallel.is_main_process(), dynamic_ncols=True)
  host_batch = first_batch
  for step in range(start, config.total_steps):
    if step > start:
      host_batch = next(batches)
      task.validate_batch(host_batch)
    state, metrics = train_step(state, parallel.global_batch(host_batch, mesh))
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      raise FloatingPointError(
          f"Non-finite loss ({loss}) at step {step}; training stopped and the last good "
          f"checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} is kept "
          "intact. Lower optimizer.learning_rate, add optimizer.grad_clip_norm, or check the data.")
    pending.append(metrics)
    done = step + 1
    progress.update(1)
    progress.set_postfix(loss=f"{loss:.4f}")
    if done % config.log_every == 0 or done == config.total_steps:
      averaged = {f"train/{k}": float(np.mean([m[k] for m in jax.device_get(pending)]))
                  for k in pending[0]}
      averaged["train/steps_per_second"] = (done - last_log[0]) / (time.perf_counter() - last_log[1])
      writer.write(done, averaged)
      pending, last_log = [], (done, time.perf_counter())
    if done % config.checkpoint_every == 0 or done == config.total_steps:
      checkpointer.save(done, state, config)
    if done % config.eval_every == 0 or done == config.total_steps:
      eval_metrics = evaluate(task, variables_of(state), mesh, config.eval_split, picture_dir, done)
      writer.write(done, {f"eval/{k}": v for k, v in eval_metrics.items()})
      progress.write(f"step {done}: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()))
  progress.close()
  writer.close()
  checkpointer.close()
  return eval_metrics
