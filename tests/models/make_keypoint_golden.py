"""Writes keypoint_golden.npz for test_keypoint_head.py: torchvision's keypoint functions.

CI has no torch, so ``test_keypoint_head.py`` compares ``jaxvision.models.keypoint_head``
with torchvision's ``keypoints_to_heatmap``, ``keypointrcnn_loss``,
``heatmaps_to_keypoints`` and ``KeypointRCNNHeads`` + ``KeypointRCNNPredictor`` on the
inputs of :func:`golden_inputs` (numpy, reproducible without torch), whose torchvision
outputs are saved here. With torch and torchvision installed the test also recomputes them.

After changing anything here, regenerate (CPU torch; torchvision from /opt/tv here) and
commit the file:

  PYTHONPATH=/opt/tv python tests/models/make_keypoint_golden.py
"""

import pathlib
import sys

import numpy as np

GOLDEN_PATH = pathlib.Path(__file__).with_name("keypoint_golden.npz")
HEATMAP_SIZE = 56
HEAD_CHANNELS, HEAD_CONVS, NUM_KEYPOINTS, POOL_SIZE = 8, 8, 3, 14


def golden_inputs() -> dict[str, np.ndarray]:
  """The cases (float32): targets, loss, decoding and the head, from numpy's seed 0."""
  rng = np.random.default_rng(0)
  inputs = {}
  # Targets: RoIs with fractional corners; keypoints inside, outside, on every edge, with
  # every visibility.
  rois = np.array([[10.0, 20.0, 66.0, 76.0], [3.3, 4.7, 40.2, 19.9], [0.0, 0.0, 7.0, 120.5],
                   [50.5, 60.25, 51.5, 61.75]], np.float32)
  keypoints = []
  for roi in rois:
    x = rng.uniform(roi[0] - 5, roi[2] + 5, 12)
    y = rng.uniform(roi[1] - 5, roi[3] + 5, 12)
    x[:4] = [roi[0], roi[2], roi[0], roi[2]]  # the four corners exactly
    y[:4] = [roi[1], roi[1], roi[3], roi[3]]
    visibility = rng.integers(0, 3, 12)
    keypoints.append(np.stack([x, y, visibility], -1))
  inputs["target_rois"] = rois
  inputs["target_keypoints"] = np.asarray(keypoints, np.float32)
  # Loss: logits of the RoIs above with targets from their keypoints.
  inputs["loss_logits"] = rng.normal(size=(4, 12, HEATMAP_SIZE, HEATMAP_SIZE)).astype(np.float32)
  # Decoding: RoIs from under a pixel to the whole 128-pixel image, fractional and integer.
  inputs["decode_rois"] = np.array([[10.0, 20.0, 66.0, 76.0], [3.3, 4.7, 40.2, 19.9],
                                    [0.0, 0.0, 128.0, 128.0], [50.5, 60.25, 50.9, 61.75],
                                    [100.2, 7.0, 127.9, 100.1]], np.float32)
  inputs["decode_heatmaps"] = rng.normal(
      size=(5, NUM_KEYPOINTS, HEATMAP_SIZE, HEATMAP_SIZE)).astype(np.float32)
  # Head: torchvision-layout weights (Conv2d [O, I, 3, 3]; ConvTranspose2d [I, O, 4, 4]).
  for i in range(HEAD_CONVS):
    inputs[f"head_conv{i + 1}_weight"] = rng.normal(
        0, 0.2, (HEAD_CHANNELS, HEAD_CHANNELS, 3, 3)).astype(np.float32)
    inputs[f"head_conv{i + 1}_bias"] = rng.normal(0, 0.1, HEAD_CHANNELS).astype(np.float32)
  inputs["head_deconv_weight"] = rng.normal(
      0, 0.2, (HEAD_CHANNELS, NUM_KEYPOINTS, 4, 4)).astype(np.float32)
  inputs["head_deconv_bias"] = rng.normal(0, 0.1, NUM_KEYPOINTS).astype(np.float32)
  inputs["head_features"] = rng.normal(
      size=(2, HEAD_CHANNELS, POOL_SIZE, POOL_SIZE)).astype(np.float32)  # NCHW
  return inputs


def torchvision_outputs(torch, torchvision, inputs: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
  """torchvision's results on :func:`golden_inputs` (NCHW outputs as torchvision gives)."""
  from torchvision.models.detection import keypoint_rcnn, roi_heads
  t = {k: torch.from_numpy(v) for k, v in inputs.items()}
  out = {}
  heatmaps, valid = roi_heads.keypoints_to_heatmap(t["target_keypoints"], t["target_rois"],
                                                   HEATMAP_SIZE)
  out["target_index"], out["target_valid"] = heatmaps.numpy(), valid.numpy().astype(bool)
  out["loss"] = roi_heads.keypointrcnn_loss(
      t["loss_logits"], [t["target_rois"]], [t["target_keypoints"]],
      [torch.arange(len(t["target_rois"]))]).numpy()
  xy, scores = roi_heads.heatmaps_to_keypoints(t["decode_heatmaps"], t["decode_rois"])
  out["decode_xy"], out["decode_scores"] = xy[..., :2].numpy(), scores.numpy()
  heads = keypoint_rcnn.KeypointRCNNHeads(HEAD_CHANNELS, (HEAD_CHANNELS,) * HEAD_CONVS)
  predictor = keypoint_rcnn.KeypointRCNNPredictor(HEAD_CHANNELS, NUM_KEYPOINTS)
  state = {}
  for i in range(HEAD_CONVS):  # nn.Sequential of (Conv2d, ReLU) pairs
    state[f"{2 * i}.weight"] = t[f"head_conv{i + 1}_weight"]
    state[f"{2 * i}.bias"] = t[f"head_conv{i + 1}_bias"]
  heads.load_state_dict(state)
  predictor.load_state_dict({"kps_score_lowres.weight": t["head_deconv_weight"],
                             "kps_score_lowres.bias": t["head_deconv_bias"]})
  with torch.no_grad():
    out["head_heatmaps"] = predictor(heads(t["head_features"])).numpy()
  return out


def main() -> None:
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  from torch_reference import import_torchvision
  import torch
  torchvision = import_torchvision()
  outputs = torchvision_outputs(torch, torchvision, golden_inputs())
  np.savez_compressed(GOLDEN_PATH, **outputs)
  print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size} bytes): {sorted(outputs)}")


if __name__ == "__main__":
  main()
