"""nms / batched_nms against a plain greedy loop (and torchvision when installed).

Compilations dominate the runtime, so most cases share one static shape (``_PADDED``
boxes, smaller sets padded with ``valid=False``), which also exercises the padding path.
"""

import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import batched_nms
from jaxvision.ops import box_voting
from jaxvision.ops import nms

_PADDED = 320
_THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 1.0)


def reference_nms(boxes, scores, iou_threshold, class_ids=None):
  """torchvision's CPU kernel, transcribed: IoU in the boxes' dtype (float32 unless given
  float64), threshold compared as a double."""
  boxes = np.asarray(boxes)
  scores = np.asarray(scores, np.float32)
  x1, y1, x2, y2 = boxes.T
  areas = (x2 - x1) * (y2 - y1)
  suppressed = np.zeros(len(boxes), bool)
  keep = []
  for i in np.argsort(-scores, kind="stable"):
    if suppressed[i]:
      continue
    keep.append(i)
    width = np.maximum(0, np.minimum(x2[i], x2) - np.maximum(x1[i], x1)).astype(boxes.dtype)
    height = np.maximum(0, np.minimum(y2[i], y2) - np.maximum(y1[i], y1)).astype(boxes.dtype)
    inter = width * height
    with np.errstate(invalid="ignore", divide="ignore"):
      iou = inter / (areas[i] + areas - inter)
    hit = iou.astype(np.float64) > iou_threshold
    if class_ids is not None:
      hit &= class_ids == class_ids[i]
    suppressed |= hit
  return np.asarray(keep, np.int64)


def random_boxes(rng, n, image=200.0, max_size=60.0):
  corner = rng.uniform(-10, image, (n, 2))
  size = rng.uniform(0, max_size, (n, 2))
  return np.concatenate([corner, corner + size], 1).astype(np.float32)


def adversarial_boxes(rng, n):
  """Duplicates, zero-area boxes, dense clusters, suppression chains, tied scores."""
  base = random_boxes(rng, n)
  kind = rng.integers(0, 6, n)
  source = rng.integers(0, max(n // 4, 1), n)
  boxes = base.copy()
  boxes[kind == 0] = base[source[kind == 0]]  # exact duplicates
  lines = kind == 1  # zero area: vertical lines, half of them points
  boxes[lines, 2] = boxes[lines, 0]
  points = lines & (rng.random(n) < 0.5)
  boxes[points, 3] = boxes[points, 1]
  jitter = kind == 2  # heavy overlap around a few objects
  boxes[jitter] = base[source[jitter] % 8] + rng.normal(0, 2, (jitter.sum(), 4))
  chain = kind == 3  # each box shifted a little from the previous one
  boxes[chain] = np.array([0, 0, 40, 40], np.float32) + np.arange(chain.sum())[:, None] * 7
  integer = kind == 4  # integer corners: exactly representable IoUs such as 1/2 and 3/10
  boxes[integer] = np.round(boxes[integer] / 5) * 5
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
  scores = rng.random(n).astype(np.float32)
  scores[kind == 5] = np.round(scores[kind == 5], 1)  # ties
  return boxes.astype(np.float32), scores


def padded(boxes, scores, size=_PADDED, rng=None):
  """Pads to ``size`` boxes; the padding gets garbage boxes and high scores."""
  n = len(boxes)
  rng = rng or np.random.default_rng(0)
  pad_boxes = random_boxes(rng, size - n)
  pad_scores = rng.uniform(1, 2, size - n).astype(np.float32)
  valid = np.arange(size) < n
  return (np.concatenate([boxes, pad_boxes]), np.concatenate([scores, pad_scores]), valid)


def kept(result):
  indices, valid = (np.asarray(x) for x in result)
  assert indices.dtype == np.int32
  np.testing.assert_array_equal(valid, indices >= 0)
  np.testing.assert_array_equal(valid, np.arange(len(valid)) < valid.sum())  # a prefix
  return indices[valid]


@pytest.mark.parametrize("n", [1, 37, 300])
@pytest.mark.parametrize("make", [random_boxes, adversarial_boxes])
def test_nms_matches_greedy_loop_at_all_thresholds(n, make):
  rng = np.random.default_rng(n)
  if make is random_boxes:
    boxes, scores = make(rng, n), rng.random(n).astype(np.float32)
  else:
    boxes, scores = make(rng, n)
  boxes_p, scores_p, valid = padded(boxes, scores)
  for threshold in _THRESHOLDS:
    expected = reference_nms(boxes, scores, threshold)
    got = kept(nms(boxes_p, scores_p, threshold, _PADDED, valid=valid))
    np.testing.assert_array_equal(got, expected, err_msg=f"threshold {threshold}")


def test_threshold_compared_like_torchvision_double():
  # IoU = 3/10 exactly in float32 is float32(0.3) > 0.3, so torchvision suppresses at 0.3.
  boxes = np.array([[0, 0, 10, 1], [7, 0, 10, 1], [20, 0, 30, 1], [0, 0, 10, 1]], np.float32)
  scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
  boxes_p, scores_p, valid = padded(boxes, scores)
  for threshold in (0.3, 0.5, 0.7):
    expected = reference_nms(boxes, scores, threshold)
    np.testing.assert_array_equal(
        kept(nms(boxes_p, scores_p, threshold, _PADDED, valid=valid)), expected)
  np.testing.assert_array_equal(reference_nms(boxes, scores, 0.3), [0, 2])
  np.testing.assert_array_equal(reference_nms(boxes, scores, 0.5), [0, 1, 2])


def test_no_boxes_and_all_padding():
  indices, valid = nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.5, 7)
  np.testing.assert_array_equal(indices, -np.ones(7))
  assert not np.asarray(valid).any()
  boxes_p, scores_p, valid = padded(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))
  assert not np.asarray(nms(boxes_p, scores_p, 0.5, _PADDED, valid=valid)[1]).any()


def test_max_output_size_truncates():
  rng = np.random.default_rng(1)
  boxes, scores = random_boxes(rng, _PADDED), rng.random(_PADDED).astype(np.float32)
  expected = reference_nms(boxes, scores, 0.5)
  assert len(expected) > 40
  np.testing.assert_array_equal(kept(nms(boxes, scores, 0.5, 40)), expected[:40])


def test_score_threshold_and_valid_mask():
  rng = np.random.default_rng(2)
  boxes, scores = adversarial_boxes(rng, _PADDED)
  valid = rng.random(_PADDED) < 0.8
  take = valid & (scores > 0.4)
  expected = np.nonzero(take)[0][reference_nms(boxes[take], scores[take], 0.5)]
  got = kept(nms(boxes, scores, 0.5, _PADDED, score_threshold=0.4, valid=valid))
  np.testing.assert_array_equal(got, expected)


def test_large_inputs_sparse_and_dense():
  rng = np.random.default_rng(3)
  n = 5000
  sparse = random_boxes(rng, n, image=1500.0, max_size=150.0)
  centers = random_boxes(rng, n // 10, image=1000.0, max_size=150.0)
  dense = (np.repeat(centers, 10, 0) + rng.normal(0, 3, (n, 4))).astype(np.float32)
  dense[:, 2:] = np.maximum(dense[:, 2:], dense[:, :2])
  for boxes in (sparse, dense):
    scores = rng.random(n).astype(np.float32)
    np.testing.assert_array_equal(kept(nms(boxes, scores, 0.5, n)),
                                  reference_nms(boxes, scores, 0.5))


def test_vmap_over_images_under_jit():
  rng = np.random.default_rng(4)
  images = [adversarial_boxes(rng, n) for n in (300, 120, 5)]
  stacked = [padded(b, s, rng=rng) for b, s in images]
  boxes, scores, valid = (np.stack(x) for x in zip(*stacked))
  run = jax.jit(jax.vmap(lambda b, s, v: nms(b, s, 0.7, _PADDED, valid=v)))
  indices, is_valid = run(boxes, scores, valid)
  for i, (b, s) in enumerate(images):
    np.testing.assert_array_equal(kept((indices[i], is_valid[i])), reference_nms(b, s, 0.7))


def test_batched_nms_matches_per_class_loop():
  rng = np.random.default_rng(5)
  boxes, scores = adversarial_boxes(rng, _PADDED)
  class_ids = rng.integers(0, 7, _PADDED)
  valid = rng.random(_PADDED) < 0.9
  for threshold in _THRESHOLDS:
    # The loop visits boxes by score over all classes, so its order is the output order.
    expected = np.nonzero(valid)[0][reference_nms(boxes[valid], scores[valid], threshold,
                                                  class_ids[valid])]
    got = kept(batched_nms(boxes, scores, class_ids, threshold, _PADDED, valid=valid))
    np.testing.assert_array_equal(got, expected, err_msg=f"threshold {threshold}")


def boundary_pairs(rng, num_pairs):
  """Pairs of boxes whose IoU is within a few float32 ulps of 0.5 (second box shifted by
  about a third of its width), where every rounding step decides keep or suppress."""
  corner = rng.uniform(0, 500, (num_pairs, 2))
  size = rng.uniform(5, 300, (num_pairs, 2))
  first = np.concatenate([corner, corner + size], 1).astype(np.float32)
  shift = (first[:, 2] - first[:, 0]) / np.float32(3)
  shift *= 1 + rng.integers(-3, 4, num_pairs) * np.float32(6e-8)
  second = first + np.stack([shift, np.zeros_like(shift)] * 2, 1)
  return np.stack([first, second], 1).reshape(-1, 4).astype(np.float32)


def test_rounding_at_the_threshold_follows_torchvision_arithmetic():
  rng = np.random.default_rng(8)
  boxes = boundary_pairs(rng, _PADDED // 2)
  scores = rng.random(_PADDED).astype(np.float32)
  pair_ids = np.arange(_PADDED) // 2  # pairs never interact
  expected = reference_nms(boxes, scores, 0.5, pair_ids)
  # The float32 decisions differ from exact (float64) ones for many pairs: sensitive test.
  exact = reference_nms(boxes.astype(np.float64), scores, 0.5, pair_ids)
  assert len(np.setxor1d(expected, exact)) > 5
  got = kept(batched_nms(boxes, scores, pair_ids, 0.5, _PADDED, valid=np.ones(_PADDED, bool)))
  np.testing.assert_array_equal(got, expected)


def test_batched_nms_is_per_class():
  boxes = np.array([[0, 0, 10, 10]] * 4, np.float32)
  scores = np.array([0.1, 0.4, 0.3, 0.2], np.float32)
  boxes_p, scores_p, valid = padded(boxes, scores)
  class_ids = np.resize([0, 1], _PADDED)
  got = kept(batched_nms(boxes_p, scores_p, class_ids, 0.5, _PADDED, valid=valid))
  np.testing.assert_array_equal(got, [1, 2])


def test_accelerator_block_sizes_agree():
  """The GPU/TPU configuration (large tiles, lockstep vmap) run here on CPU."""
  nms_module = sys.modules["jaxvision.ops.nms"]
  rng = np.random.default_rng(9)
  boxes, scores = adversarial_boxes(rng, _PADDED)
  class_ids = rng.integers(0, 4, _PADDED)

  @jax.jit
  def run(boxes, scores, class_ids):
    valid = jnp.ones(scores.shape, bool)
    return [nms_module._greedy_nms_one_image(  # pylint: disable=protected-access
        boxes, scores, classes, valid, jnp.float32(0.5), max_output_size=_PADDED,
        blocks=nms_module._ACCELERATOR_BLOCKS) for classes in (None, class_ids)]  # pylint: disable=protected-access

  single, per_class = run(boxes, scores, class_ids)
  np.testing.assert_array_equal(kept((single, single >= 0)), reference_nms(boxes, scores, 0.5))
  np.testing.assert_array_equal(kept((per_class, per_class >= 0)),
                                reference_nms(boxes, scores, 0.5, class_ids))


def test_no_retrace_for_new_inputs_of_the_same_shape():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def detect(boxes, scores, class_ids):
    return nms(boxes, scores, 0.5, 50), batched_nms(boxes, scores, class_ids, 0.5, 50)

  rng = np.random.default_rng(6)
  for _ in range(3):  # 40 boxes into 50 slots: always padded with -1
    boxes, scores = adversarial_boxes(rng, 40)
    class_ids = rng.integers(0, 3, 40)
    nms_result, batched_result = detect(boxes, scores, class_ids)
    np.testing.assert_array_equal(kept(nms_result), reference_nms(boxes, scores, 0.5))
    np.testing.assert_array_equal(kept(batched_result),
                                  reference_nms(boxes, scores, 0.5, class_ids))


def test_losses_downstream_of_nms_are_differentiable():
  rng = np.random.default_rng(10)
  boxes, scores = adversarial_boxes(rng, 40)
  images = np.stack([boxes, boxes[::-1]]), np.stack([scores, scores[::-1]])

  def loss(scale):
    scaled = images[0] * scale
    indices, valid = jax.vmap(lambda b, s: nms(b, s, 0.5, 40))(scaled, images[1])
    picked = jnp.take_along_axis(scaled[..., 0], jnp.maximum(indices, 0), axis=1)
    return jnp.sum(jnp.where(valid, picked, 0.0))

  expected = sum(images[0][i, reference_nms(images[0][i], images[1][i], 0.5), 0].sum()
                 for i in range(2))
  np.testing.assert_allclose(jax.grad(loss)(1.0), expected, rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(boxes=np.zeros((5, 5), np.float32)), "shape"),
    (dict(iou_threshold=1.5), "iou_threshold"),
    (dict(max_output_size=0), "max_output_size"),
])
def test_bad_arguments_raise(kwargs, match):
  args = dict(boxes=np.zeros((5, 4), np.float32), scores=np.zeros((5,), np.float32),
              iou_threshold=0.5, max_output_size=3)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    nms(**args)


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  rng = np.random.default_rng(7)
  boxes, scores = adversarial_boxes(rng, _PADDED)
  class_ids = rng.integers(0, 5, _PADDED)
  boxes_t, scores_t = torch.from_numpy(boxes), torch.from_numpy(scores)
  all_valid = np.ones(_PADDED, bool)  # the signature the other tests compiled
  for threshold in _THRESHOLDS:
    expected = torchvision.ops.nms(boxes_t, scores_t, threshold).numpy()
    np.testing.assert_array_equal(
        kept(nms(boxes, scores, threshold, _PADDED, valid=all_valid)), expected)
    expected = torchvision.ops.batched_nms(boxes_t, scores_t, torch.from_numpy(class_ids),
                                           threshold).numpy()
    got = kept(batched_nms(boxes, scores, class_ids, threshold, _PADDED, valid=all_valid))
    # torchvision's order among exactly tied scores is unspecified; compare set and scores.
    np.testing.assert_array_equal(np.sort(got), np.sort(expected))
    np.testing.assert_array_equal(scores[got], scores[expected])


def test_box_voting_hand_case():
  kept = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 0, 0]], np.float32)
  boxes = np.array([[0, 0, 10, 10],     # the first kept box itself (score 0.6)
                    [0, 0, 10, 12],     # IoU 10/12 with it (score 0.2)
                    [2, 0, 12, 10],     # IoU 8/12 < 0.75: does not vote
                    [50, 50, 60, 60],   # the second kept box, voted alone
                    [0, 0, 10, 11]],    # padding: never votes
                   np.float32)
  scores = np.array([0.6, 0.2, 0.9, 0.5, 1.0], np.float32)
  valid = np.array([True, True, True, True, False])
  got = np.asarray(box_voting(kept, boxes, scores, 0.75, valid=valid))
  np.testing.assert_allclose(got[0], [0, 0, 10, (0.6 * 10 + 0.2 * 12) / 0.8], rtol=1e-6)
  np.testing.assert_allclose(got[1], kept[1])
  np.testing.assert_allclose(got[2], kept[2])  # nothing overlaps an empty box: unchanged
  # The threshold is inclusive: at 10/12 exactly the second candidate still votes.
  got = np.asarray(box_voting(kept[:1], boxes[:2], scores[:2], 10 / 12))
  np.testing.assert_allclose(got[0, 3], (0.6 * 10 + 0.2 * 12) / 0.8, rtol=1e-6)


def test_box_voting_matches_detectron_loop_after_nms():
  rng = np.random.default_rng(3)
  boxes, scores = adversarial_boxes(rng, 200)
  keep = kept(nms(boxes, scores, 0.5, 200))
  got = np.asarray(jax.jit(box_voting, static_argnums=3)(boxes[keep], boxes, scores, 0.7))
  assert np.sum(np.abs(got - boxes[keep]).max(axis=1) > 0.1) >= 5  # clusters moved boxes
  for row, k in zip(got, keep):  # Detectron's box_voting, one kept box at a time
    x1, y1, x2, y2 = boxes.T
    inter = (np.maximum(0, np.minimum(x2, boxes[k, 2]) - np.maximum(x1, boxes[k, 0]))
             * np.maximum(0, np.minimum(y2, boxes[k, 3]) - np.maximum(y1, boxes[k, 1])))
    union = (x2 - x1) * (y2 - y1) + (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
      voters = np.where(union > 0, inter / union, 0) >= 0.7
    weight = scores[voters].astype(np.float64)
    expected = (weight @ boxes[voters] / weight.sum()) if weight.sum() > 0 else boxes[k]
    np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_box_voting_bad_threshold_raises(threshold):
  with pytest.raises(ValueError, match="iou_threshold"):
    box_voting(np.zeros((1, 4), np.float32), np.zeros((2, 4), np.float32),
               np.zeros(2, np.float32), threshold)
