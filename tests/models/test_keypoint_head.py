"""Keypoint R-CNN's keypoint head: targets, loss, decoding and the head, against torchvision.

The torchvision numbers come from ``make_keypoint_golden.py`` (saved, so CI without torch
checks them) and, where torch and torchvision are installed, are recomputed.
"""

import sys
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.detection import FasterRCNN
from jaxvision.models.keypoint_head import (KeypointHead, heatmaps_to_keypoints,
                                            keypoint_loss, keypoint_targets)

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
import make_keypoint_golden as golden  # noqa: E402
from torch_reference import import_torchvision  # noqa: E402

S = golden.HEATMAP_SIZE


@pytest.fixture(scope="module")
def inputs():
  return golden.golden_inputs()


@pytest.fixture(scope="module")
def saved():
  with np.load(golden.GOLDEN_PATH) as arrays:
    return dict(arrays)


def _ours(inputs) -> dict[str, np.ndarray]:
  """Our results on the golden inputs, in torchvision's layouts."""
  out = {}
  index, valid = keypoint_targets(jnp.asarray(inputs["target_rois"]),
                                  jnp.asarray(inputs["target_keypoints"]), S)
  out["target_index"], out["target_valid"] = np.asarray(index), np.asarray(valid)
  rois = inputs["target_rois"]
  out["loss"] = np.asarray(keypoint_loss(
      jnp.asarray(inputs["loss_logits"])[None], index[None], valid[None],
      jnp.ones((1, len(rois)), bool)))
  decoded = np.asarray(heatmaps_to_keypoints(jnp.asarray(inputs["decode_heatmaps"]),
                                             jnp.asarray(inputs["decode_rois"]), 128,
                                             rois_per_step=2))
  out["decode_xy"], out["decode_scores"] = decoded[..., :2], decoded[..., 2]
  params = {f"conv{i + 1}": {"kernel": inputs[f"head_conv{i + 1}_weight"].transpose(2, 3, 1, 0),
                             "bias": inputs[f"head_conv{i + 1}_bias"]}
            for i in range(golden.HEAD_CONVS)}
  params["heatmap_lowres"] = {"kernel": inputs["head_deconv_weight"].transpose(2, 3, 0, 1),
                              "bias": inputs["head_deconv_bias"]}
  head = KeypointHead(golden.NUM_KEYPOINTS, golden.HEAD_CHANNELS, golden.HEAD_CONVS)
  features = inputs["head_features"].transpose(0, 2, 3, 1)[None]  # [1, R, P, P, C]
  out["head_heatmaps"] = np.asarray(head.apply({"params": params}, features))[0]
  return out


def _check(ours, reference):
  np.testing.assert_array_equal(ours["target_valid"], reference["target_valid"])
  # torchvision's index is 0 where not valid, like ours.
  np.testing.assert_array_equal(ours["target_index"], reference["target_index"])
  np.testing.assert_allclose(ours["loss"], reference["loss"], rtol=1e-5)
  np.testing.assert_allclose(ours["decode_xy"], reference["decode_xy"], rtol=0, atol=1e-4)
  np.testing.assert_allclose(ours["decode_scores"], reference["decode_scores"], atol=1e-4)
  np.testing.assert_allclose(ours["head_heatmaps"], reference["head_heatmaps"], rtol=1e-4,
                             atol=1e-4)


def test_golden_file_holds_every_case(saved):
  assert set(saved) == {"target_index", "target_valid", "loss", "decode_xy", "decode_scores",
                        "head_heatmaps"}, "stale golden file: run make_keypoint_golden.py"


def test_matches_torchvision_golden(inputs, saved):
  _check(_ours(inputs), saved)


def test_matches_torchvision_live(inputs):
  torchvision = import_torchvision()
  import torch
  _check(_ours(inputs), golden.torchvision_outputs(torch, torchvision, inputs))


def test_targets_land_on_the_right_cells():
  """Hand-made: a 56-pixel RoI at (10, 20): one pixel per cell."""
  roi = jnp.array([[10.0, 20.0, 66.0, 76.0]])
  keypoints = jnp.array([[[10.0, 20.0, 2],     # top-left corner: cell (0, 0)
                          [12.5, 23.9, 1],     # occluded but labeled: counts, cell (3, 2)
                          [66.0, 76.0, 2],     # bottom-right corner: the last cell
                          [66.0, 30.0, 2],     # on the right edge: last column, row 10
                          [40.0, 76.0, 2],     # on the bottom edge: last row, column 30
                          [66.01, 30.0, 2],    # just right of the RoI: outside
                          [9.99, 30.0, 2],     # just left: outside
                          [30.0, 19.0, 2],     # above: outside
                          [30.0, 40.0, 0]]])   # inside but unlabeled (v = 0)
  index, valid = keypoint_targets(roi, keypoints, S)
  np.testing.assert_array_equal(valid[0], [True] * 5 + [False] * 4)
  expected = [0, 3 * S + 2, S * S - 1, 10 * S + S - 1, (S - 1) * S + 30]
  np.testing.assert_array_equal(index[0, :5], expected)
  np.testing.assert_array_equal(index[0, 5:], 0)
  # A 28-pixel RoI: two pixels per cell.
  index, valid = keypoint_targets(jnp.array([[0.0, 0.0, 28.0, 28.0]]),
                                  jnp.array([[[3.0, 5.0, 2]]]), S)
  assert bool(valid[0, 0]) and int(index[0, 0]) == 10 * S + 6


def test_loss_weights_only_labeled_keypoints_of_foreground_rois():
  rng = np.random.default_rng(1)
  heatmaps = jnp.asarray(rng.normal(size=(1, 3, 2, S, S)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, S * S, (1, 3, 2)), jnp.int32)
  valid = jnp.array([[[True, False], [True, True], [True, True]]])
  foreground = jnp.array([[True, True, False]])
  loss = keypoint_loss(heatmaps, targets, valid, foreground)
  # By hand: the mean of the three counted keypoints' cross-entropies.
  logits = np.asarray(heatmaps).reshape(1, 3, 2, -1)
  log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  counted = [(0, 0), (1, 0), (1, 1)]
  expected = -np.mean([log_softmax[0, r, k, int(targets[0, r, k])] for r, k in counted])
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # The negative RoI's heatmaps get no gradient; without any foreground the loss is 0.
  grad = jax.grad(lambda h: keypoint_loss(h, targets, valid, foreground))(heatmaps)
  assert np.all(np.asarray(grad[0, 2]) == 0) and np.all(np.asarray(grad[0, 0, 1]) == 0)
  assert np.any(np.asarray(grad[0, 1]) != 0)
  assert float(keypoint_loss(heatmaps, targets, valid, jnp.zeros((1, 3), bool))) == 0.0


def test_decoding_finds_a_peak_at_its_pixel():
  """A single peak in cell (row 20, column 35) of a 56-pixel RoI at (10, 20): pixel centre."""
  heatmaps = jnp.full((1, 1, S, S), -5.0).at[0, 0, 20, 35].set(5.0)
  decoded = heatmaps_to_keypoints(heatmaps, jnp.array([[10.0, 20.0, 66.0, 76.0]]), 64)
  np.testing.assert_allclose(decoded[0, 0, :2], [10 + 35.5, 20 + 20.5], atol=1e-5)
  assert float(decoded[0, 0, 2]) >= 5.0 - 1e-5  # bicubic overshoots, never undershoots here
  # Eager, the grid can come from the RoIs themselves (torchvision's signature); not in jit.
  rois = jnp.array([[10.0, 20.0, 66.0, 76.0]])
  np.testing.assert_array_equal(heatmaps_to_keypoints(heatmaps, rois), decoded)
  with pytest.raises(ValueError, match="max_roi_size"):
    jax.jit(heatmaps_to_keypoints)(heatmaps, rois)


def _gaussian_heatmaps(rois: np.ndarray, points: np.ndarray, sigma_cells: float) -> jnp.ndarray:
  """``[R, K, S, S]`` log-Gaussian logits peaked at ``points [R, K, 2]`` (image pixels)."""
  cells = np.arange(S) + 0.5
  scale = (rois[:, 2:] - rois[:, :2]) / S  # pixels per heatmap cell, (x, y)
  centre = (points - rois[:, None, :2]) / scale[:, None, :]  # in cells
  dx = cells[None, None, None, :] - centre[..., 0, None, None]
  dy = cells[None, None, :, None] - centre[..., 1, None, None]
  return jnp.asarray(-(dx ** 2 + dy ** 2) / (2 * sigma_cells ** 2), jnp.float32)


def _random_rois_and_points(rng, count: int, keypoints: int):
  corner = rng.uniform(0, 60, (count, 2))
  rois = np.concatenate([corner, corner + rng.uniform(6, 60, (count, 2))], axis=1)
  points = rois[:, None, :2] + rng.uniform(0.1, 0.9, (count, keypoints, 2)) * (
      rois[:, None, 2:] - rois[:, None, :2])
  return rois.astype(np.float32), points


def test_subpixel_decoding_equals_the_whole_fine_grid():
  """``upsample=u`` searches only 3 x 3 pixels around the whole-pixel maximum; on unimodal
  heatmaps that is the maximum of the full ``u``-times-finer bicubic resize, found here by
  decoding RoIs scaled up ``u`` times with whole-pixel (torchvision) decoding."""
  rng = np.random.default_rng(3)
  rois, points = _random_rois_and_points(rng, 12, 3)
  heatmaps = _gaussian_heatmaps(rois, points, sigma_cells=2.5)
  for upsample in (2, 4):
    # A RoI scaled by u has u ceil(w) pixels only when w is whole: round the RoIs first.
    whole = np.round(rois)
    fine = np.asarray(heatmaps_to_keypoints(heatmaps, jnp.asarray(whole), 128,
                                            upsample=upsample))
    brute = np.asarray(heatmaps_to_keypoints(heatmaps, jnp.asarray(whole * upsample),
                                             128 * upsample))
    np.testing.assert_allclose(fine[..., :2], brute[..., :2] / upsample, atol=1e-4)
    np.testing.assert_allclose(fine[..., 2], brute[..., 2], rtol=1e-5, atol=1e-5)


def test_subpixel_decoding_is_closer_to_the_true_peak():
  rng = np.random.default_rng(4)
  rois, points = _random_rois_and_points(rng, 64, 2)
  heatmaps = _gaussian_heatmaps(rois, points, sigma_cells=3.0)
  errors = {}
  for upsample in (1, 4):
    decoded = np.asarray(jax.jit(heatmaps_to_keypoints, static_argnums=(2, 3, 4))(
        heatmaps, jnp.asarray(rois), 128, 16, upsample))
    errors[upsample] = np.abs(decoded[..., :2] - points)
  # Whole pixels: a quarter pixel off on average (0.236 here); quarter pixels: a third of it
  # (0.079; not an eighth: bicubic interpolation of the 56-cell map bends the peak).
  assert 0.15 < errors[1].mean() < 0.35
  assert errors[4].mean() < 0.4 * errors[1].mean()
  assert errors[4].max() < errors[1].max()
  with pytest.raises(ValueError, match="upsample"):
    heatmaps_to_keypoints(heatmaps, jnp.asarray(rois), 128, upsample=0)


def test_head_shapes_dtype_and_model_validation():
  head = KeypointHead(4, channels=8, num_convs=2, dtype=jnp.bfloat16)
  features = jnp.ones((2, 3, 14, 14, 5), jnp.bfloat16)
  variables = head.init(jax.random.key(0), features)
  heatmaps = head.apply(variables, features)
  assert heatmaps.shape == (2, 3, 4, 56, 56) and heatmaps.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  model = FasterRCNN(num_classes=2, backbone="resnet_tiny", keypoint_head=True,
                     num_keypoints=4, keypoint_pool_size=7, keypoint_heatmap_size=56)
  with pytest.raises(ValueError, match="keypoint_heatmap_size=56 must be 4"):
    model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)
