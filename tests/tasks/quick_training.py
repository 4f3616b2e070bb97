"""The task tests' shared pieces: a quick config trained for a few steps, then evaluated
(``train_and_evaluate``), and a fake COCO-shaped row for the full-size one-step tests
(``fake_coco_row``).

Steps cycle over two batches so that the loss must fall; the loss function may be traced
only once (a second trace would mean the jitted step recompiled).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import chex
import jax
import numpy as np
from jax.sharding import Mesh

from jaxvision import parallel, trainer
from jaxvision.evaluation import evaluators
from jaxvision.tasks import get_task


@dataclasses.dataclass
class QuickRun:
  task: Any
  state: Any
  batches: list[dict[str, np.ndarray]]
  history: list[dict[str, np.ndarray]]  # per step, on the host
  eval_metrics: dict[str, float]


def train_and_evaluate(config, steps: int, picture_dir: str, devices: int = 2,
                       edit_batches: Callable[[list], None] | None = None) -> QuickRun:
  """``steps`` train steps of ``config`` on a ``devices``-device mesh over batches 0 and 1
  (``edit_batches`` may change them first), then ``config.evals`` with pictures."""
  mesh = Mesh(np.asarray(jax.devices()[:devices]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  chex.clear_trace_counter()  # the counter is per function, shared by every task object
  task.loss_fn = chex.assert_max_traces(task.loss_fn, n=1)
  batches = [task.train_batch(0), task.train_batch(1)]
  if edit_batches is not None:
    edit_batches(batches)
  state = trainer.init_state(task, config, batches[0])
  train_step = trainer.make_train_step(task, config)
  history = []
  for step in range(steps):
    state, metrics = train_step(state, parallel.global_batch(batches[step % 2], mesh))
    history.append(jax.device_get(metrics))
  eval_metrics = evaluators.run_evaluators(
      evaluators.make_evaluators(task, config, picture_dir), state, steps, config.seed)
  return QuickRun(task, state, batches, history, eval_metrics)


def no_ground_truth_in_first_image_of_second_batch(batches: list) -> None:
  """``edit_batches``: one image without any object (the losses must handle it)."""
  batches[1]["box_valid"][0] = False


def fake_coco_row(config, boxes, labels, rng: np.random.Generator, **features
                  ) -> dict[str, np.ndarray]:
  """A batch of one COCO-shaped training row for ``config``'s data: a random uint8 image
  (drawn from ``rng``), ``boxes`` / ``labels`` as its first objects (the other
  ``data.max_boxes`` slots padding), zero areas, no crowd; ``features`` are added or
  replace those (masks, keypoints, area)."""
  size, max_boxes = config.data.image_size, config.data.max_boxes
  count = len(boxes)
  padded_boxes = np.zeros((1, max_boxes, 4), np.float32)
  padded_boxes[0, :count] = boxes
  padded_labels = np.zeros((1, max_boxes), np.int32)
  padded_labels[0, :count] = labels
  return {"image": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
          "boxes": padded_boxes, "labels": padded_labels,
          "box_valid": np.arange(max_boxes)[None] < count,
          "area": np.zeros((1, max_boxes), np.float32),
          "is_crowd": np.zeros((1, max_boxes), bool), "image_id": np.zeros((1,), np.int32),
          **features}
