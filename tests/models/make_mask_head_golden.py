"""Writes mask_head_golden.npz for test_mask_head.py: torchvision's Mask R-CNN targets and loss.

CI has no torch, so ``test_mask_head.py`` compares :func:`jaxvision.models.roi_heads.mask_targets`
and :func:`~jaxvision.models.roi_heads.mask_loss` with torchvision's
``project_masks_on_boxes`` and ``maskrcnn_loss`` (``torchvision.models.detection.roi_heads``)
twice: live where torchvision is importable, and against the outputs saved here.
``golden_inputs`` makes the inputs with numpy (reproducible without torch): two 64 x 64
images with three random-blob instance masks each, five positive RoIs per image with sides
in (28, 56] pixels (so torchvision's adaptive RoIAlign sampling ratio, ``ceil(side / 28)``,
is 2, the fixed ratio jaxvision's targets use) and random 28 x 28 logits of 4 classes.
torchvision's RoIAlign here is its pure-PyTorch fallback when its C ops cannot load.

After changing anything here, regenerate (CPU torch; torchvision from /opt/tv here) and
commit the file:

  PYTHONPATH=/opt/tv python tests/models/make_mask_head_golden.py
"""

import pathlib
import sys

import numpy as np

GOLDEN_PATH = pathlib.Path(__file__).with_name("mask_head_golden.npz")
IMAGES, OBJECTS, ROIS, SIZE, RESOLUTION, CLASSES = 2, 3, 5, 64, 28, 4


def golden_inputs(seed: int = 0) -> dict[str, np.ndarray]:
  """``masks uint8[N, G, H, W]``, ``labels int64[N, G]`` (1..C), ``rois float32[N, R, 4]``,
  ``matched int64[N, R]``, ``logits float32[N, R, M, M, C]``."""
  rng = np.random.default_rng(seed)
  ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
  masks = np.zeros((IMAGES, OBJECTS, SIZE, SIZE), np.uint8)
  for n in range(IMAGES):
    for g in range(OBJECTS):
      # A union of three random ellipses: a blob with curved, irregular edges.
      for _ in range(3):
        cy, cx = rng.uniform(12, 52, 2)
        ry, rx = rng.uniform(4, 16, 2)
        masks[n, g] |= (((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1).astype(np.uint8)
  corner = rng.uniform(0, 6, (IMAGES, ROIS, 2))
  side = rng.uniform(28.5, 56, (IMAGES, ROIS, 2))
  rois = np.concatenate([corner, np.minimum(corner + side, SIZE)], -1).astype(np.float32)
  return {"masks": masks, "labels": rng.integers(1, CLASSES + 1, (IMAGES, OBJECTS)),
          "rois": rois, "matched": rng.integers(0, OBJECTS, (IMAGES, ROIS)),
          "logits": rng.normal(0, 2, (IMAGES, ROIS, RESOLUTION, RESOLUTION, CLASSES)
                               ).astype(np.float32)}


def torchvision_reference(torchvision, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """torchvision's ``targets float32[N, R, M, M]`` (``project_masks_on_boxes``) and ``loss``
  (``maskrcnn_loss``; its logits have a background channel 0 before the C classes)."""
  import torch
  from torchvision.models.detection import roi_heads
  masks = [torch.from_numpy(m) for m in inputs["masks"]]
  rois = [torch.from_numpy(r) for r in inputs["rois"]]
  matched = [torch.from_numpy(i) for i in inputs["matched"]]
  labels = [torch.from_numpy(l) for l in inputs["labels"]]
  targets = np.stack([roi_heads.project_masks_on_boxes(m, r, i, RESOLUTION).numpy()
                      for m, r, i in zip(masks, rois, matched)])
  logits = torch.from_numpy(inputs["logits"]).reshape(-1, RESOLUTION, RESOLUTION, CLASSES)
  logits = torch.cat([torch.zeros_like(logits[..., :1]), logits], -1).permute(0, 3, 1, 2)
  loss = roi_heads.maskrcnn_loss(logits, rois, masks, labels, matched)
  return {"targets": targets, "loss": np.float32(loss.item())}


def main() -> None:
  sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
  from torch_reference import import_torchvision
  reference = torchvision_reference(import_torchvision(), golden_inputs())
  np.savez_compressed(GOLDEN_PATH, **reference)
  print(f"wrote {GOLDEN_PATH} ({GOLDEN_PATH.stat().st_size} bytes): loss {reference['loss']}")


if __name__ == "__main__":
  main()
