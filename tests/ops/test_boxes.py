"""Box geometry and box coding against numpy formulas (and torchvision when installed)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops


def random_boxes(rng, n):
  corner = rng.uniform(-20, 100, (n, 2))
  size = rng.uniform(0, 50, (n, 2))
  size[: n // 5] = 0  # zero-area boxes (points)
  size[n // 5: n // 4, 0] = 0  # lines
  boxes = np.concatenate([corner, corner + size], 1)
  boxes[-3:] = boxes[-4]  # duplicates
  return boxes.astype(np.float32)


def reference_iou(a, b):
  a, b = a.astype(np.float64), b.astype(np.float64)
  inter_w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0],
                                                                          b[None, :, 0]), 0, None)
  inter_h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1],
                                                                          b[None, :, 1]), 0, None)
  inter = inter_w * inter_h
  area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
  area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
  union = area_a[:, None] + area_b[None, :] - inter
  hull_w = np.maximum(a[:, None, 2], b[None, :, 2]) - np.minimum(a[:, None, 0], b[None, :, 0])
  hull_h = np.maximum(a[:, None, 3], b[None, :, 3]) - np.minimum(a[:, None, 1], b[None, :, 1])
  hull = hull_w * hull_h
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, inter / union, 0.0)
    giou = iou - np.where(hull > 0, (hull - union) / hull, 0.0)
  return iou, giou


def test_iou_and_giou_match_numpy_without_nans():
  rng = np.random.default_rng(0)
  a, b = random_boxes(rng, 30), random_boxes(rng, 20)
  iou, giou = reference_iou(a, b)
  got_iou, got_giou = ops.box_iou(a, b), ops.generalized_box_iou(a, b)
  assert np.isfinite(got_iou).all() and np.isfinite(got_giou).all()
  np.testing.assert_allclose(got_iou, iou, atol=1e-6)
  np.testing.assert_allclose(got_giou, giou, atol=1e-6)
  np.testing.assert_allclose(np.diag(ops.box_iou(a[10:], a[10:])), 1.0, atol=1e-6)
  np.testing.assert_array_equal(ops.box_iou(a[:2], a[:2]), 0.0)  # zero-area boxes
  np.testing.assert_allclose(ops.box_area(a), (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))


def test_conversions_round_trip():
  rng = np.random.default_rng(1)
  boxes = random_boxes(rng, 10).reshape(2, 5, 4)  # any leading dims
  x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
  np.testing.assert_allclose(ops.xyxy_to_xywh(boxes),
                             np.stack([x1, y1, x2 - x1, y2 - y1], -1), atol=1e-5)
  np.testing.assert_allclose(ops.xyxy_to_cxcywh(boxes),
                             np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1),
                             atol=1e-5)
  np.testing.assert_allclose(ops.xywh_to_xyxy(ops.xyxy_to_xywh(boxes)), boxes, atol=1e-5)
  np.testing.assert_allclose(ops.cxcywh_to_xyxy(ops.xyxy_to_cxcywh(boxes)), boxes, atol=1e-5)


def test_clip_boxes_and_small_box_mask():
  boxes = np.array([[-5, -5, 10, 10], [5, 6, 120, 90], [50, 50, 50.5, 70]], np.float32)
  np.testing.assert_array_equal(ops.clip_boxes(boxes, (80, 100)),
                                [[0, 0, 10, 10], [5, 6, 100, 80], [50, 50, 50.5, 70]])
  # A traced per-image size (as under vmap over a padded batch).
  clipped = jax.vmap(ops.clip_boxes)(np.stack([boxes, boxes]), jnp.array([[80, 100], [8, 9]]))
  np.testing.assert_array_equal(clipped[1, 1], [5, 6, 9, 8])
  np.testing.assert_array_equal(ops.small_box_mask(boxes, 1.0), [True, True, False])


def reference_encode(boxes, anchors, weights):
  wx, wy, ww, wh = weights
  aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
  bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  acx, acy = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
  bcx, bcy = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
  return np.stack([wx * (bcx - acx) / aw, wy * (bcy - acy) / ah, ww * np.log(bw / aw),
                   wh * np.log(bh / ah)], 1)


def test_encode_matches_formula_and_decode_inverts_it():
  rng = np.random.default_rng(2)
  anchors = random_boxes(rng, 40)[10:] + np.array([0, 0, 1, 1], np.float32)
  boxes = anchors + rng.normal(0, 5, anchors.shape).astype(np.float32)
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
  weights = (10.0, 10.0, 5.0, 5.0)
  deltas = ops.encode_boxes(boxes, anchors, weights)
  np.testing.assert_allclose(deltas, reference_encode(boxes.astype(np.float64),
                                                      anchors.astype(np.float64), weights),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(ops.decode_boxes(deltas, anchors, weights), boxes, atol=1e-3)


def test_decode_clamps_log_scale():
  anchors = np.array([[0, 0, 16, 16]], np.float32)
  decoded = ops.decode_boxes(np.array([[0, 0, 50.0, -2.0]], np.float32), anchors)
  np.testing.assert_allclose(decoded[0, 2] - decoded[0, 0], 1000.0, rtol=1e-5)
  np.testing.assert_allclose(decoded[0, 3] - decoded[0, 1], 16 * math.exp(-2.0), rtol=1e-5)


def test_bad_box_shape_raises():
  with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
    ops.box_area(np.zeros((3, 5)))


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  from torchvision.models.detection import _utils as det_utils  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  a, b = random_boxes(rng, 30)[8:], random_boxes(rng, 20)[8:]  # torchvision's GIoU needs area
  a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
  np.testing.assert_allclose(ops.box_iou(a, b), torchvision.ops.box_iou(a_t, b_t), atol=1e-6)
  np.testing.assert_allclose(ops.generalized_box_iou(a, b),
                             torchvision.ops.generalized_box_iou(a_t, b_t), atol=1e-6)
  coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
  anchors = b[:10] + np.array([0, 0, 1, 1], np.float32)
  np.testing.assert_allclose(
      ops.encode_boxes(a[:10], anchors, (10.0, 10.0, 5.0, 5.0)),
      coder.encode_single(a_t[:10], torch.from_numpy(anchors)), rtol=1e-5, atol=1e-5)
  deltas = rng.normal(0, 3, (10, 4)).astype(np.float32)
  np.testing.assert_allclose(
      ops.decode_boxes(deltas, anchors, (10.0, 10.0, 5.0, 5.0)),
      coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors)), atol=1e-4)


@pytest.mark.parametrize("paired,pairwise", [
    (ops.paired_box_iou, ops.box_iou),
    (ops.paired_generalized_box_iou, ops.generalized_box_iou)])
def test_paired_iou_is_the_diagonal_of_the_pairwise_op(paired, pairwise):
  rng = np.random.default_rng(11)
  corners = rng.uniform(0, 50, (2, 30, 2, 2))
  boxes1, boxes2 = (np.concatenate([c.min(axis=1), c.max(axis=1)], 1).astype(np.float32)
                    for c in corners)
  want = np.diag(np.asarray(pairwise(boxes1, boxes2)))
  assert want.min() < 0.05 and want.max() > 0.3  # disjoint and overlapping pairs both
  np.testing.assert_allclose(paired(boxes1, boxes2), want, rtol=1e-6, atol=1e-7)
  with pytest.raises(AssertionError):
    paired(boxes1, boxes2[:5])
