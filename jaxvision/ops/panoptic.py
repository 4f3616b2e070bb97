"""Panoptic FPN's merge of instance and semantic predictions into one panoptic map.

``combine_panoptic`` is detectron2's ``combine_semantic_and_instance_outputs`` (the heuristic
of Kirillov et al., "Panoptic Feature Pyramid Networks", 2019) with static shapes, for one
image (``jax.vmap`` it over a batch):

1. Instances in decreasing score (a stable sort: ties keep slot order); those that are not
   ``valid``, score below ``score_threshold`` or have an empty binarized mask
   (``mask >= mask_threshold``) are skipped.
2. An instance whose mask overlaps already-assigned pixels by more than
   ``overlap_threshold`` of its own area is skipped; otherwise it takes its still
   unassigned pixels.
3. Every stuff class ``s >= 1`` of the semantic argmax (0 = "thing") becomes a segment of
   its still unassigned pixels if there are at least ``stuff_area_threshold`` of them.

Segment ids (the contract the panoptic evaluator reads): 0 = void / unassigned, ``d + 1``
= detection slot ``d``, ``D + s`` = stuff class ``s``. Unlike detectron2's consecutive ids,
these are fixed by slot and class, so the map alone (plus the detections' classes) says
what each segment is; ``segments_info`` lists them on the host.

Categories: thing class ``c`` (0-based) -> category ``c``; stuff ``s`` (1..S) ->
category ``C + s - 1``.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np


def combine_panoptic(masks: jax.Array, scores: jax.Array, classes: jax.Array, valid: jax.Array,
                     semantic: jax.Array, *, mask_threshold: float = 0.5,
                     score_threshold: float = 0.5, overlap_threshold: float = 0.5,
                     stuff_area_threshold: int) -> jax.Array:
  """One image's panoptic map from its detections and semantic argmax; jit-able.

  Args:
    masks: float32 [D, H, W] mask probabilities pasted at image size, or bool masks.
    scores: float [D] detection scores.
    classes: int32 [D] 0-based thing classes (only shape-checked: the map stores the slot,
      ``segments_info`` maps slots to classes).
    valid: bool [D]; False slots are padding and never assigned.
    semantic: int32 [H, W] argmax of the semantic head: 0 = things, 1..S stuff classes.
    mask_threshold: mask pixels ``>= mask_threshold`` are foreground (float masks only).
    score_threshold: detections scoring below this are dropped.
    overlap_threshold: a detection is dropped when more than this fraction of its mask is
      already taken by higher-scoring detections.
    stuff_area_threshold: a stuff class keeps its unassigned pixels only if there are at
      least this many (detectron2's default is 4096 at COCO resolution).

  Returns:
    int32 [H, W] segment ids: 0 void, ``d + 1`` detection slot d, ``D + s`` stuff class s.
  """
  chex.assert_rank(masks, 3)
  num_detections, height, width = masks.shape
  chex.assert_shape([scores, classes, valid], (num_detections,))
  chex.assert_shape(semantic, (height, width))
  binary = masks if masks.dtype == jnp.bool_ else masks >= mask_threshold
  order = jnp.argsort(-scores, stable=True)
  keep_detection = valid & (scores >= score_threshold)

  def assign(panoptic, slot):
    mask = binary[slot]
    area = jnp.sum(mask, dtype=jnp.int32)
    overlap = jnp.sum(mask & (panoptic > 0), dtype=jnp.int32)
    keep = (keep_detection[slot] & (area > 0)
            & (overlap.astype(jnp.float32) / jnp.maximum(area, 1).astype(jnp.float32)
               <= overlap_threshold))
    panoptic = jnp.where(keep & mask & (panoptic == 0), slot + 1, panoptic)
    return panoptic, None

  panoptic, _ = jax.lax.scan(assign, jnp.zeros((height, width), jnp.int32), order)

  # Stuff: the unassigned pixels of each class s >= 1, if numerous enough. The class count
  # is not static here, so each pixel's region size comes from a sort of the labels.
  label = jnp.where((panoptic == 0) & (semantic > 0), semantic, -1).astype(jnp.int32).ravel()
  sorted_label = jnp.sort(label)
  area = (jnp.searchsorted(sorted_label, label, side="right")
          - jnp.searchsorted(sorted_label, label, side="left")).reshape(height, width)
  stuff = (label.reshape(height, width) > 0) & (area >= stuff_area_threshold)
  return jnp.where(stuff, num_detections + semantic, panoptic).astype(jnp.int32)


def segments_info(panoptic: np.ndarray, classes: np.ndarray, num_detections: int,
                  num_thing_classes: int) -> list[dict[str, Any]]:
  """panopticapi ``segments_info`` of the ids present in one ``combine_panoptic`` map.

  Args:
    panoptic: int [H, W] segment ids of one image.
    classes: int [D] the detections' 0-based classes.
    num_detections: D (ids ``1..D`` are detection slots, larger ones stuff classes).
    num_thing_classes: C.

  Returns:
    ``[{"id", "category_id", "isthing"}, ...]`` in increasing id order; thing segments have
    category ``classes[id - 1]``, stuff ``s = id - D`` has ``C + s - 1``.
  """
  panoptic = np.asarray(panoptic)
  classes = np.asarray(classes)
  if len(classes) < num_detections:
    raise ValueError(f"{len(classes)} classes for num_detections={num_detections}.")
  ids = np.unique(panoptic)
  if len(ids) and ids[0] < 0:
    raise ValueError(f"The panoptic map has negative ids {ids[ids < 0].tolist()}.")
  info = []
  for segment_id in ids[ids > 0].tolist():
    if segment_id <= num_detections:
      info.append({"id": segment_id, "category_id": int(classes[segment_id - 1]),
                   "isthing": True})
    else:
      info.append({"id": segment_id,
                   "category_id": num_thing_classes + segment_id - num_detections - 1,
                   "isthing": False})
  return info
