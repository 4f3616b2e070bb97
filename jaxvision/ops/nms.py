"""Greedy non-maximum suppression with static shapes and torchvision's exact semantics.

One algorithm serves ``nms`` and ``batched_nms``. Candidates are sorted (stably) by class,
then by decreasing score, and visited in tiles of a few boxes. For each tile:

1. Boxes suppressed by an already kept box are removed. Only the compacted list of kept
   boxes is visited (a ``while_loop`` over windows of it, starting at the first kept box of
   the tile's smallest class), so the work is O(N x kept) like torchvision's loop, not
   O(N^2); in per-class NMS each tile only meets kept boxes of its own classes.
2. The tile's own greedy pass is the fixed point of ``keep_j = alive_j and not any_{i<j}
   (keep_i and suppresses_ij)``, found by iterating the tile's boolean suppression matrix
   until it stops changing. The greedy result is its unique fixed point; the number of
   iterations is the longest suppression chain inside the tile (at most the tile size).
3. The survivors are appended to the kept list.

Suppression uses torchvision's arithmetic, ``inter / (area_i + area_j - inter) > thr`` in
float32 with the threshold compared as the double torchvision receives, so kept sets and
their order agree with ``torchvision.ops.nms`` exactly.

Speed: on CPU, XLA compiles a ``while_loop`` whose body touches under ~1 kB into one kernel
(no per-op dispatch), so CPU uses tiny tiles (16 boxes against windows of 16 kept boxes),
and runs a vmapped batch as a loop over images (``lax.map``; under a jit whose batch is
sharded over several CPU devices XLA then gathers the batch and every device runs all
images). Accelerators use 256-box tiles and plain ``vmap`` batching.
"""

from __future__ import annotations

import functools
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops import boxes as box_ops

# (tile, window) sizes: boxes processed per step, kept boxes compared per inner step.
_CPU_BLOCKS = (16, 16)
_ACCELERATOR_BLOCKS = (256, 256)


def _threshold_as_float32_bound(iou_threshold: float) -> np.float32:
  """Largest float32 ``t`` with ``iou > t  <=>  iou > iou_threshold`` for float32 ``iou``.

  torchvision compares the float32 IoU against the threshold as a double; rounding the
  threshold down to float32 (not to nearest) keeps that comparison exact in float32.
  """
  bound = np.float32(iou_threshold)
  if float(bound) > iou_threshold:
    bound = np.nextafter(bound, np.float32(-np.inf))
  return bound


def _suppresses(rows_a: chex.Array, class_a: chex.Array | None, rows_b: chex.Array,
                class_b: chex.Array | None, threshold: chex.Array) -> chex.Array:
  """``[A, 5] x [B, 5] -> bool[A, B]``: IoU > threshold (and same class when given).

  Rows are ``(x1, y1, x2, y2, area)``, the area precomputed outside the loops (see
  ``boxes.pairwise_intersection_and_union``).
  """
  inter, union = box_ops.pairwise_intersection_and_union(
      rows_a[:, :4], rows_b[:, :4], rows_a[:, 4], rows_b[:, 4])
  # A plain division: 0/0 (two empty boxes) is NaN and never suppresses, as in torchvision.
  suppress = inter / union > threshold
  if class_a is not None:
    suppress &= class_a[:, None] == class_b[None, :]
  return suppress


def _greedy_within_tile(alive: chex.Array, suppress: chex.Array) -> chex.Array:
  """Greedy NMS inside one score-sorted tile.

  Args:
    alive: ``bool[T]`` boxes not yet suppressed.
    suppress: ``bool[T, T]``, ``suppress[i, j]``: box i suppresses box j if i is kept.

  Returns:
    ``bool[T]`` the boxes the sequential greedy pass keeps.
  """
  size = alive.shape[0]
  earlier = jnp.arange(size)[:, None] < jnp.arange(size)[None, :]
  suppress &= earlier

  def step(state):
    keep, _ = state
    suppressed = jnp.any(keep[:, None] & suppress, axis=0)
    new_keep = alive & ~suppressed
    return new_keep, jnp.any(new_keep != keep)

  keep, _ = jax.lax.while_loop(lambda state: state[1], step, (alive, jnp.bool_(True)))
  return keep


def _greedy_nms_one_image(boxes, scores, class_ids, candidate, threshold, *, max_output_size,
                          blocks):
  """``nms``/``batched_nms`` for one image; see the module docstring.

  Args:
    boxes: ``[N, 4]``, N > 0.
    scores: ``[N]``.
    class_ids: ``int32[N]``, or None for one class.
    candidate: ``bool[N]`` boxes that take part (valid and above the score threshold).
    threshold: scalar, see ``_threshold_as_float32_bound``.
    max_output_size: static output length.
    blocks: static ``(tile, window)`` sizes.

  Returns:
    ``int32[max_output_size]`` kept indices in decreasing score order, padded with -1.
  """
  num_boxes = boxes.shape[0]
  tile_size, window_size = blocks
  tile = min(tile_size, -(-num_boxes // 8) * 8)
  window = window_size
  # Without classes, tiles come in score order and the first max_output_size kept are final.
  stop_at_max_output = class_ids is None
  num_tiles = -(-num_boxes // tile)
  padded = num_tiles * tile
  pad = padded - num_boxes

  if class_ids is None:
    # top_k is XLA's fastest stable descending order (ties: lower index first).
    _, order = jax.lax.top_k(jnp.where(candidate, scores, -jnp.inf), num_boxes)
  else:
    *_, order = jax.lax.sort(
        ((~candidate).astype(jnp.int32), class_ids, -scores,
         jnp.arange(num_boxes, dtype=jnp.int32)), num_keys=3, is_stable=True)
  # Areas once, outside the loops, so they are loaded (not fused) where IoUs are computed.
  rows = jnp.concatenate([boxes, box_ops.box_area(boxes)[:, None]], axis=1)
  sorted_boxes = jnp.pad(rows[order], ((0, pad), (0, 0)))
  sorted_candidate = jnp.pad(candidate[order], (0, pad))
  sorted_class = None if class_ids is None else jnp.pad(class_ids[order], (0, pad))
  sorted_index = jnp.pad(order, (0, pad))
  # Normally candidates come first; a candidate scored -inf can sort among the others.
  last_candidate = jnp.max(jnp.where(sorted_candidate, jnp.arange(padded), -1))
  tiles_to_process = (last_candidate + tile) // tile

  # Room for every kept box plus one tile-sized write past the last one.
  max_kept = min(padded, max_output_size + tile) if stop_at_max_output else padded
  capacity = -(-(max_kept + tile) // window) * window
  slot_ids = jnp.arange(capacity)

  def process_tile(state):
    tile_index, count, kept_boxes, kept_class, kept_index = state
    start = tile_index * tile
    tile_boxes = jax.lax.dynamic_slice_in_dim(sorted_boxes, start, tile)  # [tile, 5]
    tile_class = (None if sorted_class is None
                  else jax.lax.dynamic_slice_in_dim(sorted_class, start, tile))
    tile_index_in_input = jax.lax.dynamic_slice_in_dim(sorted_index, start, tile)
    alive = jax.lax.dynamic_slice_in_dim(sorted_candidate, start, tile)

    # Kept boxes are sorted by class: those of classes below the tile's first (smallest)
    # class cannot suppress anything in it.
    if tile_class is None:
      first_slot = jnp.int32(0)
    else:
      first_slot = jnp.sum((kept_class < tile_class[0]) & (slot_ids < count), dtype=jnp.int32)

    def suppress_by_window(window_state):
      slot, suppressed = window_state
      # Slots past `count` hold zero boxes, which never suppress; a window clamped at the
      # end of the buffer re-visits kept boxes, which is harmless.
      window_boxes = jax.lax.dynamic_slice_in_dim(kept_boxes, slot, window)
      window_class = (None if kept_class is None
                      else jax.lax.dynamic_slice_in_dim(kept_class, slot, window))
      hits = _suppresses(tile_boxes, tile_class, window_boxes, window_class, threshold)
      return slot + window, suppressed | jnp.any(hits, axis=1)

    _, suppressed = jax.lax.while_loop(lambda s: s[0] < count, suppress_by_window,
                                       (first_slot, jnp.zeros((tile,), bool)))
    keep = _greedy_within_tile(
        alive & ~suppressed,
        _suppresses(tile_boxes, tile_class, tile_boxes, tile_class, threshold))

    # Append the survivors at `count`: compact them to the front of a tile-sized block
    # (zeros behind them) and write the block with a dynamic_update_slice. A select-and-sum
    # instead of a scatter keeps the loop a single compiled kernel on CPU.
    target = jnp.where(keep, jnp.cumsum(keep) - 1, -1)
    moves_to = target[:, None] == jnp.arange(tile)[None, :]  # [source, destination]

    def compact(values):
      selected = jnp.where(moves_to.reshape(moves_to.shape + (1,) * (values.ndim - 1)),
                           values[:, None], 0)
      return jnp.sum(selected, axis=0, dtype=values.dtype)

    kept_boxes = jax.lax.dynamic_update_slice_in_dim(kept_boxes, compact(tile_boxes), count, 0)
    if kept_class is not None:
      kept_class = jax.lax.dynamic_update_slice_in_dim(kept_class, compact(tile_class), count, 0)
    kept_index = jax.lax.dynamic_update_slice_in_dim(
        kept_index, compact(tile_index_in_input + 1) - 1, count, 0)
    count = count + jnp.sum(keep, dtype=jnp.int32)
    return tile_index + 1, count, kept_boxes, kept_class, kept_index

  def more_tiles(state):
    tile_index, count = state[0], state[1]
    more = tile_index < tiles_to_process
    if stop_at_max_output:
      more &= count < max_output_size
    return more

  initial = (jnp.int32(0), jnp.int32(0), jnp.zeros((capacity, 5), boxes.dtype),
             None if class_ids is None else jnp.zeros((capacity,), jnp.int32),
             jnp.full((capacity,), -1, jnp.int32))
  _, count, _, _, kept_index = jax.lax.while_loop(more_tiles, process_tile, initial)

  if class_ids is not None:
    # Processing order was class-major; report in decreasing score (ties: lower index).
    slot_valid = kept_index >= 0
    kept_scores = jnp.where(slot_valid, scores[jnp.maximum(kept_index, 0)], 0)
    _, _, kept_index = jax.lax.sort(
        ((~slot_valid).astype(jnp.int32), -kept_scores, kept_index), num_keys=3)
  if capacity >= max_output_size:
    kept_index = kept_index[:max_output_size]
  else:
    kept_index = jnp.pad(kept_index, (0, max_output_size - capacity), constant_values=-1)
  return kept_index


def _loop_over_batch_under_vmap(fn: Callable) -> Callable:
  """``fn`` whose ``vmap`` runs one image after the other (``lax.map``) instead of in lockstep.

  Batching the NMS loops in lockstep turns their slices into gathers and runs every image
  for as many steps as the slowest one; on CPU a loop over images is faster (4x for 8
  images of 5000 boxes).
  """
  wrapped = jax.custom_batching.custom_vmap(fn)

  @wrapped.def_vmap
  def _vmap_rule(axis_size, in_batched, *args):
    args = jax.tree.map(
        lambda arg, batched: arg if batched else jnp.broadcast_to(arg, (axis_size,) + arg.shape),
        args, tuple(in_batched))
    outputs = jax.lax.map(lambda image_args: wrapped(*image_args), args)
    return outputs, jax.tree.map(lambda _: True, outputs)

  return wrapped


def _greedy_nms(boxes, scores, class_ids, candidate, threshold, max_output_size):
  """Dispatches to the block sizes and batching strategy of the compilation platform."""

  def on_cpu(*args):
    one_image = functools.partial(_greedy_nms_one_image, max_output_size=max_output_size,
                                  blocks=_CPU_BLOCKS)
    return _loop_over_batch_under_vmap(one_image)(*args)

  def on_accelerator(*args):
    return _greedy_nms_one_image(*args, max_output_size=max_output_size,
                                 blocks=_ACCELERATOR_BLOCKS)

  # Indices are piecewise constant in the inputs; stopping gradients also keeps
  # differentiation (of a loss downstream of NMS) from tracing into the custom vmap rule.
  boxes, scores, threshold = jax.lax.stop_gradient((boxes, scores, threshold))
  kept_index = jax.lax.platform_dependent(boxes, scores, class_ids, candidate, threshold,
                                          cpu=on_cpu, default=on_accelerator)
  return kept_index, kept_index >= 0


def _check_nms_args(boxes, scores, class_ids, iou_threshold, max_output_size, valid):
  if boxes.ndim != 2 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2); got {boxes.shape}. "
                     "For a batch of images, jax.vmap over the leading axis.")
  chex.assert_shape(scores, (boxes.shape[0],))
  if class_ids is not None:
    chex.assert_shape(class_ids, (boxes.shape[0],))
  if valid is not None:
    chex.assert_shape(valid, (boxes.shape[0],))
  if isinstance(iou_threshold, (float, int, np.floating, np.integer)):
    if not 0.0 <= iou_threshold <= 1.0:
      raise ValueError(f"iou_threshold must be in [0, 1]; got {iou_threshold!r}.")
  elif jnp.shape(iou_threshold) != ():
    raise ValueError(f"iou_threshold must be a scalar; got shape {jnp.shape(iou_threshold)}.")
  if not isinstance(max_output_size, (int, np.integer)) or max_output_size <= 0:
    raise ValueError("max_output_size must be a positive Python int (a static shape); "
                     f"got {max_output_size!r}.")


@functools.partial(jax.jit, static_argnames=("max_output_size",))
def _nms_jit(boxes, scores, class_ids, valid, threshold, score_threshold, max_output_size):
  if boxes.shape[0] == 0:
    return jnp.full((max_output_size,), -1, jnp.int32), jnp.zeros((max_output_size,), bool)
  candidate = jnp.ones(scores.shape, bool) if valid is None else valid.astype(bool)
  if score_threshold is not None:
    candidate &= scores > score_threshold
  if class_ids is not None:
    class_ids = class_ids.astype(jnp.int32)
  return _greedy_nms(boxes, scores, class_ids, candidate, threshold.astype(boxes.dtype),
                     max_output_size)


def _run_nms(boxes, scores, class_ids, iou_threshold, max_output_size, score_threshold, valid):
  boxes = jnp.asarray(boxes)
  _check_nms_args(boxes, jnp.asarray(scores), class_ids, iou_threshold, max_output_size,
                  valid)
  if isinstance(iou_threshold, (float, int, np.floating, np.integer)):
    threshold = _threshold_as_float32_bound(float(iou_threshold))
  else:  # a traced threshold: compared in float32
    threshold = iou_threshold
  # An array (not a static argument), so every threshold shares one compilation.
  return _nms_jit(boxes, scores, class_ids, valid, jnp.asarray(threshold, jnp.float32),
                  score_threshold, max_output_size)


def nms(
    boxes: chex.Array,
    scores: chex.Array,
    iou_threshold: float,
    max_output_size: int,
    score_threshold: float | chex.Array | None = None,
    valid: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array]:
  """Greedy non-maximum suppression; the same kept boxes, in the same order, as
  ``torchvision.ops.nms``.

  Boxes are visited in decreasing score (ties: lower index first); a box is suppressed when
  its IoU with an already kept box is strictly greater than ``iou_threshold`` (IoU computed
  as torchvision does, in float32; two empty boxes never suppress each other).

  Args:
    boxes: ``float32[N, 4]`` ``(x1, y1, x2, y2)``; N may be 0.
    scores: ``float32[N]``.
    iou_threshold: float in [0, 1] (0: any overlap suppresses; 1: nothing is suppressed).
      A Python float is compared exactly as torchvision does (as a double); a traced
      scalar is compared in float32. Changing it does not recompile.
    max_output_size: static length of the output; the first ``max_output_size`` kept boxes
      are returned (the search stops once that many are kept).
    score_threshold: optional; only boxes with ``score > score_threshold`` take part.
    valid: optional ``bool[N]``; False marks padding, which never takes part.

  Returns:
    ``(indices, valid)``: ``int32[max_output_size]`` indices into ``boxes`` of the kept boxes
    in decreasing score order, padded with -1, and ``bool[max_output_size]`` marking the
    real entries. Works under ``jit``; ``jax.vmap`` over a leading image axis for batches.
  """
  return _run_nms(boxes, scores, None, iou_threshold, max_output_size, score_threshold, valid)


def batched_nms(
    boxes: chex.Array,
    scores: chex.Array,
    class_ids: chex.Array,
    iou_threshold: float,
    max_output_size: int,
    score_threshold: float | chex.Array | None = None,
    valid: chex.Array | None = None,
) -> tuple[chex.Array, chex.Array]:
  """Per-class NMS: boxes of different classes never suppress each other.

  The kept set is ``torchvision.ops.batched_nms``'s (IoUs on the original coordinates, as
  its per-class path computes them), reported in decreasing score order with ties broken by
  lower index (torchvision's order of exactly tied scores is unspecified).

  Args:
    boxes: ``float32[N, 4]``.
    scores: ``float32[N]``.
    class_ids: ``int[N]`` category of each box (any integers).
    iou_threshold: float in [0, 1], as in ``nms``.
    max_output_size: static output length; the ``max_output_size`` highest-scoring kept
      boxes over all classes are returned.
    score_threshold: optional; only boxes with ``score > score_threshold`` take part.
    valid: optional ``bool[N]`` padding mask.

  Returns:
    ``(int32[max_output_size] indices padded with -1, bool[max_output_size] valid)``.
  """
  return _run_nms(boxes, scores, class_ids, iou_threshold, max_output_size, score_threshold,
                  valid)


def box_voting(
    kept_boxes: chex.Array,
    boxes: chex.Array,
    scores: chex.Array,
    iou_threshold: float,
    valid: chex.Array | None = None,
) -> chex.Array:
  """Box voting after NMS: each kept box becomes the score-weighted mean of the boxes that
  overlap it (Gidaris & Komodakis 2015; Detectron's ``BBOX_VOTE`` with its default scoring).

  ``out_k = sum_j w_kj boxes_j / sum_j w_kj`` with ``w_kj = scores_j`` where
  ``IoU(kept_k, boxes_j) >= iou_threshold`` (and ``valid_j``), else 0. The kept boxes are
  normally NMS survivors of ``boxes``, so each votes for itself; a kept box with no weight
  (padding, or only zero scores around it) is returned unchanged.

  Args:
    kept_boxes: ``float32[K, 4]`` boxes to refine (e.g. ``boxes[nms(...)[0]]``).
    boxes: ``float32[N, 4]`` the voting candidates (e.g. all boxes before NMS).
    scores: ``float32[N]`` non-negative weights (e.g. sigmoid or softmax scores).
    iou_threshold: float in (0, 1]; candidates at IoU >= it vote.
    valid: optional ``bool[N]``; False marks padding, which never votes.

  Returns:
    ``float32[K, 4]`` the voted boxes. Differentiable; ``jit``/``vmap`` friendly.
  """
  chex.assert_rank([kept_boxes, boxes, scores], [2, 2, 1])
  chex.assert_axis_dimension(kept_boxes, 1, 4)
  chex.assert_equal_shape_prefix([boxes, scores], 1)
  if not 0.0 < float(iou_threshold) <= 1.0:
    raise ValueError(f"box_voting iou_threshold must be in (0, 1], got {iou_threshold}.")
  weights = jnp.where(box_ops.box_iou(kept_boxes, boxes) >= iou_threshold, scores[None, :], 0.0)
  if valid is not None:
    chex.assert_shape(valid, scores.shape)
    weights = jnp.where(valid[None, :], weights, 0.0)
  total = jnp.sum(weights, axis=1, keepdims=True)
  # Full-precision products: TPUs otherwise multiply in bfloat16 (~0.3 px at 100 px).
  voted = jnp.matmul(weights, boxes, precision=jax.lax.Precision.HIGHEST) / jnp.where(
      total > 0, total, 1.0)
  return jnp.where(total > 0, voted, kept_boxes)
