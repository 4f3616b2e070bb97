"""The generic training loop: init, train step, evaluation, checkpoints, logs.

It knows no task: the state, the step, the data and the evaluation hooks come from the
:class:`~jaxvision.tasks.base.Task` named by ``config.task``; the evaluators from
``config.evals`` (:mod:`jaxvision.evaluation.evaluators`). What stays here is generic: jit
with shardings and donation, the non-finite guard, logging, checkpointing, resume and the
evaluation schedule. Importable from a notebook:
``train_and_evaluate(config, workdir) -> final eval metrics``.

The host waits for the device only where it must: at log steps (metrics), checkpoints and
evaluations. Each train step's metrics stay on the device until then; a non-finite guarded
metric leaves the state unchanged on the device and is found, with its step, before any
checkpoint or evaluation after it; a state that is not finite is never checkpointed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from jaxvision import checkpoint as checkpoint_lib
from jaxvision import parallel
from jaxvision.evaluation import evaluators as evaluators_lib
from jaxvision.tasks.base import Task, get_task

REQUIRED_FIELDS = ("task", "seed", "total_steps", "batch_size", "eval_every", "checkpoint_every",
                   "log_every", "init_from", "eval_split", "data", "model", "optimizer")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming missing or out-of-range top-level fields or evaluators."""
  missing = [f for f in REQUIRED_FIELDS if f not in config]
  if missing:
    raise ValueError(f"The config lacks the required fields {missing}; every config defines "
                     f"{list(REQUIRED_FIELDS)} (see configs/classify_localize_shapes.py).")
  for field in ("total_steps", "batch_size", "eval_every", "checkpoint_every", "log_every"):
    if not isinstance(config[field], int) or config[field] <= 0:
      raise ValueError(f"config.{field} must be a positive integer, got {config[field]!r}.")
  evaluators_lib.eval_settings(config)


METRICS_FILE = "metrics.jsonl"
# Wall-clock seconds of a run up to each log step (see ``train_and_evaluate``).
ELAPSED_METRIC = "train/elapsed_seconds"


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """Every record of ``workdir``'s ``metrics.jsonl``, in order (``[]`` when there is none).

  A line cut short (a run killed while writing it) is skipped, so a resumed run still starts.
  """
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def recorded_elapsed(workdir: str) -> float | None:
  """The run's wall-clock seconds up to its last log step (``ELAPSED_METRIC``), summed over
  resumed segments; None when ``metrics.jsonl`` has no such record."""
  values = [r[ELAPSED_METRIC] for r in read_metrics(workdir) if ELAPSED_METRIC in r]
  return values[-1] if values else None


class MetricWriter:
  """``metrics.jsonl`` (one JSON object per logged step) plus TensorBoard event files."""

  def __init__(self, workdir: str):
    self._enabled = parallel.is_main_process()
    if self._enabled:
      self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self._enabled or not metrics:
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


def host_sync() -> contextlib.AbstractContextManager:
  """Marks the places where the loop reads device values on the host.

  Transfers are allowed inside it whatever ``jax.transfer_guard`` says outside, so a test
  can forbid them everywhere else (``jax.transfer_guard_device_to_host("disallow_explicit")``)
  and prove that the steps between log steps never wait for the device.
  """
  return jax.transfer_guard_device_to_host("allow")


def init_state(task: Task, config: ml_collections.ConfigDict,
               host_batch: dict[str, np.ndarray]) -> Any:
  """A fresh state, replicated over the task's mesh (identical on every host: same seed).

  Only the shapes of ``host_batch`` matter; its first row is the example input.
  """
  example = jax.tree.map(lambda x: x[:1], host_batch)
  return jax.jit(lambda rng: task.init_state(rng, example),
                 out_shardings=parallel.replicated(task.mesh))(jax.random.key(config.seed))


def abstract_like(tree: Any) -> Any:
  """Shapes, dtypes and shardings of ``tree``: the target orbax restores onto."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def transfer_backbone(task: Task, state: Any, config: ml_collections.ConfigDict,
                      backbone: Any = None) -> Any:
  """``state`` with its backbone from the run in ``config.init_from``.

  The source run's network is its default one (``inference_network``), or the one named by
  ``config.init_from_network`` (e.g. a GAN's ``discriminator``). ``backbone``: variables
  already loaded (``checkpoint.load_pretrained`` for ``torchvision:``/``timm:`` weights).
  """
  where = f"init_from={config.init_from!r}"
  if backbone is None:
    backbone = checkpoint_lib.load_backbone(config.init_from, parallel.replicated(task.mesh),
                                            network=config.get("init_from_network", None))
  else:
    backbone = jax.device_put(backbone, parallel.replicated(task.mesh))
  return task.load_backbone(state, backbone, where)


def all_finite(arrays: list[jax.Array]) -> jax.Array:
  """True (a bool scalar) iff every element of every array is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays] or [jnp.bool_(True)]))


def state_is_finite(state: Any) -> jax.Array:
  """True iff every float in ``state`` is finite: checked before each checkpoint, because a
  step with a finite loss can still overflow the parameters it writes."""
  return all_finite([leaf for leaf in jax.tree.leaves(state)
                     if jnp.issubdtype(leaf.dtype, jnp.inexact)])


def make_train_step(task: Task, config: ml_collections.ConfigDict):
  """The jitted, data-parallel train step ``(state, batch) -> (state, metrics)``.

  The state is replicated and the batch sharded over the task's mesh, so XLA inserts the
  gradient all-reduce; the state is donated. The task's step gets
  ``fold_in(key(seed), state["step"])``. If a guarded metric is not finite the old state is
  returned (the host then stops the run), so the last good parameters are never overwritten.
  """
  for name in task.guarded_metrics:
    if not isinstance(name, str):
      raise ValueError(f"Task.guarded_metrics must name metrics, got {task.guarded_metrics!r}.")

  def train_step(state, batch):
    rng = jax.random.fold_in(jax.random.key(config.seed), state["step"])
    new_state, metrics = task.train_step(state, batch, rng)
    missing = [name for name in task.guarded_metrics if name not in metrics]
    if missing:
      raise ValueError(f"Task {config.task!r} guards the metrics {missing} but its train_step "
                       f"does not return them (it returns {sorted(metrics)}).")
    finite = all_finite([metrics[name] for name in task.guarded_metrics])
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    return new_state, metrics

  replicated = parallel.replicated(task.mesh)
  return jax.jit(train_step, in_shardings=(replicated, parallel.data_sharding(task.mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def raise_non_finite(what: str, step: int, checkpointer: checkpoint_lib.Checkpointer):
  raise FloatingPointError(
      f"Non-finite {what} at step {step}; training stopped and the last good checkpoint "
      f"(step {checkpointer.latest_step()}) in {checkpointer.directory} is kept intact. "
      "Lower optimizer.learning_rate, add optimizer.grad_clip_norm, or check the data.")


class _PendingMetrics:
  """Train metrics kept on the device until the host needs them.

  ``check()`` raises FloatingPointError at the first step whose guarded metric is not
  finite; ``averages()`` returns the means since the last log step.
  """

  def __init__(self, guarded: tuple[str, ...], checkpointer: checkpoint_lib.Checkpointer):
    self._guarded = guarded
    self._checkpointer = checkpointer
    self._steps: list[int] = []
    self._metrics: list[dict[str, jax.Array]] = []
    self._checked = 0
    self._host: list[dict[str, np.ndarray]] = []

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._steps.append(step)
    self._metrics.append(metrics)

  def check(self) -> None:
    with host_sync():
      self._host.extend(jax.device_get(self._metrics[self._checked:]))
    self._checked = len(self._metrics)
    for step, metrics in zip(self._steps, self._host):
      problems = [f"{name} ({metrics[name]})" for name in self._guarded
                  if not np.all(np.isfinite(metrics[name]))]
      if problems:
        raise_non_finite(" and ".join(problems), step, self._checkpointer)

  def averages(self) -> dict[str, float]:
    """Means of every metric since the last call (checked first)."""
    self.check()
    averaged = {f"train/{name}": float(np.mean([m[name] for m in self._host]))
                for name in self._host[0]}
    self._steps, self._metrics, self._host, self._checked = [], [], [], 0
    return averaged


def _progress_losses(averaged: dict[str, float]) -> dict[str, str]:
  """The progress bar's losses: ``train/loss``, or every ``train/*_loss`` of a task without
  one (the DCGAN's generator and discriminator losses)."""
  names = (["train/loss"] if "train/loss" in averaged
           else sorted(name for name in averaged if name.endswith("_loss")))
  return {name.removeprefix("train/"): f"{averaged[name]:.4f}" for name in names}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None) -> dict[str, float]:
  """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint); returns the
  metrics of the last evaluation (without the ``eval/`` prefix).

  ``mesh`` (default: every device of every host, ``parallel.make_mesh()``) lets a notebook or
  a test train on a subset of the devices.
  """
  # ``ELAPSED_METRIC``: wall time from here (dataset generation, compilation and evaluations
  # included) to each log step, continued from the last record when the run resumes.
  run_start = time.perf_counter()
  validate_config(config)
  parallel.initialize()
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.batch_size, mesh)
  os.makedirs(workdir, exist_ok=True)
  task = get_task(config, mesh)
  picture_dir = os.path.join(workdir, "pictures")
  evaluators = evaluators_lib.make_evaluators(task, config, picture_dir)
  writer = MetricWriter(workdir)
  checkpointer = checkpoint_lib.Checkpointer(workdir, max_to_keep=config.get("keep_checkpoints", 3))

  start = checkpointer.latest_step() or 0
  elapsed_before = ((recorded_elapsed(workdir) or 0.0) if start and parallel.is_main_process()
                    else 0.0)
  # torchvision:/timm: weights are read and checked against the config before any compile.
  pretrained = None
  if start == 0 and checkpoint_lib.pretrained_source(config.init_from or ""):
    pretrained = checkpoint_lib.load_pretrained(config)
  batches: Iterator[dict[str, np.ndarray]] = task.train_batches(start)
  first_batch = next(batches)
  task.validate_batch(first_batch)
  state = init_state(task, config, first_batch)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(abstract_like(state))
    if parallel.is_main_process():
      print(f"Resuming from step {start} in {checkpointer.directory}.", flush=True)
  elif config.init_from:
    state = transfer_backbone(task, state, config, pretrained)

  progress = tqdm(total=config.total_steps, initial=start, desc="train", unit="step",
                  disable=not parallel.is_main_process(), dynamic_ncols=True)

  def evaluate(step, which):
    with host_sync():
      metrics = evaluators_lib.run_evaluators(evaluators, state, step, config.seed, which)
    if metrics:
      writer.write(step, {f"eval/{k}": v for k, v in metrics.items()})
      progress.write(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics

  eval_metrics: dict[str, float] = {}
  if start == 0:
    eval_metrics = evaluate(0, lambda e: e.at_start)
  train_step = make_train_step(task, config)
  finite_state = jax.jit(state_is_finite)
  pending = _PendingMetrics(task.guarded_metrics, checkpointer)
  last_log = (start, time.perf_counter())
  host_batch = first_batch
  for step in range(start, config.total_steps):
    if step > start:
      host_batch = next(batches)
      task.validate_batch(host_batch)
    state, metrics = train_step(state, parallel.global_batch(host_batch, mesh))
    done = step + 1
    pending.add(done, metrics)
    progress.update(1)
    if done % config.log_every == 0 or done == config.total_steps:
      averaged = pending.averages()
      averaged["train/steps_per_second"] = (done - last_log[0]) / (time.perf_counter() - last_log[1])
      averaged[ELAPSED_METRIC] = elapsed_before + time.perf_counter() - run_start
      writer.write(done, averaged)
      progress.set_postfix(_progress_losses(averaged))
      last_log = (done, time.perf_counter())
    if done % config.checkpoint_every == 0 or done == config.total_steps:
      pending.check()
      with host_sync():
        if not bool(finite_state(state)):
          raise_non_finite("parameters or optimizer state", done, checkpointer)
        checkpointer.save(done, state, config)
    due = [e for e in evaluators if e.due(done, config.total_steps)]
    if due:
      pending.check()
      eval_metrics = evaluate(done, lambda e: e in due)
  progress.close()
  writer.close()
  checkpointer.close()
  return eval_metrics
