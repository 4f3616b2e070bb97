"""The evaluator interface the trainer drives (tasks return one from ``make_evaluator``)."""

from __future__ import annotations

import abc
from typing import Mapping

import numpy as np


class Evaluator(abc.ABC):
  """Accumulates host-side (numpy) model outputs over a split, then reduces them.

  The trainer gathers each global batch from every host (``parallel.to_host``) before
  ``add``, so an evaluator sees whole global batches as numpy arrays on every process.
  """

  @abc.abstractmethod
  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    """Adds one global batch. Rows with ``batch["example_mask"] == False`` are padding."""

  @abc.abstractmethod
  def result(self) -> dict[str, float]:
    """Metric name (without the ``eval/`` prefix) -> value."""
