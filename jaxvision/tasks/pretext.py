"""The common ground of the self-supervised pretext tasks (``simclr``, ``context_prediction``,
``autoencoder``).

:class:`PretextTask`: one model with a ``backbone`` (whose unaugmented global pool the ``knn``
and ``linear_probe`` evaluators read, ``Task.representation``) and a checked ``config.model``.

:class:`DrawnPretextTask`: a pretext task whose inputs and targets are drawn from each image
(two views, a pair of patches and their position, ...):

* training rows hold what :meth:`DrawnPretextTask.pretext_row` draws from the letterboxed
  image with the row's generator (the image itself is dropped unless the pretext row keeps
  it);
* the probes (``eval_batches`` with ``features``) read the unaugmented image (and its label)
  only: the frozen-feature protocol;
* the task's own evaluation (``eval_batches`` without ``features``) reads the unaugmented
  image plus a pretext row drawn from a generator seeded by ``(seed, image_id)``, so every
  evaluation of a run scores the same views, patches or positions.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import ml_collections
import numpy as np

from jaxvision import data as data_lib
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base


def checked_settings(given: Mapping[str, Any] | None, defaults: Mapping[str, Any],
                     where: str) -> ml_collections.ConfigDict:
  """``given`` completed with ``defaults``; a ValueError names unknown fields."""
  given = dict(given or {})
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f"Unknown {where} fields {unknown}; known: {sorted(defaults)}.")
  return ml_collections.ConfigDict({**defaults, **given})


class PretextTask(base.SupervisedTask):
  """A self-supervised task with a backbone: see the module docstring.

  Attributes:
    MODEL_FIELDS: The ``config.model`` fields the task reads (others are an error).
  """

  MODEL_FIELDS: tuple[str, ...] = ()

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    unknown = sorted(set(config.model.keys()) - set(self.MODEL_FIELDS))
    if unknown:
      raise ValueError(f"Unknown config.model fields {unknown} for {config.task}; known: "
                       f"{list(self.MODEL_FIELDS)}.")
    self.backbone_module = build_backbone(config.model.backbone,
                                          **dict(config.model.backbone_kwargs))


class DrawnPretextTask(PretextTask):
  """A pretext task whose rows are drawn from each image: see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    self._own_eval_pipelines: dict[str, data_lib.Pipeline] = {}

  @abc.abstractmethod
  def pretext_row(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The pretext inputs and targets of one letterboxed uint8 image ``[H, W, C]``."""

  def preprocess(self, example, rng):
    """Training (``rng``): ``pretext_row``; evaluation: the unaugmented ``image`` row."""
    row = self._standard_preprocess(example, None)  # Letterbox + channels, no flip.
    if rng is None:
      return row
    image = row.pop("image")
    return {**row, **self.pretext_row(image, rng)}

  def _own_eval_row(self, example, rng):
    """The unaugmented row plus a pretext row fixed by ``(seed, image_id)``."""
    del rng
    row = self._standard_preprocess(example, None)
    generator = np.random.default_rng((self.config.seed, int(example["image_id"])))
    return {**row, **self.pretext_row(row["image"], generator)}

  def eval_batches(self, split, features=None, num_examples=None):
    """The probes (``features`` given) read unaugmented images; the task's own evaluation
    (``features`` None) also reads each held-out image's fixed pretext row."""
    if features is not None:
      return super().eval_batches(split, features, num_examples)
    if split not in self._own_eval_pipelines:
      self._own_eval_pipelines[split] = data_lib.Pipeline(
          self.config.data, split, self.config.batch_size, self.config.seed, train=False,
          preprocess=self._own_eval_row, source=self.source)
    return self._own_eval_pipelines[split].eval_batches(num_examples)
