"""Orbax checkpoints: atomic saves, resume, transfer and notebook restore.

A workdir's checkpoints live in ``<workdir>/checkpoints/<step>/`` with two items:
``state`` (the task's training state, any pytree: ``{params, opt_state, batch_stats, step}``
for supervised tasks) and ``config`` (the run's ConfigDict as JSON). Orbax writes each step into a temporary directory and renames it
when complete, so a run killed mid-save leaves the previous checkpoint intact.

Restores always go through an abstract target with shardings, so a checkpoint written on
N devices restores on M.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Sharding

CHECKPOINT_DIR = "checkpoints"


def _manager(directory: str, max_to_keep: int | None = None,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                         read_only=read_only,
                                         enable_async_checkpointing=False)
  # Handlers named up front, so a fresh process can read metadata before any restore.
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers={"state": ocp.StandardCheckpointHandler(),
                                              "config": ocp.JsonCheckpointHandler()})


def checkpoint_directory(path: str) -> str:
  """``path`` may be a workdir or its ``checkpoints`` directory; returns the latter."""
  candidate = os.path.join(path, CHECKPOINT_DIR)
  return candidate if os.path.isdir(candidate) else path


class Checkpointer:
  """Saves and restores one run's training state."""

  def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
    self.directory = os.path.join(workdir, CHECKPOINT_DIR)
    self._manager = _manager(self.directory, max_to_keep=max_to_keep, read_only=read_only)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: dict[str, Any], config: ml_collections.ConfigDict) -> None:
    """Writes ``state`` at ``step`` (all processes must call it)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort()))))
    self._manager.wait_until_finished()

  def restore(self, abstract_state: dict[str, Any], step: int | None = None) -> dict[str, Any]:
    """Restores onto ``abstract_state``'s shapes and shardings (latest step by default).

    Raises a ValueError naming the first mismatching entry when the checkpoint was written
    by a different model, instead of an orbax error deep in tensorstore.
    """
    step = self.latest_step() if step is None else step
    check_compatible(saved_structure(self._manager, step), abstract_state, self.directory)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]

  def close(self) -> None:
    self._manager.close()


def saved_structure(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The saved state's tree of ``ShapeDtypeStruct``s (no array data is read)."""
  metadata = manager.item_metadata(step)["state"]
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), dict(metadata),
                      is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


def _path_name(path) -> str:
  """``opt_state/0/0/count``, whether the tree holds a namedtuple or (orbax metadata) a dict."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def check_compatible(saved: Any, target: Any, where: str, prefix: str = "") -> None:
  """Raises a ValueError at the first path where ``saved`` and ``target`` trees differ."""
  saved_leaves = {_path_name(p): l for p, l in jax.tree_util.tree_leaves_with_path(saved)}
  target_leaves = {_path_name(p): l for p, l in jax.tree_util.tree_leaves_with_path(target)}
  missing = sorted(set(target_leaves) - set(saved_leaves))
  extra = sorted(set(saved_leaves) - set(target_leaves))
  if missing or extra:
    raise ValueError(
        f"The checkpoint in {where} was written by a different model: "
        f"{len(missing)} entries missing (e.g. {prefix}{missing[:3]}), {len(extra)} unexpected "
        f"(e.g. {prefix}{extra[:3]}). Use a fresh --workdir, or point init_from at a run with "
        "the same backbone config.")
  for path, leaf in target_leaves.items():
    if tuple(saved_leaves[path].shape) != tuple(leaf.shape):
      raise ValueError(
          f"The checkpoint in {where} was written by a different model: {prefix}{path} has "
          f"shape {tuple(saved_leaves[path].shape)} there but {tuple(leaf.shape)} here. Use a "
          "fresh --workdir, or point init_from at a run with the same backbone config.")


def restore_replicated(directory: str, sharding: Sharding,
                        step: int | None = None) -> tuple[dict[str, Any], dict[str, Any], int]:
  """Restores a checkpoint's state (replicated on ``sharding``) and its config dict."""
  manager = _manager(directory, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {directory}; train first or check the path.")
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                          saved_structure(manager, step))
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract), config=ocp.args.JsonRestore()))
  manager.close()
  return restored["state"], restored["config"], step


def _restore_with_task(path: str, sharding: Sharding, step: int | None = None):
  """A workdir's state (replicated on ``sharding``), config and task."""
  from jaxvision.tasks import get_task  # Deferred: tasks import models and data.

  state, config_dict, step = restore_replicated(checkpoint_directory(path), sharding, step)
  config = ml_collections.ConfigDict(config_dict)
  return state, config, get_task(config, sharding.mesh), step


# ``init_from`` prefixes of ImageNet weights from other libraries (ResNet state dicts).
PRETRAINED_SOURCES = ("torchvision", "timm")


def pretrained_source(init_from: str) -> tuple[str, str] | None:
  """``(library, path)`` for ``"torchvision:<path>"`` or ``"timm:<path>"``; else None."""
  library, sep, path = init_from.partition(":")
  if sep and library in PRETRAINED_SOURCES:
    return library, path
  return None


def load_pretrained(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The backbone variables (numpy) converted from ``config.init_from``'s torchvision or
  timm ResNet state dict, after checking ``config`` against them.

  The trainer calls it before anything compiles. The state dict's depth is read from its
  blocks; the config must build that network (``model.backbone = "resnet<depth>"``, the
  ImageNet stem, width 64, BatchNorm: ``norm`` ``batch`` or ``frozen``) on 3-channel images
  normalized as the weights were trained: ImageNet's ``data.mean`` and ``data.std`` (on
  [0, 1] pixels, as ``Task.normalize`` applies them). Anything else raises a ValueError
  that says what to set.
  """
  from jaxvision.models import resnet  # Deferred: only transfer from torch weights needs it.

  library, path = pretrained_source(config.init_from)
  where = f"init_from={config.init_from!r}"
  state_dict = resnet.read_state_dict(path)
  try:
    depth = resnet.torchvision_depth(state_dict)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  model = config.get("model", ml_collections.ConfigDict())
  if "backbone" in model:
    kwargs = dict(model.get("backbone_kwargs", None) or {})
    problems = []
    if model.backbone != f"resnet{depth}":
      problems.append(f"model.backbone={model.backbone!r} (use 'resnet{depth}')")
    for field, allowed in (("stem", ("imagenet",)), ("width", (64,)),
                           ("norm", ("batch", "frozen"))):
      if field in kwargs and kwargs[field] not in allowed:
        problems.append(f"model.backbone_kwargs.{field}={kwargs[field]!r} (use {allowed[0]!r})")
    problems += [f"model.backbone_kwargs.{field} is set (remove it)"
                 for field in ("stage_sizes", "block") if field in kwargs]
    if problems:
      raise ValueError(f"{where} holds a {library} ResNet-{depth}, which this config does not "
                       "build: " + "; ".join(problems) + ".")
  data = config.get("data", ml_collections.ConfigDict())
  if data.get("channels", 3) != 3:
    raise ValueError(f"{where} needs 3-channel (RGB) images; the config has "
                     f"data.channels={data.channels}.")
  mean, std = data.get("mean", None), data.get("std", None)
  if (mean is None or std is None or not np.allclose(mean, resnet.IMAGENET_MEAN, atol=1e-3)
      or not np.allclose(std, resnet.IMAGENET_STD, atol=1e-3)):
    raise ValueError(
        f"{where}: {library}'s ImageNet weights expect ImageNet's normalization, but the "
        f"config has data.mean={mean}, data.std={std}. Set "
        f"--config.data.mean='{resnet.IMAGENET_MEAN}' --config.data.std='{resnet.IMAGENET_STD}' "
        "(per channel, on [0, 1] pixels).")
  try:
    return resnet.convert_torchvision_state_dict(state_dict, depth)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None


def load_backbone(init_from: str, sharding: Sharding,
                  network: str | None = None) -> dict[str, Any]:
  """The ``backbone`` parameters and batch statistics of another run, for transfer.

  ``init_from`` is a workdir or a checkpoints directory (its latest step is used). The
  backbone is that of the run's default network, or of ``network`` (e.g. a GAN's
  ``discriminator``), whatever the layout of its state. Returns
  ``{"params": ..., "batch_stats": ...}`` restricted to the ``backbone`` subtree.
  ``torchvision:<path>`` and ``timm:<path>`` (see :func:`load_pretrained`, which the trainer
  calls first to check the config) load a ResNet state dict instead.
  """
  source = pretrained_source(init_from)
  if source is not None:
    from jaxvision.models import resnet  # Deferred, as in load_pretrained.

    state_dict = resnet.read_state_dict(source[1])
    return jax.device_put(resnet.convert_torchvision_state_dict(
        state_dict, resnet.torchvision_depth(state_dict)), sharding)
  if not os.path.isdir(checkpoint_directory(init_from)):
    raise FileNotFoundError(f"init_from={init_from!r} is neither a workdir nor a checkpoint "
                            "directory.")
  state, _, task, _ = _restore_with_task(init_from, sharding)
  variables = task.inference_variables(state, network)
  if "backbone" not in variables["params"]:
    raise ValueError(f"init_from={init_from!r} holds a model without a 'backbone' submodule "
                     f"(top-level params: {sorted(variables['params'])}); nothing to transfer.")
  return {"params": variables["params"]["backbone"],
          "batch_stats": variables.get("batch_stats", {}).get("backbone", {})}


def restore_for_inference(workdir: str, step: int | None = None, network: str | None = None):
  """Notebook entry: ``config, model, variables = restore_for_inference(workdir)``.

  Works on whatever devices this process has (one CPU included): the arrays are restored
  replicated over the local devices, whatever the layout of the run's state. ``variables``
  is the Flax variables dict (``{"params": ..., "batch_stats": ...}``) of the task's default
  network, or of ``network`` (e.g. a GAN's ``"generator"`` or ``"discriminator"``); use
  ``model.apply(variables, x, train=False)`` or the task's ``predict``
  (``jaxvision.tasks.get_task(config).predict(variables, images)``).
  """
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
  state, config, task, _ = _restore_with_task(
      workdir, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), step)
  return config, task.network_module(network), task.inference_variables(state, network)
