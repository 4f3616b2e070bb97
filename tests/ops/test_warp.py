"""R-CNN's region warp samples the right region of the image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops


def _image(height=16, width=20, channels=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(height, width, channels)),
                     jnp.float32)


@pytest.mark.parametrize("output_size", [(8, 10), (16, 20), (24, 30), (11, 7)])
def test_box_equal_to_the_image_warps_to_the_resized_image(output_size):
  image = _image()
  warped = ops.warp_boxes(image, jnp.array([[0.0, 0.0, 20.0, 16.0]]), output_size,
                          sampling_ratio=1)
  expected = jax.image.resize(image, output_size + (3,), "linear", antialias=False)
  np.testing.assert_allclose(warped[0], expected, atol=1e-5)


def test_sub_box_warps_to_the_resized_crop():
  image = _image()
  # Same size, and a 2x downsampling: every sample stays inside the crop.
  warped = ops.warp_boxes(image, jnp.array([[4.0, 2.0, 12.0, 10.0], [4.0, 2.0, 12.0, 10.0]]),
                          (8, 8), sampling_ratio=1)
  np.testing.assert_allclose(warped[0], image[2:10, 4:12], atol=1e-6)
  half = ops.warp_boxes(image, jnp.array([[4.0, 2.0, 12.0, 10.0]]), (4, 4), sampling_ratio=1)
  expected = jax.image.resize(image[2:10, 4:12], (4, 4, 3), "linear", antialias=False)
  np.testing.assert_allclose(half[0], expected, atol=1e-6)


def test_two_samples_per_bin_box_filter_a_2x_downsampling():
  image = _image()
  warped = ops.warp_boxes(image, jnp.array([[4.0, 2.0, 12.0, 10.0]]), (4, 4), sampling_ratio=2)
  block_mean = np.asarray(image[2:10, 4:12]).reshape(4, 2, 4, 2, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(warped[0], block_mean, atol=1e-6)


def test_context_padding_puts_the_box_in_the_centre_of_the_warp():
  # Warped to 16 with 4 pixels of context, the original 8 x 8 box fills the central 8 x 8.
  image = _image()
  box = jnp.array([[6.0, 4.0, 14.0, 12.0]])
  dilated = ops.context_boxes(box, 16, 4)
  np.testing.assert_allclose(dilated, [[2.0, 0.0, 18.0, 16.0]])
  warped = ops.warp_regions(image[None], box[None], 16, context_padding=4, sampling_ratio=1)
  assert warped.shape == (1, 1, 16, 16, 3)
  np.testing.assert_allclose(warped[0, 0, 4:12, 4:12], image[4:12, 6:14], atol=1e-6)


def test_context_outside_the_image_reads_zero():
  image = _image() + 10.0
  warped = ops.warp_boxes(image, jnp.array([[-8.0, -8.0, 8.0, 8.0]]), (16, 16), sampling_ratio=1)
  assert np.all(np.asarray(warped[0, :7, :7]) == 0.0)  # more than a pixel outside
  np.testing.assert_allclose(warped[0, 8:, 8:], image[:8, :8], atol=1e-6)


def test_context_padding_out_of_range_is_an_error():
  with pytest.raises(ValueError, match="context_padding"):
    ops.context_boxes(jnp.zeros((1, 4)), 16, 8)
