"""FCN (every upsampler) and the sliding-window baseline: shapes, indices, skips, patches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models import fcn

TINY = dict(backbone="resnet_tiny", backbone_kwargs=dict(width=4))


@pytest.fixture(autouse=True)
def unpartitionable_threefry():
  """XLA:CPU compiles the default (partitionable) threefry of the models' many random
  initializers about three times slower; these tests do not shard their randomness."""
  with jax.threefry_partitionable(False):
    yield


def _images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("upsampler", fcn.UPSAMPLERS)
@pytest.mark.parametrize("height, width", [(32, 32), (19, 13)])
def test_output_has_the_input_resolution(upsampler, height, width):
  model = fcn.FCN(num_classes=5, upsampler=upsampler, **{**TINY, "backbone_kwargs": dict(
      width=4, stem="stride2")})
  logits, _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32))
  assert logits.shape == (2, height, width, 5)
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("stem", ["small", "imagenet"])
@pytest.mark.parametrize("upsampler", ["max_unpool", "transposed"])
def test_output_has_the_input_resolution_with_other_stems(stem, upsampler):
  # "small": C2 at the input resolution (no image level); "imagenet": a 4x last step.
  model = fcn.FCN(num_classes=3, upsampler=upsampler, backbone="resnet_tiny",
                  backbone_kwargs=dict(width=4, stem=stem))
  logits, _ = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, 37, 45, 3), jnp.float32))
  assert logits.shape == (1, 37, 45, 3)


def block_maxima(encoder_map, factor):
  """bool mask of each channel's first maximum in every ``factor`` x ``factor`` block."""
  n, height, width, c = encoder_map.shape
  blocks = encoder_map.reshape(n, height // factor, factor, width // factor, factor, c)
  blocks = blocks.transpose(0, 1, 3, 5, 2, 4).reshape(n, height // factor, width // factor, c, -1)
  winner = np.arange(factor * factor) == blocks.argmax(-1)[..., None]
  winner = winner.reshape(n, height // factor, width // factor, c, factor, factor)
  return winner.transpose(0, 1, 4, 2, 5, 3).reshape(encoder_map.shape)


def test_max_unpool_decoder_puts_values_only_at_the_encoder_maxima():
  model = fcn.FCN(num_classes=3, upsampler="max_unpool", **TINY)  # ImageNet stem: C2 at 1/4
  images = _images((2, 32, 32, 3))
  _, state = jax.jit(lambda x: model.init_with_output(
      jax.random.key(0), x, train=False, capture_intermediates=True))(images)
  captured = jax.tree.map(np.asarray, state["intermediates"])
  output = lambda name: captured[name]["__call__"][0]
  previous = "top"
  for level, factor in (("C4", 2), ("C3", 2), ("C2", 2), ("image", 4)):
    unpooled, encoder_map = output(f"upsample_{level}"), output(f"lateral_{level}_norm")
    coarse = np.maximum(output(f"{previous}_norm"), 0)  # the decoder's features after ReLU
    assert np.mean(coarse > 0) > 0.2, level
    maxima = block_maxima(encoder_map, factor)
    # Each coarse value sits where its block of the encoder's map had its maximum, and
    # everything else is zero.
    spread = np.repeat(np.repeat(coarse, factor, axis=1), factor, axis=2)
    np.testing.assert_array_equal(unpooled, np.where(maxima, spread, 0), err_msg=level)
    previous = f"decoder_{level}"


def test_transposed_skip_connections_change_the_output():
  with_skips = fcn.FCN(num_classes=3, upsampler="transposed", skips=True, **TINY)
  without = fcn.FCN(num_classes=3, upsampler="transposed", skips=False, **TINY)
  images = _images((2, 32, 32, 3))
  # The skips' only parameters are the lateral projections of the encoder's maps.
  params = [jax.eval_shape(lambda x, model=model: model.init(
      jax.random.key(0), x, train=False), images)["params"] for model in (with_skips, without)]
  assert {name for name in params[0] if not name.startswith("lateral_")} == set(params[1])

  @jax.jit
  def both(x):
    logits, variables = with_skips.init_with_output(jax.random.key(0), x, train=False)
    return logits, without.apply(variables, x, train=False)  # ignores the laterals

  logits, logits_without_skips = both(images)
  assert np.abs(np.asarray(logits - logits_without_skips)).max() > 1e-3


def test_unknown_upsampler_is_named():
  model = fcn.FCN(num_classes=3, upsampler="cubic", **TINY)
  with pytest.raises(ValueError, match=r"model.upsampler 'cubic'.*nearest"):
    model.init(jax.random.key(0), _images((1, 16, 16, 3)), train=False)


def test_patches_are_centred_on_their_pixels_and_zero_padded():
  image = jnp.arange(1, 1 + 6 * 5, dtype=jnp.float32).reshape(1, 6, 5, 1)
  padded = fcn.pad_for_patches(image, 3)
  rows, cols = jnp.array([[0, 2, 5]]), jnp.array([[0, 3, 4]])
  patches = np.asarray(fcn.patches_at(padded, rows, cols, 3))[0, ..., 0]
  chex.assert_shape(patches, (3, 3, 3))
  np.testing.assert_array_equal(patches[:, 1, 1], image[0, rows[0], cols[0], 0])
  np.testing.assert_array_equal(patches[0], [[0, 0, 0], [0, 1, 2], [0, 6, 7]])
  np.testing.assert_array_equal(patches[2], [[24, 25, 0], [29, 30, 0], [0, 0, 0]])
  with pytest.raises(ValueError, match="patch_size must be an odd"):
    fcn.pad_for_patches(image, 4)


def test_sliding_window_classifies_every_pixel_like_a_direct_patch_evaluation():
  patch_size = 5
  model = fcn.PatchClassifier(num_classes=4, backbone="resnet_tiny",
                              backbone_kwargs=dict(width=4, stem="small"))
  images = _images((2, 7, 6, 3), seed=1)
  padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
  direct = np.stack([padded[b, i:i + patch_size, j:j + patch_size]
                     for b in range(2) for i in range(7) for j in range(6)])

  @jax.jit
  def dense_and_direct(x, patches):
    variables = model.init(jax.random.key(0), patches[:1], train=False)
    classify = lambda p: model.apply(variables, p, train=False)
    # Three rows per chunk: 7 rows leave a partial chunk.
    return fcn.sliding_window_logits(classify, x, patch_size, 3), classify(patches)

  dense, expected = dense_and_direct(images, jnp.asarray(direct))
  chex.assert_shape(dense, (2, 7, 6, 4))
  np.testing.assert_allclose(dense, np.asarray(expected).reshape(2, 7, 6, 4), rtol=1e-4,
                             atol=1e-5)
  # The logits depend on the patch, so a misplaced patch would show.
  assert np.std(np.asarray(dense).reshape(-1, 4), axis=0).min() > 1e-3
