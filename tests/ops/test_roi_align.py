"""roi_align / multilevel_roi_align / crop_and_resize_masks against a plain bilinear loop."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import crop_and_resize_masks
from jaxvision.ops import fpn_level_index
from jaxvision.ops import multilevel_roi_align
from jaxvision.ops import roi_align

# (output_size, spatial_scale, sampling_ratio, aligned): few configurations, each compiled once.
_CONFIGS = [((7, 7), 0.5, 2, False), ((5, 3), 0.125, 1, True), ((4, 6), 1.0, 3, False)]
_LEVEL_SHAPES = [(32, 40), (16, 20), (8, 10), (4, 5)]  # P2..P5 of a 128 x 160 image

_roi_align = jax.jit(roi_align, static_argnums=(2, 3, 4, 5))
_multilevel = jax.jit(functools.partial(multilevel_roi_align, output_size=(7, 7), min_level=2))


def reference_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned):
  """torchvision's CPU kernel as a loop: float32 sample coordinates, float64 sums."""
  height, width, channels = features.shape
  out_h, out_w = output_size
  f32 = np.float32
  output = np.zeros((len(boxes), out_h, out_w, channels))
  for k, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32)):
    offset = f32(0.5) if aligned else f32(0)
    start_x, start_y = x1 * f32(spatial_scale) - offset, y1 * f32(spatial_scale) - offset
    roi_w = x2 * f32(spatial_scale) - offset - start_x
    roi_h = y2 * f32(spatial_scale) - offset - start_y
    if not aligned:
      roi_w, roi_h = max(roi_w, f32(1)), max(roi_h, f32(1))
    bin_w, bin_h = roi_w / f32(out_w), roi_h / f32(out_h)
    for ph in range(out_h):
      for pw in range(out_w):
        total = np.zeros(channels)
        for iy in range(sampling_ratio):
          y = start_y + f32(ph) * bin_h + f32(iy + 0.5) * bin_h / f32(sampling_ratio)
          for ix in range(sampling_ratio):
            x = start_x + f32(pw) * bin_w + f32(ix + 0.5) * bin_w / f32(sampling_ratio)
            if not (-1 <= y <= height and -1 <= x <= width):
              continue
            yy, xx = max(y, f32(0)), max(x, f32(0))
            y_low, x_low = int(yy), int(xx)
            if y_low >= height - 1:
              y_low = y_high = height - 1
              yy = f32(y_low)
            else:
              y_high = y_low + 1
            if x_low >= width - 1:
              x_low = x_high = width - 1
              xx = f32(x_low)
            else:
              x_high = x_low + 1
            ly, lx = yy - y_low, xx - x_low
            hy, hx = 1 - ly, 1 - lx
            total += (hy * hx * features[y_low, x_low] + hy * lx * features[y_low, x_high]
                      + ly * hx * features[y_high, x_low] + ly * lx * features[y_high, x_high])
        output[k, ph, pw] = total / (sampling_ratio * sampling_ratio)
  return output


def reference_level(boxes):
  """torchvision's LevelMapper in float32, as absolute levels."""
  boxes = np.asarray(boxes, np.float32)
  size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
  with np.errstate(divide="ignore"):
    level = np.floor(np.float32(4) + np.log2(size / np.float32(224)) + np.float32(1e-6))
  return np.clip(level, 2, 5).astype(int)


def border_boxes(rng, n, image_h, image_w):
  """Boxes inside, crossing and fully outside the image, plus tiny and zero-area ones."""
  corner = np.stack([rng.uniform(-0.4 * image_w, 1.2 * image_w, n),
                     rng.uniform(-0.4 * image_h, 1.2 * image_h, n)], 1)
  size = rng.uniform(0, 0.7, (n, 1)) * np.array([image_w, image_h])
  size[: n // 8] = 0  # zero area
  size[n // 8: n // 4] *= 0.01  # under one feature pixel
  return np.concatenate([corner, corner + size], 1).astype(np.float32)


@pytest.mark.parametrize("config", _CONFIGS)
def test_roi_align_matches_bilinear_loop(config):
  output_size, spatial_scale, sampling_ratio, aligned = config
  rng = np.random.default_rng(0)
  features = rng.standard_normal((24, 32, 5)).astype(np.float32)
  boxes = border_boxes(rng, 40, 24 / spatial_scale, 32 / spatial_scale)
  got = _roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)
  chex.assert_shape(got, (40, *output_size, 5))
  expected = reference_roi_align(features, boxes, output_size, spatial_scale, sampling_ratio,
                                 aligned)
  np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_boxes_outside_the_map_pool_zeros():
  features = np.ones((8, 8, 2), np.float32)
  boxes = np.array([[20, 20, 30, 30], [-30, -30, -10, -10], [0, 0, 8, 8]], np.float32)
  got = np.asarray(_roi_align(features, boxes, (7, 7), 0.5, 2, False))
  np.testing.assert_array_equal(got[:2], 0)
  np.testing.assert_allclose(got[2], 1, atol=1e-6)


def test_vmap_over_images_without_retracing():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def pool_batch(features, boxes):
    return jax.vmap(lambda f, b: roi_align(f, b, (7, 7), 0.5, 2, False))(features, boxes)

  rng = np.random.default_rng(1)
  for _ in range(2):
    features = rng.standard_normal((3, 24, 32, 5)).astype(np.float32)
    boxes = np.stack([border_boxes(rng, 40, 48, 64) for _ in range(3)])
    got = pool_batch(features, boxes)
    for i in range(3):
      np.testing.assert_allclose(
          got[i], reference_roi_align(features[i], boxes[i], (7, 7), 0.5, 2, False), atol=1e-6)


def test_gradient_with_respect_to_features_is_the_adjoint():
  rng = np.random.default_rng(6)
  features = rng.standard_normal((24, 32, 5)).astype(np.float32)
  boxes = border_boxes(rng, 40, 48, 64)
  cotangent = rng.standard_normal((40, 7, 7, 5)).astype(np.float32)
  direction = rng.standard_normal(features.shape).astype(np.float32)
  loss = lambda f: jnp.vdot(cotangent, _roi_align(f, boxes, (7, 7), 0.5, 2, False))
  # roi_align is linear in the features: loss(f + d) - loss(f) == <grad, d>.
  np.testing.assert_allclose(jnp.vdot(jax.grad(loss)(features), direction),
                             loss(features + direction) - loss(features), rtol=1e-4)


def pyramid_inputs(rng):
  features = [rng.standard_normal((h, w, 3)).astype(np.float32) for h, w in _LEVEL_SHAPES]
  centers = rng.uniform(0, 160, (48, 2))
  sizes = np.exp(rng.uniform(np.log(8), np.log(700), (48, 1))) * rng.uniform(0.5, 2, (48, 2))
  boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1).astype(np.float32)
  boxes[:4] = [[0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448], [5, 5, 5, 5]]
  return features, boxes


def test_fpn_level_index_matches_level_mapper():
  boxes = pyramid_inputs(np.random.default_rng(2))[1]
  expected = reference_level(boxes)
  assert set(expected) == {2, 3, 4, 5}
  got = jax.jit(fpn_level_index, static_argnums=(1, 2))(boxes, 2, 5)
  np.testing.assert_array_equal(got, expected - 2)
  np.testing.assert_array_equal(got[:4], [1, 2, 3, 0])  # 112, 224, 448 px and empty boxes


def test_multilevel_roi_align_pools_each_box_on_its_level():
  features, boxes = pyramid_inputs(np.random.default_rng(3))
  got = _multilevel(features, boxes)
  for k, level in enumerate(reference_level(boxes)):
    expected = reference_roi_align(features[level - 2], boxes[k:k + 1], (7, 7), 2.0**-level,
                                   2, False)
    np.testing.assert_allclose(got[k:k + 1], expected, atol=1e-6, err_msg=f"box {k}")


def test_crop_and_resize_masks_pools_the_matched_mask():
  rng = np.random.default_rng(4)
  masks = rng.random((3, 20, 30)) < 0.5
  boxes = border_boxes(rng, 10, 20, 30)
  index = rng.integers(0, 3, 10)
  got = jax.jit(crop_and_resize_masks, static_argnums=3)(masks, index, boxes, 6)
  for k in range(10):
    expected = reference_roi_align(masks[index[k], :, :, None].astype(np.float32),
                                   boxes[k:k + 1], (6, 6), 1.0, 2, False)[..., 0]
    np.testing.assert_allclose(got[k:k + 1], expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampling_ratio=0), "sampling_ratio"),
    (dict(output_size=(7,)), "output_size"),
])
def test_bad_arguments_raise(kwargs, match):
  args = dict(features=jnp.zeros((4, 4, 1)), boxes=jnp.zeros((2, 4)), output_size=(7, 7))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    roi_align(**args)


def test_matches_torchvision():
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  rng = np.random.default_rng(5)
  features = rng.standard_normal((24, 32, 5)).astype(np.float32)
  features_nchw = torch.from_numpy(features.transpose(2, 0, 1)[None].copy())
  for output_size, spatial_scale, sampling_ratio, aligned in _CONFIGS:
    boxes = border_boxes(rng, 40, 24 / spatial_scale, 32 / spatial_scale)
    rois = torch.from_numpy(np.concatenate([np.zeros((40, 1), np.float32), boxes], 1))
    expected = torchvision.ops.roi_align(features_nchw, rois, output_size, spatial_scale,
                                         sampling_ratio, aligned).numpy().transpose(0, 2, 3, 1)
    got = _roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)

  features, boxes = pyramid_inputs(rng)
  pooler = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)
  maps = {f"p{i + 2}": torch.from_numpy(f.transpose(2, 0, 1)[None].copy())
          for i, f in enumerate(features)}
  expected = pooler(maps, [torch.from_numpy(boxes)], [(128, 160)]).numpy()
  np.testing.assert_allclose(_multilevel(features, boxes), expected.transpose(0, 2, 3, 1),
                             atol=1e-5, rtol=0)
