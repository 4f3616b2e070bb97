"""paste_masks and mask_iou against plain numpy (and torchvision's paste_masks_in_image)."""

import jax
import numpy as np
import pytest

from jaxvision import ops

_IMAGE = (40, 56)


def reference_resize(mask, out_h, out_w):
  """Bilinear resize, align_corners=False (torch's upsample_bilinear2d), as a loop."""
  in_h, in_w = mask.shape

  def taps(out_index, in_size, out_size):
    source = max(np.float32(in_size) / np.float32(out_size) * np.float32(out_index + 0.5)
                 - np.float32(0.5), 0.0)
    low = int(source)
    high = low + 1 if low < in_size - 1 else low
    return low, high, source - low

  resized = np.zeros((out_h, out_w))
  for y in range(out_h):
    y0, y1, ly = taps(y, in_h, out_h)
    for x in range(out_w):
      x0, x1, lx = taps(x, in_w, out_w)
      resized[y, x] = ((1 - ly) * ((1 - lx) * mask[y0, x0] + lx * mask[y0, x1])
                       + ly * ((1 - lx) * mask[y1, x0] + lx * mask[y1, x1]))
  return resized


def reference_paste(masks, boxes, image_size):
  """torchvision's paste_masks_in_image (padding 1) written out per box."""
  height, width = image_size
  out = np.zeros((len(masks), height, width))
  for k, (mask, box) in enumerate(zip(masks, np.asarray(boxes, np.float32))):
    size = mask.shape[0]
    padded = np.pad(mask, 1)
    scale = np.float32((size + 2) / size)
    half_w = (box[2] - box[0]) * np.float32(0.5) * scale
    half_h = (box[3] - box[1]) * np.float32(0.5) * scale
    cx, cy = (box[2] + box[0]) * np.float32(0.5), (box[3] + box[1]) * np.float32(0.5)
    x0, x1 = int(cx - half_w), int(cx + half_w)  # int() truncates like .to(int64)
    y0, y1 = int(cy - half_h), int(cy + half_h)
    resized = reference_resize(padded, max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1))
    for y in range(max(y0, 0), min(y1 + 1, height)):
      for x in range(max(x0, 0), min(x1 + 1, width)):
        out[k, y, x] = resized[y - y0, x - x0]
  return out


def mask_inputs(rng, k=6, size=14):
  masks = rng.random((k, size, size)).astype(np.float32)
  corner = rng.uniform(-15, 50, (k, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(0.5, 30, (k, 2))], 1)
  boxes[0] = [-20, -20, -5, -5]  # outside
  boxes[1] = [10, 10, 10.2, 10.2]  # tiny
  return masks, boxes.astype(np.float32)


_paste = jax.jit(ops.paste_masks, static_argnums=(2, 3))


def test_paste_masks_matches_reference():
  masks, boxes = mask_inputs(np.random.default_rng(0))
  probabilities = _paste(masks, boxes, _IMAGE, None)
  expected = reference_paste(masks, boxes, _IMAGE)
  np.testing.assert_allclose(probabilities, expected, atol=1e-5)
  assert np.asarray(probabilities)[0].max() == 0
  binary = _paste(masks, boxes, _IMAGE, 0.5)
  assert binary.dtype == bool
  np.testing.assert_array_equal(binary, np.asarray(probabilities) > 0.5)


def test_mask_iou():
  rng = np.random.default_rng(1)
  first, second = rng.random((4, 9, 11)) < 0.3, rng.random((3, 9, 11)) < 0.5
  first[0] = False  # empty
  second[0] = False
  expected = np.zeros((4, 3))
  for i in range(4):
    for j in range(3):
      union = (first[i] | second[j]).sum()
      expected[i, j] = (first[i] & second[j]).sum() / union if union else 0.0
  np.testing.assert_allclose(ops.mask_iou(first, second), expected, atol=1e-6)
  np.testing.assert_allclose(np.diag(ops.mask_iou(first[1:], first[1:])), 1.0)


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  pytest.importorskip("torchvision")
  from torchvision.models.detection.roi_heads import paste_masks_in_image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  masks = rng.random((6, 14, 14)).astype(np.float32)
  # torchvision's slicing fails for boxes entirely outside the image; keep them overlapping.
  corner = rng.uniform(-5, 30, (6, 2))
  boxes = np.concatenate([corner, corner + rng.uniform(6, 30, (6, 2))], 1).astype(np.float32)
  expected = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes),
                                  _IMAGE).numpy()[:, 0]
  np.testing.assert_allclose(_paste(masks, boxes, _IMAGE, None), expected, atol=1e-5)
