"""Optimizers and learning-rate schedules from ``config.optimizer``.

Fields: ``name`` (``adamw`` | ``sgd``), ``learning_rate`` (peak), ``warmup_steps`` (linear
from 0), ``schedule`` (``cosine`` | ``step`` | ``constant``), ``decay_boundaries``
(fractions of ``total_steps`` where the ``step`` schedule multiplies by ``decay_factor``),
``weight_decay`` (decoupled; not applied to biases and normalization parameters),
``momentum`` (sgd), ``grad_clip_norm`` (0 = off), ``backbone_lr_multiplier`` (scales the
updates of ``params["backbone"]``, for fine-tuning after transfer) and ``freeze_regex``
(parameters whose ``/``-joined path matches get no update, e.g. ``^backbone/stem``).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import ml_collections
import optax

_OPTIMIZER_FIELDS = ("name", "learning_rate", "warmup_steps", "schedule", "decay_boundaries",
                     "decay_factor", "weight_decay", "momentum", "grad_clip_norm",
                     "backbone_lr_multiplier", "freeze_regex")


def default_optimizer_config(**overrides) -> ml_collections.ConfigDict:
  """The optimizer ConfigDict every config embeds as ``config.optimizer``."""
  config = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, warmup_steps=0, schedule="cosine",
      decay_boundaries=(2 / 3, 8 / 9), decay_factor=0.1, weight_decay=1e-4, momentum=0.9,
      grad_clip_norm=0.0, backbone_lr_multiplier=1.0, freeze_regex=""))
  config.update(overrides)
  return config


def param_paths(params: Any) -> Any:
  """A tree like ``params`` holding each leaf's ``/``-joined path (``backbone/stem_conv/kernel``)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(str(getattr(k, "key", k)) for k in path), params)


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
                   params: Any) -> optax.GradientTransformation:
  """The full update rule: clip -> optimizer -> backbone multiplier -> freezing."""
  unknown = sorted(set(config.keys()) - set(_OPTIMIZER_FIELDS))
  if unknown:
    raise ValueError(f"Unknown optimizer fields {unknown}; known: {list(_OPTIMIZER_FIELDS)}.")
  schedule = learning_rate_schedule(config, total_steps)
  paths = param_paths(params)
  # Decoupled weight decay on weight matrices and kernels only, as is standard.
  decay_mask = jax.tree.map(lambda p, x: x.ndim > 1 and not re.search(r"(norm|Norm)", p),
                            paths, params)
  if config.name == "adamw":
    base = optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_mask)
  elif config.name == "sgd":
    base = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                       optax.sgd(schedule, momentum=config.momentum))
  else:
    raise ValueError(f"Unknown optimizer.name {config.name!r}; use 'adamw' or 'sgd'.")
  chain = []
  if config.grad_clip_norm:
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(base)
  if config.backbone_lr_multiplier != 1.0:
    chain.append(optax.masked(optax.scale(config.backbone_lr_multiplier),
                              jax.tree.map(lambda p: p.startswith("backbone/"), paths)))
  if config.freeze_regex:
    pattern = re.compile(config.freeze_regex)
    frozen = jax.tree.map(lambda p: bool(pattern.search(p)), paths)
    if not any(jax.tree.leaves(frozen)):
      raise ValueError(f"optimizer.freeze_regex {config.freeze_regex!r} matches no parameter; "
                       f"parameter paths look like {jax.tree.leaves(paths)[:3]}.")
    chain.append(optax.masked(optax.set_to_zero(), frozen))
  return optax.chain(*chain)
