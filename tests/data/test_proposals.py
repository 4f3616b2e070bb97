"""Selective search proposals (``jaxvision.data.proposals``, OpenCV contrib)."""

import numpy as np
import pytest

from jaxvision.data import proposals as proposals_lib


def _image(height=48, width=64, channels=3):
  """Noise with two flat rectangles, which selective search must propose."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 60, (height, width, channels), dtype=np.uint8)
  image[5:25, 8:30] = 220
  image[28:44, 36:60] = 120
  return image


def _check_boxes(boxes, valid, height, width, max_proposals):
  assert boxes.shape == (max_proposals, 4) and boxes.dtype == np.float32
  assert valid.shape == (max_proposals,) and valid.dtype == bool
  count = int(valid.sum())
  assert count > 0
  assert valid[:count].all() and not valid[count:].any()  # valid rows first
  np.testing.assert_array_equal(boxes[count:], 0)
  real = boxes[:count]
  assert np.all(real[:, 2] > real[:, 0]) and np.all(real[:, 3] > real[:, 1])
  assert np.all(real[:, :2] >= 0)
  assert np.all(real[:, 2] <= width) and np.all(real[:, 3] <= height)
  assert len({tuple(b) for b in real}) == count  # no duplicates


@pytest.mark.parametrize("mode", proposals_lib.MODES)
@pytest.mark.parametrize("shape", [(48, 64), (48, 64, 1), (48, 64, 3)],
                         ids=["gray", "gray_channel", "colour"])
def test_valid_boxes_inside_the_image_for_grayscale_and_colour(mode, shape):
  image = _image()
  image = image[..., 0] if len(shape) == 2 else image[..., :shape[2]]
  boxes, valid = proposals_lib.selective_search(image, mode=mode, max_proposals=500)
  _check_boxes(boxes, valid, 48, 64, 500)
  # The flat rectangles are found exactly ([x, x + w) pixel columns).
  found = {tuple(b) for b in boxes[valid]}
  assert (8, 5, 30, 25) in found and (36, 28, 60, 44) in found


def test_grayscale_is_searched_as_three_equal_channels():
  gray = _image()[..., 0]
  got = proposals_lib.selective_search(gray, max_proposals=300)
  want = proposals_lib.selective_search(np.repeat(gray[..., None], 3, axis=2),
                                        max_proposals=300)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])


def test_deterministic_order_and_truncation_keeps_the_ranking():
  image = _image()
  first = proposals_lib.selective_search(image, mode="quality", max_proposals=400)
  for _ in range(2):  # OpenCV's own ranking is random; ours is seeded
    again = proposals_lib.selective_search(image, mode="quality", max_proposals=400)
    np.testing.assert_array_equal(first[0], again[0])
  count = int(first[1].sum())
  assert count > 10
  short, short_valid = proposals_lib.selective_search(image, mode="quality", max_proposals=10)
  assert short_valid.all()
  np.testing.assert_array_equal(short, first[0][:10])
  _check_boxes(short, short_valid, 48, 64, 10)


def test_min_size_drops_small_boxes():
  image = _image()
  boxes, valid = proposals_lib.selective_search(image, max_proposals=1000, min_size=12)
  sizes = boxes[valid, 2:] - boxes[valid, :2]
  assert valid.any() and np.all(sizes >= 12)
  small, small_valid = proposals_lib.selective_search(image, max_proposals=1000, min_size=1)
  assert small_valid.sum() > valid.sum()


def test_cache_returns_the_searched_boxes_and_writes_once(tmp_path):
  image = _image()
  cache = proposals_lib.ProposalCache(str(tmp_path), mode="fast", min_size=4)
  boxes, valid = cache(image, 200)
  want = proposals_lib.selective_search(image, mode="fast", max_proposals=200, min_size=4)
  np.testing.assert_array_equal(boxes, want[0])
  np.testing.assert_array_equal(valid, want[1])
  files = list(tmp_path.rglob("*.npy"))
  assert len(files) == 1
  # A second read comes from the file: poison it and see the poisoned boxes back.
  np.save(files[0], np.array([[1, 2, 3, 4]], np.float32))
  np.testing.assert_array_equal(cache.boxes(image), [[1, 2, 3, 4]])
  # Other settings or another image are other keys.
  proposals_lib.ProposalCache(str(tmp_path), mode="fast", min_size=8).boxes(image)
  cache.boxes(image[:, ::-1])
  assert len(list(tmp_path.rglob("*.npy"))) == 3


def test_bad_inputs_are_rejected():
  with pytest.raises(ValueError, match="mode"):
    proposals_lib.selective_search(_image(), mode="best")
  with pytest.raises(ValueError, match="uint8"):
    proposals_lib.selective_search(_image().astype(np.float32))
  with pytest.raises(ValueError, match="shape"):
    proposals_lib.selective_search(np.zeros((8, 8, 4), np.uint8))
  with pytest.raises(ValueError, match="max_proposals"):
    proposals_lib.selective_search(_image(), max_proposals=0)
