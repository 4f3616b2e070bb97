"""Max pooling with indices, max / bed-of-nails unpooling, nearest upsampling, conv_transpose.

Parity with PyTorch twice: against the outputs saved by ``make_upsampling_golden.py`` (runs
without torch, as in CI) and, where torch is installed, against torch on fresh inputs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from . import make_upsampling_golden as golden

_max_pool = jax.jit(ops.max_pool_with_indices, static_argnums=(1, 2))
_max_unpool = jax.jit(ops.max_unpool, static_argnums=2)
_conv_transpose = jax.jit(ops.conv_transpose, static_argnums=(2, 3, 4))

_MAX_POOL = sorted(golden.MAX_POOL_CASES)
_CONV_TRANSPOSE = sorted(golden.CONV_TRANSPOSE_CASES)


@pytest.fixture(scope="module")
def saved():
  with np.load(golden.GOLDEN_PATH) as arrays:
    return dict(arrays)


def _pool_args(case):
  return case["window"], case["stride"]


def _conv_args(case):
  return case["stride"], case["padding"], case["output_padding"]


def _case_arrays(arrays, op, name):
  """``{"x": ..., ...}`` of one case from the ``"<op>/<case>/<array>"`` golden keys."""
  prefix = f"{op}/{name}/"
  return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}


def check_max_pool_case(case, x, decoder_values, pooled, indices, unpooled,
                        unpooled_decoder_values):
  got_pooled, got_indices = _max_pool(x, *_pool_args(case))
  assert got_indices.dtype == jnp.int32
  np.testing.assert_array_equal(got_indices, indices)  # ties and NaN: the same positions
  np.testing.assert_array_equal(got_pooled, pooled)
  output_hw = x.shape[1:3]
  np.testing.assert_array_equal(_max_unpool(got_pooled, got_indices, output_hw), unpooled)
  # Distinct values at repeated indices: the last write in row-major order wins.
  np.testing.assert_array_equal(_max_unpool(decoder_values, got_indices, output_hw),
                                unpooled_decoder_values)


def check_conv_transpose_case(case, x, kernel, output):
  got = _conv_transpose(x, kernel, *_conv_args(case))
  chex.assert_shape(got, output.shape)
  np.testing.assert_allclose(got, output, atol=1e-5, rtol=1e-5)


def test_golden_file_holds_every_case(saved):
  expected = {f"max_pool/{name}/{array}" for name in _MAX_POOL
              for array in ("x", "pooled", "indices", "unpooled", "decoder_values",
                            "unpooled_decoder_values")}
  expected |= {f"conv_transpose/{name}/{array}" for name in _CONV_TRANSPOSE
               for array in ("x", "kernel", "output")}
  assert set(saved) == expected, "stale golden file: run tests/ops/make_upsampling_golden.py"
  assert golden.GOLDEN_PATH.stat().st_size < 300_000


@pytest.mark.parametrize("name", _MAX_POOL)
def test_max_pool_and_unpool_match_saved_torch_outputs(saved, name):
  check_max_pool_case(golden.MAX_POOL_CASES[name], **_case_arrays(saved, "max_pool", name))


@pytest.mark.parametrize("name", _CONV_TRANSPOSE)
def test_conv_transpose_matches_saved_torch_outputs(saved, name):
  check_conv_transpose_case(golden.CONV_TRANSPOSE_CASES[name],
                            **_case_arrays(saved, "conv_transpose", name))


def test_saved_cases_exercise_ties_and_repeated_indices(saved):
  """The golden cases must contain what they claim to test, or parity proves little."""
  x = saved["max_pool/window3_stride2_overlap_ties/x"]
  indices = saved["max_pool/window3_stride2_overlap_ties/indices"]
  window = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
  maxima = window.reshape(*window.shape[:4], 9)
  assert ((maxima == maxima.max(-1, keepdims=True)).sum(-1) > 1).mean() > 0.5
  flat = indices.transpose(0, 3, 1, 2).reshape(-1, indices[0, ..., 0].size)
  assert any(len(np.unique(row)) < len(row) for row in flat)
  assert np.isnan(saved["max_pool/window2_stride1_nan/pooled"]).any()


def test_matches_torch_on_fresh_inputs():
  pytest.importorskip("torch")
  fresh = golden.make_golden(seed=golden.GOLDEN_SEED + 1)
  for name, case in golden.MAX_POOL_CASES.items():
    check_max_pool_case(case, **_case_arrays(fresh, "max_pool", name))
  for name, case in golden.CONV_TRANSPOSE_CASES.items():
    check_conv_transpose_case(case, **_case_arrays(fresh, "conv_transpose", name))


def test_conv_transpose_matches_torch_on_random_geometries():
  """Random (kernel, stride, padding, output_padding, size) per axis that torch accepts:
  padding beyond the kernel, strides beyond the kernel (phases without taps), 1-pixel
  inputs."""
  pytest.importorskip("torch")
  rng = np.random.default_rng(7)
  checked = 0
  while checked < 30:
    k, s, p = rng.integers(1, 6, 2), rng.integers(1, 5, 2), rng.integers(0, 5, 2)
    extra, size = rng.integers(0, s), rng.integers(1, 5, 2)
    if np.any((size - 1) * s - 2 * p + k + extra < 1):
      continue  # not positive: torch rejects it too (test_bad_arguments_raise)
    x = rng.standard_normal((1, *size, 2)).astype(np.float32)
    kernel = rng.standard_normal((*k, 2, 3)).astype(np.float32)
    args = tuple(tuple(int(v) for v in pair) for pair in (s, p, extra))
    expected = golden.torch_conv_transpose(x, kernel, *args)
    got = _conv_transpose(x, kernel, *args)
    chex.assert_shape(got, expected.shape)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5, err_msg=str(args))
    checked += 1


def test_saved_outputs_are_what_torch_computes(saved):
  """Guards the golden file itself: regenerating it with the installed torch changes nothing."""
  pytest.importorskip("torch")
  for key, value in golden.make_golden(golden.GOLDEN_SEED).items():
    # Close, not equal: another CPU or torch build may sum the convolutions differently.
    np.testing.assert_allclose(value, saved[key], atol=1e-5, rtol=1e-5, err_msg=key)


def test_max_pool_ties_pick_the_first_maximum_and_nan_the_last_nan():
  x = np.array([[1, 2, 2],
                [2, 0, np.nan],
                [np.nan, 1, np.nan]], np.float32)[None, :, :, None]
  pooled, indices = _max_pool(x, 2, 1)
  np.testing.assert_array_equal(indices[0, ..., 0], [[1, 5], [6, 8]])
  np.testing.assert_array_equal(pooled[0, ..., 0], [[2, np.nan], [np.nan, np.nan]])


@pytest.mark.parametrize("spatial_axis", [1, 2])
def test_conv_transpose_lecture_example_overlapping_outputs_sum(spatial_axis):
  a, b, kx, ky, kz = 2.0, 3.0, 5.0, 7.0, 11.0
  shape = [1, 1, 1, 1]
  shape[spatial_axis] = 2
  x = np.array([a, b], np.float32).reshape(shape)
  kernel_shape = [1, 1, 1, 1]
  kernel_shape[spatial_axis - 1] = 3
  kernel = np.array([kx, ky, kz], np.float32).reshape(kernel_shape)
  stride = (2, 1) if spatial_axis == 1 else (1, 2)
  got = ops.conv_transpose(x, kernel, stride)
  np.testing.assert_array_equal(np.asarray(got).reshape(-1),
                                [a * kx, a * ky, a * kz + b * kx, b * ky, b * kz])


@pytest.mark.parametrize("name", _CONV_TRANSPOSE)
def test_conv_transpose_is_the_adjoint_of_the_strided_convolution(name):
  case = golden.CONV_TRANSPOSE_CASES[name]
  # output_padding only picks the output size; the convolution's floor maps it back.
  stride, padding, _ = ((v, v) if isinstance(v, int) else v for v in _conv_args(case))
  rng = np.random.default_rng(2)
  y = rng.standard_normal(case["shape"]).astype(np.float32)
  kernel = rng.standard_normal(case["kernel"]).astype(np.float32)
  upsampled = _conv_transpose(y, kernel, *_conv_args(case))
  z = rng.standard_normal(upsampled.shape).astype(np.float32)
  # The convolution maps C_out back to C_in: kernel[i, j, c, o] is its [H, W, O, I].
  convolved = jax.lax.conv_general_dilated(
      z, kernel, stride, [(p, p) for p in padding], dimension_numbers=("NHWC", "HWOI", "NHWC"))
  chex.assert_equal_shape([convolved, y])
  np.testing.assert_allclose(jnp.vdot(convolved, y), jnp.vdot(z, upsampled), rtol=2e-5,
                             atol=1e-4)


def test_max_pool_gradient_reaches_only_the_argmax():
  rng = np.random.default_rng(3)
  x = rng.integers(0, 3, (2, 7, 8, 3)).astype(np.float32)  # ties: the first maximum only
  weights = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
  pooled, indices = _max_pool(x, 3, 2)
  chex.assert_equal_shape([pooled, weights])
  grad = jax.grad(lambda x: jnp.vdot(weights, _max_pool(x, 3, 2)[0]))(x)
  expected = np.zeros((2, 7 * 8, 3), np.float32)
  for n in range(2):
    for c in range(3):
      np.add.at(expected[n, :, c], np.asarray(indices)[n, ..., c].ravel(),
                weights[n, ..., c].ravel())
  np.testing.assert_allclose(grad, expected.reshape(x.shape), rtol=1e-6)


def _is_last_writer(indices):
  """Whether each pooled entry is the last, in row-major order, to write its index."""
  last = np.zeros(indices.shape, bool)
  for n in range(indices.shape[0]):
    for c in range(indices.shape[3]):
      flat = indices[n, ..., c].ravel()
      winner = {index: position for position, index in enumerate(flat)}
      last[n, ..., c] = np.isin(np.arange(flat.size), list(winner.values())).reshape(
          indices.shape[1:3])
  return last


@pytest.mark.parametrize("window, stride", [(2, 2), (2, 3), (3, 1)])
def test_max_unpool_gradient_is_the_weights_at_the_indices(window, stride):
  rng = np.random.default_rng(4)
  x = rng.integers(0, 3, (2, 9, 8, 2)).astype(np.float32)
  _, indices = _max_pool(x, window, stride)
  indices = np.asarray(indices)
  values = rng.standard_normal(indices.shape).astype(np.float32)
  weights = rng.standard_normal(x.shape).astype(np.float32)
  grad = jax.grad(lambda v: jnp.vdot(weights, _max_unpool(v, indices, (9, 8))))(values)
  flat_weights = weights.reshape(2, 9 * 8, 2)
  gathered = np.take_along_axis(flat_weights, indices.reshape(2, -1, 2), axis=1)
  gathered = gathered.reshape(indices.shape)
  last = _is_last_writer(indices)
  if window <= stride:
    assert last.all()
  else:
    assert not last.all()  # overlapping windows repeat indices: overwritten entries get 0
  np.testing.assert_allclose(grad, np.where(last, gathered, 0), rtol=1e-6)


def test_max_unpool_drops_out_of_range_indices():
  values = np.array([1, 2, 3, 4], np.float32).reshape(1, 2, 2, 1)
  indices = np.array([-1, 3, 4, 0], np.int32).reshape(1, 2, 2, 1)  # 2 x 2 output: 0..3
  got = _max_unpool(values, indices, (2, 2))
  np.testing.assert_array_equal(got[0, ..., 0], [[4, 0], [0, 2]])


def test_nearest_upsample_repeats_and_bed_of_nails_places_top_left():
  x = np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32)
  np.testing.assert_array_equal(ops.nearest_upsample(x, (2, 3)),
                                np.repeat(np.repeat(x, 2, axis=1), 3, axis=2))
  np.testing.assert_array_equal(ops.nearest_upsample(x, 2),
                                np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))
  nails = np.asarray(ops.bed_of_nails_unpool(x, (2, 3)))
  chex.assert_shape(nails, (2, 6, 12, 5))
  np.testing.assert_array_equal(nails[:, ::2, ::3], x)
  top_left = np.zeros((6, 12), bool)
  top_left[::2, ::3] = True
  np.testing.assert_array_equal(nails[:, ~top_left], 0)
  np.testing.assert_array_equal(ops.bed_of_nails_unpool(x, 1), x)


def test_every_op_under_jit_and_vmap():
  """vmap over a leading axis of NHWC batches equals calling each batch, all jitted."""
  rng = np.random.default_rng(6)
  x = rng.standard_normal((3, 2, 7, 6, 2)).astype(np.float32)
  kernel = rng.standard_normal((3, 2, 2, 4)).astype(np.float32)

  def all_ops(x):
    pooled, indices = ops.max_pool_with_indices(x, (3, 2), (2, 2))
    return (pooled, indices, ops.max_unpool(pooled, indices, (7, 6)),
            ops.nearest_upsample(x, 2), ops.bed_of_nails_unpool(x, (1, 2)),
            ops.conv_transpose(x, kernel, 2, 1, 1))

  batched = jax.jit(jax.vmap(all_ops))(x)
  for i in range(3):
    for got, expected in zip(batched, jax.jit(all_ops)(x[i])):
      np.testing.assert_allclose(got[i], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: ops.conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 1)), 2, 1, 2),
     "output_padding"),
    (lambda: ops.conv_transpose(jnp.zeros((1, 2, 2, 2)), jnp.zeros((2, 2, 2, 1)), 1, 2),
     "not positive"),
    (lambda: ops.conv_transpose(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 2, 1))), "C_in"),
    (lambda: ops.conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 1)), 0),
     "stride"),
    (lambda: ops.conv_transpose(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 1)), 1, -1),
     "padding"),
    (lambda: ops.max_pool_with_indices(jnp.zeros((1, 2, 5, 1)), 3), "smaller than"),
    (lambda: ops.max_pool_with_indices(jnp.zeros((1, 4, 4, 1)), (2, 2, 2)), "window"),
    (lambda: ops.max_unpool(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), jnp.int32), 0),
     "output_hw"),
    (lambda: ops.nearest_upsample(jnp.zeros((1, 2, 2, 1)), 1.5), "factor"),
])
def test_bad_arguments_raise(call, match):
  with pytest.raises(ValueError, match=match):
    call()
