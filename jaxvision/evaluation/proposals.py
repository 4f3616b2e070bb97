"""Recall of region proposals: which fraction of the objects some proposal covers.

The number that bounds a two-stage detector: the second stage can refine a proposal's box
and score it, but an object no proposal overlaps is lost. Reported at single IoU
thresholds (0.5, 0.7, 0.9: found at all, found tightly, found exactly), over all the valid
proposals of each image, for any proposal method (selective search, an RPN), so the methods
are compared on the same objects (``benchmarks/proposals.py``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from jaxvision import ops

IOU_THRESHOLDS = (0.5, 0.7, 0.9)


@jax.jit
def _best_iou(objects: jax.Array, proposals: jax.Array, proposal_valid: jax.Array
              ) -> jax.Array:
  """``[B, G]``: each object's highest IoU with a valid proposal of its image (0: none)."""
  iou = jax.vmap(ops.box_iou)(objects, proposals)
  return (iou * proposal_valid[:, None, :]).max(axis=-1, initial=0.0)


class ProposalRecall:
  """Accumulates, batch by batch, the best proposal IoU of every object; ``result()``.

  Crowd objects (``is_crowd``) are left out, as in COCO's recall.
  """

  def __init__(self, thresholds: Sequence[float] = IOU_THRESHOLDS):
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
      raise ValueError(f"IoU thresholds must be in (0, 1], got {thresholds}.")
    self.thresholds = tuple(thresholds)
    self._best: list[np.ndarray] = []
    self._proposal_counts: list[np.ndarray] = []

  def add(self, proposals: np.ndarray, proposal_valid: np.ndarray, boxes: np.ndarray,
          box_valid: np.ndarray, is_crowd: np.ndarray | None = None,
          example_mask: np.ndarray | None = None) -> None:
    """One batch: ``proposals [B, P, 4]``, ``proposal_valid [B, P]``, the objects'
    ``boxes [B, G, 4]``, ``box_valid [B, G]``, optional ``is_crowd [B, G]`` and
    ``example_mask [B]`` (False: a padding row, skipped)."""
    proposals = np.asarray(proposals, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if proposals.ndim != 3 or proposals.shape[-1] != 4 or boxes.ndim != 3:
      raise ValueError(f"proposals must be [B, P, 4] and boxes [B, G, 4]; got "
                       f"{proposals.shape} and {boxes.shape}.")
    objects = np.asarray(box_valid, bool)
    if is_crowd is not None:
      objects &= ~np.asarray(is_crowd, bool)
    proposal_valid = np.asarray(proposal_valid, bool)
    if example_mask is not None:
      rows = np.asarray(example_mask, bool)
      objects &= rows[:, None]
      proposal_valid = proposal_valid & rows[:, None]
    else:
      rows = np.ones(len(boxes), bool)
    best = np.asarray(_best_iou(boxes, proposals, proposal_valid))
    self._best.append(best[objects])
    self._proposal_counts.append(proposal_valid.sum(axis=1)[rows])

  def result(self) -> dict[str, float]:
    """``recall50``, ``recall70``, ``recall90`` (per threshold), ``mean_best_iou``,
    ``objects`` and ``proposals_per_image`` (mean valid proposals)."""
    best = np.concatenate(self._best) if self._best else np.zeros(0)
    if not best.size:
      raise ValueError("ProposalRecall has no objects: add batches with valid boxes first.")
    metrics = {f"recall{round(t * 100)}": float(np.mean(best >= t)) for t in self.thresholds}
    metrics["mean_best_iou"] = float(best.mean())
    metrics["objects"] = float(best.size)
    metrics["proposals_per_image"] = float(np.concatenate(self._proposal_counts).mean())
    return metrics
