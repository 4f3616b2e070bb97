"""The contract between the generic trainer and an experiment family.

The trainer (``jaxvision.trainer``) knows nothing about a task but this interface. A task
bundles a Flax model, its loss, the data it reads, its evaluator and its pictures. Tasks
register themselves by name (``@register("classify_localize")``) and are looked up from
``config.task``.

Batches are dicts of arrays whose leading axis is the batch. On the host they are numpy
(``uint8`` images, ``float32`` boxes in absolute ``(x1, y1, x2, y2)`` pixels, padded to
``config.data.max_boxes`` with a boolean ``box_valid`` mask); inside jit they are global,
data-sharded ``jax.Array``s.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from jaxvision import data as data_lib
from jaxvision.evaluation.base import Evaluator

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]


class Task(abc.ABC):
  """One experiment family: model + loss + data + metrics + pictures."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self._pipelines: dict[str, data_lib.Pipeline] = {}

  def pipeline(self, split: str) -> data_lib.Pipeline:
    """The (cached) input pipeline of ``split``: shuffled and augmented for ``"train"``."""
    if split not in self._pipelines:
      self._pipelines[split] = data_lib.Pipeline(self.config.data, split, self.config.batch_size,
                                                 self.config.seed, train=split == "train")
    return self._pipelines[split]

  # --- model -------------------------------------------------------------------------
  @property
  @abc.abstractmethod
  def model(self) -> nn.Module:
    """The Flax Linen module. Its backbone submodule is named ``backbone`` (transfer)."""

  @abc.abstractmethod
  def init_variables(self, rng: jax.Array, batch: Batch) -> dict[str, Any]:
    """``model.init`` on a (host, numpy) example batch; returns the Flax variables dict."""

  # --- data --------------------------------------------------------------------------
  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's slice of the global training batch for ``step``.

    A pure function of ``(config.seed, step)`` and the process index/count, so a
    resumed run reads exactly the batches an uninterrupted one would.
    """
    return self.pipeline("train").host_batch(step)

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """``train_batch(step)`` for ``step = start_step, start_step + 1, ...``, prefetched."""
    return self.pipeline("train").iterate(start_step)

  def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """This host's slices of fixed-shape global eval batches over ``split``.

    Each batch carries a boolean ``example_mask`` (False on padding rows).
    """
    return self.pipeline(split).eval_batches()

  def validate_batch(self, batch: Batch) -> None:
    """Raises ``ValueError`` naming the problem for a malformed host batch (pre-compile)."""

  # --- training ----------------------------------------------------------------------
  @abc.abstractmethod
  def loss_fn(self, params: Any, model_state: dict[str, Any], batch: Batch,
              rng: jax.Array) -> tuple[jax.Array, tuple[Metrics, dict[str, Any]]]:
    """Training loss. Returns ``(loss, (metrics, new_model_state))``; jit-able.

    ``model_state`` holds the non-parameter collections (``batch_stats``); metrics are
    scalars averaged over the global batch.
    """

  # --- evaluation --------------------------------------------------------------------
  @abc.abstractmethod
  def eval_outputs(self, variables: dict[str, Any], batch: Batch) -> dict[str, jax.Array]:
    """Jit-able predictions for an eval batch; leading axis aligned with the batch."""

  @abc.abstractmethod
  def make_evaluator(self) -> Evaluator:
    """A fresh evaluator for one pass over a split."""

  @abc.abstractmethod
  def predict(self, variables: dict[str, Any], images: jax.Array) -> dict[str, jax.Array]:
    """Notebook inference on NHWC images (uint8 or float32 in [0, 255])."""

  def write_pictures(self, variables: dict[str, Any], batch: Mapping[str, np.ndarray],
                     outputs: Mapping[str, np.ndarray], directory: str, step: int) -> list[str]:
    """Writes PNGs of held-out predictions into ``directory``; returns their paths."""
    del variables, batch, outputs, directory, step
    return []


_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], Task]] = {}


def register(name: str):
  """Class decorator: makes a task available as ``config.task = name``."""

  def wrap(cls):
    if name in _REGISTRY:
      raise ValueError(f"Task {name!r} is registered twice.")
    _REGISTRY[name] = cls
    return cls

  return wrap


def get_task(config: ml_collections.ConfigDict) -> Task:
  """Builds the task named by ``config.task``."""
  import jaxvision.tasks  # noqa: F401  (registers the built-in tasks)

  name = config.task
  if name not in _REGISTRY:
    raise ValueError(f"Unknown config.task {name!r}; known tasks: {sorted(_REGISTRY)}.")
  return _REGISTRY[name](config)


def validate_images(images: Any, image_size: int, where: str) -> None:
  """Raises a ValueError unless ``images`` is an NHWC batch of ``image_size`` RGB images.

  Accepts uint8 (as stored) or float32 in [0, 255].
  """
  shape, dtype = tuple(np.shape(images)), np.dtype(images.dtype)
  if len(shape) != 4:
    raise ValueError(f"{where}: images must be a batch [B, H, W, 3] (rank 4), got shape {shape}.")
  if shape[1:] != (image_size, image_size, 3):
    raise ValueError(f"{where}: images must be [B, {image_size}, {image_size}, 3] for this "
                     f"config (data.image_size={image_size}), got {shape}; resize them first.")
  if dtype not in (np.uint8, np.float32):
    raise ValueError(f"{where}: images must be uint8 or float32 in [0, 255], got {dtype}.")


def normalize_images(images: jax.Array) -> jax.Array:
  """uint8 or [0, 255] float images -> float32, about zero mean and unit variance."""
  return (images.astype(np.float32) / 255.0 - 0.5) / 0.25
