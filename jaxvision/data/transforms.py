"""Per-example numpy transforms: validation, resizing, flipping, padding to ``max_boxes``.

They work on the example dicts described in ``jaxvision.data.datasets`` (N objects,
unpadded) and touch only the keys present.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from PIL import Image

# One image and its N objects, unpadded (see ``jaxvision.data.datasets``).
Example = dict[str, np.ndarray]

# Features with one row per object; padded to ``max_boxes`` and masked by ``box_valid``.
OBJECT_FEATURES = ("boxes", "labels", "masks", "keypoints", "area", "is_crowd")


def validate_boxes(batch: Mapping[str, np.ndarray]) -> None:
  """Raises ``ValueError`` naming the first box that is non-finite or has x2 < x1 or y2 < y1.

  Args:
    batch: ``boxes`` float [B, M, 4] ``(x1, y1, x2, y2)``; optional ``box_valid`` bool
      [B, M] (padding rows are not checked) and ``image_id`` [B] (named in the message).
  """
  boxes = np.asarray(batch["boxes"])
  if boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f"boxes must have shape [batch, max_boxes, 4]; got {boxes.shape}.")
  valid = np.asarray(batch.get("box_valid", np.ones(boxes.shape[:2], dtype=bool)))
  x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
  with np.errstate(invalid="ignore"):
    bad = valid & ~(np.isfinite(boxes).all(axis=-1) & (x2 >= x1) & (y2 >= y1))
  if not bad.any():
    return
  row, box = (int(i) for i in np.argwhere(bad)[0])
  image_id = f" (image_id {int(batch['image_id'][row])})" if "image_id" in batch else ""
  raise ValueError(
      f"Box {box} of example {row}{image_id} is (x1, y1, x2, y2) = {boxes[row, box].tolist()}: "
      "boxes must be finite absolute pixels with x1 <= x2 and y1 <= y2. Convert the "
      "dataset's format (COCO xywh, TFDS normalized yxyx) at the data edge.")


def resize_and_pad(example: Example, image_size: int) -> Example:
  """Scales the longer image side to ``image_size`` and zero-pads bottom/right to a square.

  Boxes, keypoints and areas are scaled with the image; masks and semantic maps are resized
  with nearest neighbours. Examples already ``image_size`` x ``image_size`` are returned as is.
  """
  height, width = example["image"].shape[:2]
  if height == width == image_size:
    return example
  scale = image_size / max(height, width)
  new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
  x_scale, y_scale = new_width / width, new_height / height

  def resized(array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    """Resizes the two leading axes ``[H, W, ...]`` and zero-pads them to the square."""
    out = np.zeros((image_size, image_size) + array.shape[2:], dtype=array.dtype)
    out[:new_height, :new_width] = np.asarray(
        Image.fromarray(array).resize((new_width, new_height), resample))
    return out

  example = dict(example)
  example["image"] = resized(example["image"], Image.BILINEAR)
  if "boxes" in example:
    example["boxes"] = example["boxes"] * np.array([x_scale, y_scale, x_scale, y_scale],
                                                   dtype=np.float32)
  if "area" in example:
    example["area"] = example["area"] * np.float32(x_scale * y_scale)
  if "keypoints" in example:
    labeled = example["keypoints"][..., 2:] > 0
    example["keypoints"] = example["keypoints"] * np.where(
        labeled, np.array([x_scale, y_scale, 1], dtype=np.float32), 1).astype(np.float32)
  if "masks" in example:
    example["masks"] = np.stack([resized(mask, Image.NEAREST) for mask in example["masks"]]
                                ).reshape(-1, image_size, image_size)
  if "semantic" in example:
    example["semantic"] = resized(example["semantic"], Image.NEAREST)
  return example


def flip_horizontal(example: Example, keypoint_permutation: np.ndarray | None = None
                    ) -> Example:
  """Mirrors an example left-right: ``x -> W - x`` in continuous pixel coordinates.

  Boxes become ``(W - x2, y1, W - x1, y2)``; labeled keypoints move to ``W - x`` and are
  re-ordered by ``keypoint_permutation`` (new keypoint k is old keypoint
  ``keypoint_permutation[k]``), so that e.g. "left" stays left.
  """
  width = example["image"].shape[1]
  example = dict(example)
  example["image"] = example["image"][:, ::-1]
  if "boxes" in example:
    x1, y1, x2, y2 = np.moveaxis(example["boxes"], -1, 0)
    example["boxes"] = np.stack([width - x2, y1, width - x1, y2], axis=-1)
  if "keypoints" in example:
    keypoints = example["keypoints"].copy()
    labeled = keypoints[..., 2] > 0
    keypoints[..., 0] = np.where(labeled, width - keypoints[..., 0], keypoints[..., 0])
    if keypoint_permutation is not None:
      keypoints = keypoints[:, keypoint_permutation]
    example["keypoints"] = keypoints
  if "masks" in example:
    example["masks"] = example["masks"][..., ::-1]
  if "semantic" in example:
    example["semantic"] = example["semantic"][:, ::-1]
  return example


def pad_objects(example: Example, max_boxes: int) -> Example:
  """Zero-pads the per-object features to ``max_boxes`` rows and adds ``box_valid`` [max_boxes].

  Raises:
    ValueError: the example has more than ``max_boxes`` objects.
  """
  num_objects = len(example["labels"])
  if num_objects > max_boxes:
    raise ValueError(
        f"Example image_id {int(example['image_id'])} has {num_objects} objects but "
        f"data.max_boxes={max_boxes}; raise data.max_boxes to at least {num_objects}.")
  example = dict(example)
  for name in OBJECT_FEATURES:
    if name in example:
      values = example[name]
      padded = np.zeros((max_boxes,) + values.shape[1:], dtype=values.dtype)
      padded[:num_objects] = values
      example[name] = padded
  example["box_valid"] = np.arange(max_boxes) < num_objects
  return example
