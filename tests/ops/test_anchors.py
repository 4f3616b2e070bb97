"""Anchor generation against an explicit loop (and torchvision's AnchorGenerator)."""

import numpy as np
import pytest

from jaxvision import ops

_SHAPES = [(6, 8), (3, 4)]
_STRIDES = [8, (16, 12)]
_SIZES = [(32, 45), (64,)]
_RATIOS = [(0.5, 1.0, 2.0), (1.0, 3.0)]


def reference_anchors(shapes, strides, sizes, ratios):
  """Level, then y, then x, then ratio, then size; centred on the stride grid's corners."""
  anchors = []
  for (height, width), stride, level_sizes, level_ratios in zip(shapes, strides, sizes, ratios):
    stride_y, stride_x = (stride, stride) if np.isscalar(stride) else stride
    for y in range(height):
      for x in range(width):
        for ratio in level_ratios:
          for size in level_sizes:
            half_w = np.round(size / np.sqrt(np.float32(ratio)) / 2)
            half_h = np.round(size * np.sqrt(np.float32(ratio)) / 2)
            cx, cy = x * stride_x, y * stride_y
            anchors.append([cx - half_w, cy - half_h, cx + half_w, cy + half_h])
  return np.array(anchors, np.float32)


def test_anchors_match_loop_order_and_counts():
  anchors = ops.generate_anchors(_SHAPES, _STRIDES, _SIZES, _RATIOS)
  expected = reference_anchors(_SHAPES, _STRIDES, _SIZES, _RATIOS)
  np.testing.assert_array_equal(anchors, expected)
  counts = ops.num_anchors_per_level(_SHAPES, _SIZES, _RATIOS)
  assert counts == [6 * 8 * 6, 3 * 4 * 2]
  assert sum(counts) == anchors.shape[0]
  ratio = ((anchors[:, 3] - anchors[:, 1]) / (anchors[:, 2] - anchors[:, 0]))[:3]
  np.testing.assert_allclose(ratio, [0.5, 0.5, 1.0], rtol=0.05)  # 32/45 px, ratio 0.5, then 1


def test_single_level():
  anchors = ops.generate_anchors([(2, 3)], [4], [(8,)], [(1.0,)])
  np.testing.assert_array_equal(anchors[:3], [[-4, -4, 4, 4], [0, -4, 8, 4], [4, -4, 12, 4]])


def test_mismatched_levels_raise():
  with pytest.raises(ValueError, match="one entry per feature level"):
    ops.generate_anchors(_SHAPES, [8], _SIZES, _RATIOS)


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  from torchvision.models.detection.anchor_utils import AnchorGenerator  # pylint: disable=g-import-not-at-top
  from torchvision.models.detection.image_list import ImageList  # pylint: disable=g-import-not-at-top
  shapes = [(12, 16), (6, 8), (3, 4)]
  sizes = ((32, 40), (64,), (128,))
  ratios = ((0.5, 1.0, 2.0),) * 3
  generator = AnchorGenerator(sizes, ratios)
  images = ImageList(torch.zeros(1, 3, 96, 128), [(96, 128)])
  features = [torch.zeros(1, 1, h, w) for h, w in shapes]
  expected = generator(images, features)[0].numpy()
  np.testing.assert_array_equal(ops.generate_anchors(shapes, [8, 16, 32], sizes, ratios),
                                expected)
