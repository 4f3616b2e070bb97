"""Optimizers and learning-rate schedules from ``config.optimizer``.

Fields: ``name`` (``adamw`` | ``sgd`` | ``lars``), ``learning_rate`` (peak), ``warmup_steps``
(linear from 0), ``schedule`` (``cosine`` | ``step`` | ``constant``), ``decay_boundaries``
(fractions of ``total_steps`` where the ``step`` schedule multiplies by ``decay_factor``),
``weight_decay`` (not applied to biases and normalization parameters; decoupled for adamw and
sgd), ``b1`` and ``b2`` (adamw's moment decay rates, default 0.9 and 0.999; the DCGAN recipe
uses ``b1 = 0.5``; a config without them gets the defaults), ``momentum`` (sgd, lars),
``trust_coefficient`` (lars), ``grad_clip_norm`` (0 = off), ``backbone_lr_multiplier``
(scales the updates of ``params["backbone"]``, for fine-tuning after transfer) and
``freeze_regex`` (parameters whose ``/``-joined path matches get no update, e.g.
``^backbone/stem``), ``accumulate_steps`` (gradient accumulation, default 1; see below).

Gradient accumulation (``accumulate_steps = k > 1``) keeps the global batch semantics:
``config.batch_size`` is still the batch of one optimizer update and ``state["step"]``,
``total_steps``, the schedules and the checkpoints still count updates. The train step
(``SupervisedTask.train_step``) splits each global batch into ``k`` micro-batches of
``batch_size / k`` rows and scans over them, so only one micro-batch's activations are live
at a time; the optimizer is ``optax.MultiSteps`` around the full update rule, which averages
the ``k`` micro-batch gradients and applies the inner update once, on the last. A model whose
loss is a mean over independent examples gets the big batch's update, to float tolerance;
BatchNorm normalizes over each micro-batch instead (its running statistics are updated
once per micro-batch).

``lars`` is layer-wise adaptive rate scaling (You et al. 2017) as SimCLR trains with it
(``optax.lars``): per parameter ``u = g + weight_decay * w``, scaled by the trust ratio
``trust_coefficient * ||w|| / ||u||`` (1 where either norm is 0), times the learning rate,
then heavy-ball momentum. Biases and normalization parameters get neither the weight decay
nor the trust ratio, only the learning rate and momentum.

Every mask is a function of the parameter tree, so ``make_optimizer`` can run before the
parameters exist (``params=None``) and ``tx.init(params)`` later, under jit.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import ml_collections
import optax

_OPTIMIZER_FIELDS = ("name", "learning_rate", "warmup_steps", "schedule", "decay_boundaries",
                     "decay_factor", "weight_decay", "momentum", "trust_coefficient",
                     "grad_clip_norm", "backbone_lr_multiplier", "freeze_regex", "b1", "b2",
                     "accumulate_steps")
# Adam's moment decay rates where a config (e.g. one restored from an older checkpoint) has none.
ADAM_BETAS = {"b1": 0.9, "b2": 0.999}


def default_optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """The optimizer ConfigDict every config embeds as ``config.optimizer``."""
  config = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="cosine",
      decay_boundaries=(2 / 3, 8 / 9), decay_factor=0.1, weight_decay=1e-4, momentum=0.9,
      trust_coefficient=1e-3, grad_clip_norm=0.0, backbone_lr_multiplier=1.0,
      freeze_regex="", accumulate_steps=1, **ADAM_BETAS))
  config.update(overrides)
  return config


def param_paths(params: Any) -> Any:
  """A tree like ``params`` holding each leaf's ``/``-joined path (``backbone/stem_conv/kernel``)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(str(getattr(k, "key", k)) for k in path), params)


def accumulate_steps(config: ml_collections.ConfigDict) -> int:
  """``config.optimizer.accumulate_steps`` (1 where a config, e.g. an older one, has none)."""
  steps = config.get("accumulate_steps", 1)
  if not isinstance(steps, int) or steps < 1:
    raise ValueError(f"optimizer.accumulate_steps must be a positive integer, got {steps!r}.")
  return steps


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warmup to ``learning_rate``, then the configured decay."""
  peak = config.learning_rate
  decay_steps = max(total_steps - config.warmup_steps, 1)
  if config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps)
  elif config.schedule == "step":
    decay = optax.piecewise_constant_schedule(
        peak, {max(int(b * total_steps) - config.warmup_steps, 1): config.decay_factor
               for b in config.decay_boundaries})
  elif config.schedule == "constant":
    decay = optax.constant_schedule(peak)
  else:
    raise ValueError(f"Unknown optimizer.schedule {config.schedule!r}; use 'cosine', 'step' "
                     "or 'constant'.")
  if config.warmup_steps <= 0:
    return decay
  warmup = optax.linear_schedule(0.0, peak, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   params: Any = None) -> optax.GradientTransformation:
  """The full update rule: clip -> optimizer -> backbone multiplier -> freezing, inside
  ``optax.MultiSteps`` when ``accumulate_steps > 1``.

  Args:
    config: ``config.optimizer`` (see the module docstring).
    total_steps: training length, for the schedule.
    params: the parameter tree, or None to build the optimizer before the parameters exist.
      The masks are functions of the tree either way; given ``params``, a ``freeze_regex``
      that matches nothing raises here rather than at ``tx.init``.

  Returns:
    The optax transformation.
  """
  unknown = sorted(set(config.keys()) - set(_OPTIMIZER_FIELDS))
  if unknown:
    raise ValueError(f"Unknown optimizer fields {unknown}; known: {list(_OPTIMIZER_FIELDS)}.")
  schedule = learning_rate_schedule(config, total_steps)

  def decay_mask(tree: Any) -> Any:
    # Weight decay on weight matrices and kernels only, as is standard.
    return jax.tree.map(lambda p, x: x.ndim > 1 and not re.search(r"(norm|Norm)", p),
                        param_paths(tree), tree)

  if config.name == "adamw":
    b1, b2 = (config.get(name, default) for name, default in ADAM_BETAS.items())
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
      raise ValueError(f"optimizer.b1={b1} and optimizer.b2={b2} must lie in [0, 1).")
    base = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=config.weight_decay,
                       mask=decay_mask)
  elif config.name == "sgd":
    base = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=config.momentum))
  elif config.name == "lars":
    # SimCLR's rule: what is not decayed (biases, normalization) is not adapted either.
    base = optax.lars(schedule, weight_decay=config.weight_decay, weight_decay_mask=decay_mask,
                      trust_coefficient=config.trust_coefficient, trust_ratio_mask=decay_mask,
                      momentum=config.momentum)
  else:
    raise ValueError(f"Unknown optimizer.name {config.name!r}; use 'adamw', 'sgd' or 'lars'.")
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(base)
  if config.backbone_lr_multiplier != 1.0:
    chain.append(optax.masked(
        optax.scale(config.backbone_lr_multiplier),
        lambda tree: jax.tree.map(lambda p: p.startswith("backbone/"), param_paths(tree))))
  if config.freeze_regex:
    pattern = re.compile(config.freeze_regex)

    def frozen_mask(tree: Any) -> Any:
      paths = param_paths(tree)
      frozen = jax.tree.map(lambda p: bool(pattern.search(p)), paths)
      if not any(jax.tree.leaves(frozen)):
        raise ValueError(f"optimizer.freeze_regex {config.freeze_regex!r} matches no parameter; "
                         f"parameter paths look like {jax.tree.leaves(paths)[:3]}.")
      return frozen

    if params is not None:
      frozen_mask(params)
    chain.append(optax.masked(optax.set_to_zero(), frozen_mask))
  tx = optax.chain(*chain)
  steps = accumulate_steps(config)
  if steps > 1:
    # Clipping, the schedule's count and every other inner state see one update per k
    # micro-batches: the mean gradient of the whole global batch.
    tx = optax.MultiSteps(tx, every_k_schedule=steps).gradient_transformation()
  return tx
