"""Writes upsampling_golden.npz: inputs and PyTorch outputs of the upsampling parity cases.

CI has no torch, so ``test_upsampling.py`` compares ``jaxvision.ops.upsampling`` with the
outputs saved here; where torch is installed it also runs the same cases on fresh inputs.
The cases, their inputs and the PyTorch calls live here, shared by both. After changing a
case, regenerate (CPU torch) and commit the file:

  pip install torch==2.13.0
  python tests/ops/make_upsampling_golden.py
"""

import contextlib
import pathlib

import numpy as np

GOLDEN_PATH = pathlib.Path(__file__).with_name("upsampling_golden.npz")
GOLDEN_SEED = 0

# x: [N, H, W, C]; values: "normal", "ties" (integers in {0, 1, 2}: many equal maxima) or
# "nan" (normal with NaNs). Each case is also unpooled twice: its own pooled values, and
# distinct "decoder" values, which show which write wins where indices repeat.
MAX_POOL_CASES = {
    "window2_stride2": dict(shape=(2, 6, 8, 3), window=2, stride=2, values="normal"),
    "window3_stride2_overlap_ties": dict(shape=(2, 9, 11, 3), window=3, stride=2,
                                         values="ties"),
    "window3x2_stride1x3_ties": dict(shape=(1, 8, 13, 4), window=(3, 2), stride=(1, 3),
                                     values="ties"),
    "window2_stride3_gaps": dict(shape=(3, 10, 7, 2), window=2, stride=3, values="normal"),
    "window1x3_stride1_ties": dict(shape=(1, 5, 9, 2), window=(1, 3), stride=1,
                                   values="ties"),
    "window2_stride1_nan": dict(shape=(1, 6, 6, 2), window=2, stride=1, values="nan"),
}

# x: [N, H, W, C_in]; kernel [kh, kw, C_in, C_out].
CONV_TRANSPOSE_CASES = {
    "k3_s2_p1_op1": dict(shape=(2, 5, 7, 3), kernel=(3, 3, 3, 4), stride=2, padding=1,
                         output_padding=1),
    "k2_s3_op2_gaps": dict(shape=(1, 4, 5, 2), kernel=(2, 2, 2, 3), stride=3, padding=0,
                           output_padding=2),
    "k5_s2_p3_overlap": dict(shape=(2, 6, 5, 3), kernel=(5, 5, 3, 2), stride=2, padding=3,
                             output_padding=0),
    "k4x3_s2x1_p1x0_op1x0": dict(shape=(1, 5, 6, 3), kernel=(4, 3, 3, 5), stride=(2, 1),
                                 padding=(1, 0), output_padding=(1, 0)),
    "k2_s4_p3_op3_crop": dict(shape=(2, 3, 4, 2), kernel=(2, 2, 2, 3), stride=4, padding=3,
                              output_padding=3),
    "k3x1_s1_p2x0_shrink": dict(shape=(1, 6, 4, 2), kernel=(3, 1, 2, 2), stride=1,
                                padding=(2, 0), output_padding=0),
    "one_pixel_k3x4_s2x3_op1x2": dict(shape=(2, 1, 1, 4), kernel=(3, 4, 4, 3), stride=(2, 3),
                                      padding=0, output_padding=(1, 2)),
}


def max_pool_inputs(case, rng):
  """``(x, decoder_values)`` float32 for a ``MAX_POOL_CASES`` entry."""
  shape = case["shape"]
  if case["values"] == "ties":
    x = rng.integers(0, 3, shape).astype(np.float32)
  else:
    x = rng.standard_normal(shape).astype(np.float32)
  if case["values"] == "nan":
    x[rng.random(shape) < 0.3] = np.nan
  (window_h, window_w), (stride_h, stride_w) = (
      (v, v) if isinstance(v, int) else v for v in (case["window"], case["stride"]))
  batch, height, width, channels = shape
  pooled_shape = (batch, (height - window_h) // stride_h + 1, (width - window_w) // stride_w + 1,
                  channels)
  return x, rng.standard_normal(pooled_shape).astype(np.float32)


def conv_transpose_inputs(case, rng):
  """``(x, kernel)`` float32 for a ``CONV_TRANSPOSE_CASES`` entry."""
  return (rng.standard_normal(case["shape"]).astype(np.float32),
          rng.standard_normal(case["kernel"]).astype(np.float32))


@contextlib.contextmanager
def _one_torch_thread():
  """PyTorch's CPU unpooling writes repeated indices in thread order; one thread is serial."""
  import torch  # pylint: disable=g-import-not-at-top
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    yield
  finally:
    torch.set_num_threads(threads)


def _to_torch(x):
  import torch  # pylint: disable=g-import-not-at-top
  return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _to_numpy(x):
  return x.numpy().transpose(0, 2, 3, 1)


def torch_max_pool(x, window, stride):
  """``max_pool2d(return_indices=True)`` on NHWC numpy: ``(pooled, int32 indices)``."""
  import torch  # pylint: disable=g-import-not-at-top
  pooled, indices = torch.nn.functional.max_pool2d(_to_torch(x), window, stride,
                                                   return_indices=True)
  return _to_numpy(pooled), _to_numpy(indices).astype(np.int32)


def torch_max_unpool(values, indices, output_hw):
  """``max_unpool2d`` on NHWC numpy, single-threaded (see ``_one_torch_thread``)."""
  import torch  # pylint: disable=g-import-not-at-top
  with _one_torch_thread():
    # The raw op: the functional wrapper only adds a size check tied to kernel and stride.
    unpooled = torch.ops.aten.max_unpool2d(_to_torch(values),
                                           _to_torch(indices.astype(np.int64)),
                                           list(output_hw))
  return _to_numpy(unpooled)


def torch_conv_transpose(x, kernel, stride, padding, output_padding):
  """``conv_transpose2d`` on NHWC numpy with a ``[kh, kw, C_in, C_out]`` kernel."""
  import torch  # pylint: disable=g-import-not-at-top
  weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(2, 3, 0, 1)))
  return _to_numpy(torch.nn.functional.conv_transpose2d(
      _to_torch(x), weight, stride=stride, padding=padding, output_padding=output_padding))


def make_golden(seed):
  """Inputs and PyTorch outputs of every case, keyed ``"<op>/<case>/<array>"``."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for name, case in MAX_POOL_CASES.items():
    x, decoder_values = max_pool_inputs(case, rng)
    pooled, indices = torch_max_pool(x, case["window"], case["stride"])
    output_hw = x.shape[1:3]
    arrays.update({
        f"max_pool/{name}/x": x,
        f"max_pool/{name}/pooled": pooled,
        f"max_pool/{name}/indices": indices,
        f"max_pool/{name}/unpooled": torch_max_unpool(pooled, indices, output_hw),
        f"max_pool/{name}/decoder_values": decoder_values,
        f"max_pool/{name}/unpooled_decoder_values": torch_max_unpool(decoder_values, indices,
                                                                     output_hw),
    })
  for name, case in CONV_TRANSPOSE_CASES.items():
    x, kernel = conv_transpose_inputs(case, rng)
    arrays.update({
        f"conv_transpose/{name}/x": x,
        f"conv_transpose/{name}/kernel": kernel,
        f"conv_transpose/{name}/output": torch_conv_transpose(
            x, kernel, case["stride"], case["padding"], case["output_padding"]),
    })
  return arrays


if __name__ == "__main__":
  np.savez_compressed(GOLDEN_PATH, **make_golden(GOLDEN_SEED))
  print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size} bytes)")
