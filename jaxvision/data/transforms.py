"""Per-example numpy transforms: validation, resizing, flipping, padding, augmentation.

They work on the example dicts described in ``jaxvision.data.datasets`` (N objects,
unpadded), touch only the keys present and return a new dict. Images are uint8
``[H, W, C]`` with C = 1 or 3.

The random transforms take a ``numpy.random.Generator`` and are pure functions of their
inputs and its state: the same seed gives the same output. Each docstring says which
numbers it draws, in which order, because changing that order changes every augmented
example of an existing pipeline. They run in grain worker threads, so numpy/Pillow only.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageFilter

# One image and its N objects, unpadded (see ``jaxvision.data.datasets``).
Example = dict[str, np.ndarray]

# Features with one row per object; padded to ``max_boxes`` and masked by ``box_valid``.
OBJECT_FEATURES = ("boxes", "labels", "masks", "keypoints", "area", "is_crowd")
# Box arrays [..., 4] that move with the image: the objects' and, when a task computed them
# on the unresized image (``jaxvision.data.proposals``), region ``proposals`` (unpadded).
BOX_FEATURES = ("boxes", "proposals")

# Pillow's fixed-point ITU-R 601-2 luma weights (sum 2**16): ``floor(rgb @ w + 0.5)`` is
# exactly ``Image.convert("L")``, and the unrounded value is the grey level colour jitter
# blends with.
_LUMA_WEIGHTS = np.array([19595, 38470, 7471]) / 2**16


def _pillow(array: np.ndarray, operation: Callable[[Image.Image], Image.Image]
            ) -> np.ndarray:
  """Applies a Pillow operation to ``[H, W]`` or ``[H, W, C]`` (C = 1 or 3) pixels.

  Pillow has no mode for a single band with a channel axis, so ``[H, W, 1]`` goes through
  as ``[H, W]``. The result is a writable copy (Pillow's arrays are read-only).
  """
  if array.ndim == 3 and array.shape[2] == 1:
    return _pillow(array[..., 0], operation)[..., None]
  return np.array(operation(Image.fromarray(array)))


def _resize(array: np.ndarray, height: int, width: int, resample: Image.Resampling
            ) -> np.ndarray:
  """Resizes the two leading axes of ``[H, W]`` or ``[H, W, C]`` to ``[height, width]``."""
  return _pillow(array, lambda image: image.resize((width, height), resample))


def _luma(pixels: np.ndarray) -> np.ndarray:
  """float64 ``[H, W]`` grey level of ``[H, W, C]`` pixels: the channel itself for C = 1,
  else the luma of the first three (RGB; alpha ignored)."""
  if pixels.shape[-1] == 1:
    return pixels[..., 0].astype(np.float64)
  return pixels[..., :3] @ _LUMA_WEIGHTS


def _check_image(image: np.ndarray, caller: str) -> None:
  """Raises ``ValueError`` unless ``image`` is uint8 ``[H, W, C]`` with C = 1 or 3."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
    raise ValueError(
        f"{caller} needs a uint8 image [H, W, C] with C = 1 or 3; got shape {image.shape} "
        f"dtype {image.dtype}. Convert it with to_channels(image, 3).")


def _coin(rng: np.random.Generator, probability: float, name: str) -> bool:
  """Draws one number: True with ``probability``."""
  if not 0 <= probability <= 1:
    raise ValueError(f"{name} must be a probability in [0, 1]; got {probability}.")
  return bool(rng.random() < probability)


def _check_range(name: str, bounds: tuple[float, float]) -> None:
  """Raises ``ValueError`` unless ``bounds`` is ``(low, high)`` with 0 < low <= high."""
  if not 0 < bounds[0] <= bounds[1]:
    raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high; got {bounds}.")


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


def letterbox_size(height: int, width: int, image_size: int) -> tuple[int, int]:
  """``(new_height, new_width)`` of a ``height`` x ``width`` image in :func:`resize_and_pad`:
  its pixels' scale is ``new_width / width`` along x and ``new_height / height`` along y
  (what maps the model's boxes back to the original image)."""
  scale = image_size / max(height, width)
  return max(1, round(height * scale)), max(1, round(width * scale))


def resize_and_pad(example: Example, image_size: int, ignore_label: int = 255) -> Example:
  """Scales the longer image side to ``image_size`` and pads bottom/right to a square.

  Boxes, keypoints and areas are scaled with the image; masks and semantic maps are resized
  with nearest neighbours. Images and masks are padded with 0; the ``semantic`` map is
  padded with ``ignore_label``, because padding is not background (class 0) and must not
  be scored as such. Examples already ``image_size`` x ``image_size`` are returned as is.
  """
  height, width = example["image"].shape[:2]
  if height == width == image_size:
    return example
  new_height, new_width = letterbox_size(height, width, image_size)
  x_scale, y_scale = new_width / width, new_height / height

  def padded(array: np.ndarray, resample: Image.Resampling, fill: int = 0) -> np.ndarray:
    """Resizes the two leading axes ``[H, W, ...]`` and pads them to the square with ``fill``."""
    out = np.full((image_size, image_size) + array.shape[2:], fill, dtype=array.dtype)
    out[:new_height, :new_width] = _resize(array, new_height, new_width, resample)
    return out

  example = dict(example)
  example["image"] = padded(example["image"], Image.BILINEAR)
  for name in BOX_FEATURES:  # object boxes, and region proposals made before resizing
    if name in example:
      example[name] = example[name] * np.array([x_scale, y_scale, x_scale, y_scale],
                                               dtype=np.float32)
  if "area" in example:
    example["area"] = example["area"] * np.float32(x_scale * y_scale)
  if "keypoints" in example:
    labeled = example["keypoints"][..., 2:] > 0
    example["keypoints"] = example["keypoints"] * np.where(
        labeled, np.array([x_scale, y_scale, 1], dtype=np.float32), 1).astype(np.float32)
  if "masks" in example:
    example["masks"] = np.array([padded(mask, Image.NEAREST) for mask in example["masks"]],
                                dtype=example["masks"].dtype).reshape(-1, image_size, image_size)
  if "semantic" in example:
    example["semantic"] = padded(example["semantic"], Image.NEAREST, ignore_label)
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
  for name in BOX_FEATURES:
    if name in example:
      x1, y1, x2, y2 = np.moveaxis(example[name], -1, 0)
      example[name] = np.stack([width - x2, y1, width - x1, y2], axis=-1)
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


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
  """Converts an image to ``channels`` (1 or 3) channels.

  Grey becomes RGB by repeating it; RGB becomes grey with Pillow's ``convert("L")`` luma
  (ITU-R 601-2, bit-exact); the alpha channel of RGBA is dropped.

  Args:
    image: uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] (RGBA).
    channels: 1 or 3.

  Returns:
    uint8 [H, W, channels]; ``image`` itself when it already has that layout.
  """
  if channels not in (1, 3):
    raise ValueError(f"to_channels converts to 1 (grey) or 3 (RGB) channels; got {channels}.")
  if image.ndim == 2:
    image = image[..., None]
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3, 4):
    raise ValueError(
        f"to_channels needs a uint8 image [H, W] or [H, W, C] with C in (1, 3, 4); got shape "
        f"{image.shape} dtype {image.dtype}. Decode images to uint8 grey, RGB or RGBA first.")
  if image.shape[2] == 4:
    image = image[..., :3]
  if image.shape[2] == channels:
    return image
  if channels == 3:
    return np.repeat(image, 3, axis=2)
  return np.floor(_luma(image) + 0.5).astype(np.uint8)[..., None]


def random_flip(example: Example, rng: np.random.Generator, probability: float = 0.5,
                keypoint_permutation: np.ndarray | None = None) -> Example:
  """:func:`flip_horizontal` with ``probability``; draws exactly one number, ``rng.random()``."""
  if _coin(rng, probability, "random_flip probability"):
    return flip_horizontal(example, keypoint_permutation)
  return dict(example)


def sample_crop_box(rng: np.random.Generator, height: int, width: int,
                    scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10
                    ) -> tuple[int, int, int, int]:
  """A random crop box of a ``height`` x ``width`` image: torchvision's RandomResizedCrop.

  Each attempt draws an area fraction uniform in ``scale`` and an aspect ratio (w / h)
  log-uniform in ``ratio`` (two numbers), and succeeds if the rounded box fits in the image;
  then the position is drawn (``top``, then ``left``). After ``attempts`` failures it falls
  back to the centred crop of the whole image, narrowed to the nearest ratio in ``ratio``.

  Args:
    rng: Draws the box (nothing when ``attempts`` is 0).
    height, width: The image's size in pixels.
    scale: Range (low, high), 0 < low <= high, of the crop's area as a fraction of the image's.
    ratio: Range (low, high), 0 < low <= high, of the crop's aspect ratio w / h.
    attempts: Tries before the fallback.

  Returns:
    ``(top, left, h, w)`` in pixels, inside the image.
  """
  _check_range("scale", scale)
  _check_range("ratio", ratio)
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(attempts):
    target_area = area * rng.uniform(*scale)
    aspect_ratio = math.exp(rng.uniform(*log_ratio))
    w = round(math.sqrt(target_area * aspect_ratio))
    h = round(math.sqrt(target_area / aspect_ratio))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  h, w = height, width
  if width / height < ratio[0]:
    h = round(width / ratio[0])
  elif width / height > ratio[1]:
    w = round(height * ratio[1])
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(example: Example, rng: np.random.Generator, output_size: int,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10
                        ) -> Example:
  """Crops a random box (:func:`sample_crop_box`, its draws only) and resizes it to a square.

  The image is resized bilinearly, ``masks`` and ``semantic`` with nearest neighbours.
  Boxes are moved, scaled and clipped to the crop; objects whose clipped box has zero
  width or height are dropped from every per-object feature (``OBJECT_FEATURES``). ``area``
  is scaled by the two scale factors (not re-measured after clipping). Labeled keypoints are
  moved and scaled; those outside the crop, and unlabeled ones, become (0, 0, 0).

  Args:
    example: An example (see ``jaxvision.data.datasets``) with an image [H, W, C].
    rng: Draws the crop box.
    output_size: Height and width of the output.
    scale, ratio, attempts: As in :func:`sample_crop_box`.

  Returns:
    The cropped example: image [output_size, output_size, C], masks [N', output_size,
    output_size], semantic [output_size, output_size], N' <= N objects.
  """
  if output_size < 1:
    raise ValueError(f"random_resized_crop output_size must be >= 1; got {output_size}.")
  height, width = example["image"].shape[:2]
  top, left, h, w = sample_crop_box(rng, height, width, scale, ratio, attempts)
  x_scale, y_scale = output_size / w, output_size / h

  def cropped(array: np.ndarray, resample: Image.Resampling) -> np.ndarray:
    return _resize(array[top:top + h, left:left + w], output_size, output_size, resample)

  example = dict(example)
  example["image"] = cropped(example["image"], Image.BILINEAR)
  if "semantic" in example:
    example["semantic"] = cropped(example["semantic"], Image.NEAREST)
  if "masks" in example:
    example["masks"] = np.array([cropped(mask, Image.NEAREST) for mask in example["masks"]],
                                dtype=example["masks"].dtype
                                ).reshape(-1, output_size, output_size)
  if "area" in example:
    example["area"] = example["area"] * np.float32(x_scale * y_scale)
  if "keypoints" in example:
    keypoints = example["keypoints"]
    xy = (keypoints[..., :2] - np.array([left, top], np.float32)) * np.array(
        [x_scale, y_scale], np.float32)
    inside = (keypoints[..., 2] > 0) & ((xy >= 0) & (xy < output_size)).all(axis=-1)
    example["keypoints"] = np.where(inside[..., None],
                                    np.concatenate([xy, keypoints[..., 2:]], axis=-1),
                                    0).astype(np.float32)
  if "boxes" in example:
    boxes = np.clip((example["boxes"] - np.array([left, top, left, top], np.float32))
                    * np.array([x_scale, y_scale, x_scale, y_scale], np.float32),
                    0, output_size).astype(np.float32)
    example["boxes"] = boxes
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    for name in OBJECT_FEATURES:
      if name in example:
        example[name] = example[name][keep]
  return example


def _rgb_to_hsv(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float [H, W, 3] RGB -> hue in [0, 1), saturation in [0, 1], value (RGB's scale).

  torchvision's ``_rgb2hsv``; grey pixels get hue 0 and saturation 0.
  """
  r, g, b = np.moveaxis(pixels, -1, 0)
  value, lowest = pixels.max(axis=-1), pixels.min(axis=-1)
  chroma = value - lowest
  grey = chroma == 0
  saturation = chroma / np.where(grey, 1, value)
  divisor = np.where(grey, 1, chroma)
  rc, gc, bc = (value - r) / divisor, (value - g) / divisor, (value - b) / divisor
  hue = np.where(value == r, bc - gc, np.where(value == g, 2 + rc - bc, 4 + gc - rc))
  return np.fmod(hue / 6 + 1, 1), saturation, value


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
  """Inverse of :func:`_rgb_to_hsv`: float [H, W, 3] RGB on the scale of ``value``."""
  sector = np.floor(hue * 6)
  fraction = hue * 6 - sector
  sector = sector.astype(np.int64) % 6
  p = value * (1 - saturation)
  q = value * (1 - saturation * fraction)
  t = value * (1 - saturation * (1 - fraction))
  return np.stack([np.choose(sector, [value, q, p, p, t, value]),
                   np.choose(sector, [t, value, value, q, p, p]),
                   np.choose(sector, [p, p, t, value, value, q])], axis=-1)


def _blend(pixels: np.ndarray, other: np.ndarray | float, factor: float) -> np.ndarray:
  """torchvision's ``_blend`` on the 0-255 float scale: ``factor`` of ``pixels``, clipped."""
  return np.clip(factor * pixels + (1 - factor) * other, 0, 255)


def _shift_hue(pixels: np.ndarray, shift: float) -> np.ndarray:
  hue, saturation, value = _rgb_to_hsv(pixels)
  return _hsv_to_rgb((hue + shift) % 1, saturation, value)


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.,
                 contrast: float = 0., saturation: float = 0., hue: float = 0.) -> np.ndarray:
  """torchvision's ``ColorJitter``: random brightness, contrast, saturation, hue, random order.

  Draws the order of the four adjustments (``rng.permutation(4)``: 0 brightness, 1
  contrast, 2 saturation, 3 hue), then one number per non-zero strength, in that order:
  the brightness, contrast and saturation factors uniform in ``[max(0, 1 - s), 1 + s]``
  and the hue shift uniform in ``[-hue, hue]``. As torchvision's ``adjust_*``:
  brightness blends with black, contrast with the mean grey level, saturation with the
  grey image, and hue shifts H in HSV (as a fraction of the colour circle). The adjustments
  are computed in float and clipped to [0, 255] after each one (torchvision's float-image
  behaviour), then rounded to uint8 once. Grey (1-channel) images draw the same numbers
  but only get brightness and contrast.

  Args:
    image: uint8 [H, W, C], C = 1 or 3.
    rng: Draws the order and the factors.
    brightness, contrast, saturation: Strengths s >= 0; 0 leaves the property untouched.
    hue: Strength in [0, 0.5]; 0 leaves the hue untouched.

  Returns:
    uint8 [H, W, C]; equal to ``image`` when every strength is 0.
  """
  _check_image(image, "color_jitter")
  strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation,
               "hue": hue}
  if min(strengths.values()) < 0 or hue > 0.5:
    raise ValueError(f"color_jitter strengths must be >= 0 and hue <= 0.5; got {strengths}.")
  order = rng.permutation(4)
  factors = [rng.uniform(max(0., 1 - s), 1 + s) if s else None
             for s in (brightness, contrast, saturation)]
  factors.append(rng.uniform(-hue, hue) if hue else None)
  adjustments = (
      lambda pixels, factor: _blend(pixels, 0., factor),
      lambda pixels, factor: _blend(pixels, _luma(pixels).mean(), factor),
      lambda pixels, factor: _blend(pixels, _luma(pixels)[..., None], factor),
      _shift_hue,
  )
  # Saturation and hue are not defined for grey images.
  applicable = 4 if image.shape[2] == 3 else 2
  pixels = image.astype(np.float64)
  for index in order:
    if factors[index] is not None and index < applicable:
      pixels = adjustments[index](pixels, factors[index])
  return np.rint(np.clip(pixels, 0, 255)).astype(np.uint8)


def random_grayscale(image: np.ndarray, rng: np.random.Generator, probability: float
                     ) -> np.ndarray:
  """With ``probability`` (one draw), the luma of ``image`` repeated to its channel count.

  Args:
    image: uint8 [H, W, C], C = 1 or 3.

  Returns:
    uint8 [H, W, C].
  """
  _check_image(image, "random_grayscale")
  if _coin(rng, probability, "random_grayscale probability"):
    return to_channels(to_channels(image, 1), image.shape[2])
  return image


def gaussian_blur(image: np.ndarray, rng: np.random.Generator,
                  sigma: tuple[float, float] = (0.1, 2.0), probability: float = 1.0
                  ) -> np.ndarray:
  """With ``probability``, Pillow's ``GaussianBlur`` per channel, sigma uniform in ``sigma``.

  Draws the coin (``rng.random()``), then, only when blurring, the sigma.

  Args:
    image: uint8 [H, W, C], C = 1 or 3.
    sigma: Range (low, high), 0 < low <= high, of the standard deviation in pixels.

  Returns:
    uint8 [H, W, C].
  """
  _check_image(image, "gaussian_blur")
  _check_range("gaussian_blur sigma", sigma)
  if not _coin(rng, probability, "gaussian_blur probability"):
    return image
  blur = ImageFilter.GaussianBlur(radius=rng.uniform(*sigma))
  return _pillow(image, lambda channels: channels.filter(blur))


def make_views(example: Example, rng: np.random.Generator, num_views: int,
               transform: Callable[[Example, np.random.Generator], Example]) -> list[Example]:
  """``num_views`` independently augmented views of one example (e.g. SimCLR's pairs).

  View i is ``transform(example, child_i)`` where ``child_i`` is a fresh generator seeded by
  the i-th of ``num_views`` draws from ``rng``: independent streams that depend only on
  ``rng``'s state. (Not ``rng.spawn``: its children also depend on how many times the
  generator's seed sequence has spawned before, and grain's ``random_map`` re-seeds pooled
  generators without resetting that count, so the views of a row would depend on which rows
  a worker thread read before it.)
  """
  if num_views < 1:
    raise ValueError(f"make_views needs num_views >= 1; got {num_views}.")
  seeds = rng.integers(2**63, size=num_views)
  return [transform(example, np.random.default_rng(seed)) for seed in seeds]


def patch_grid(image: np.ndarray, rng: np.random.Generator, grid_size: int = 3, *,
               patch_size: int, gap: int, jitter: int) -> tuple[np.ndarray, np.ndarray]:
  """A jittered grid of patches for context prediction (Doersch et al. 2015).

  Patches of side ``patch_size`` sit on a ``grid_size`` x ``grid_size`` grid of cells
  ``patch_size + gap`` apart; the gap and jitter keep the task from being solved by
  continuing edges across patch borders. Draws the grid's origin uniformly such that the
  grid plus jitter fits (row, then column), then every patch's offset, integers uniform in
  ``[-jitter, jitter]`` on each axis ([grid_size**2, 2], row then column).

  Args:
    image: uint8 [H, W, C].
    rng: Draws the origin and the offsets.
    grid_size: Patches per side.
    patch_size, gap, jitter: In pixels.

  Returns:
    ``patches`` uint8 [grid_size**2, patch_size, patch_size, C] in raster order (for a 3 x 3
    grid, index 4 is the centre) and ``corners`` int32 [grid_size**2, 2], the (row, col) of
    each patch's top-left pixel.
  """
  if grid_size < 1 or patch_size < 1 or gap < 0 or jitter < 0:
    raise ValueError(f"patch_grid needs grid_size >= 1, patch_size >= 1, gap >= 0 and "
                     f"jitter >= 0; got {grid_size}, {patch_size}, {gap}, {jitter}.")
  height, width = image.shape[:2]
  stride = patch_size + gap
  span = (grid_size - 1) * stride + patch_size + 2 * jitter
  if span > min(height, width):
    raise ValueError(
        f"A {grid_size} x {grid_size} grid of {patch_size}-pixel patches with gap {gap} and "
        f"jitter {jitter} spans {span} pixels, but the image is {height} x {width}; use a "
        "larger image or a smaller grid_size, patch_size, gap or jitter.")
  origin = np.array([rng.integers(0, height - span + 1), rng.integers(0, width - span + 1)])
  cells = np.stack(np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij"),
                   axis=-1).reshape(-1, 2)
  offsets = rng.integers(-jitter, jitter + 1, size=(grid_size**2, 2))
  corners = (origin + jitter + cells * stride + offsets).astype(np.int32)
  patches = np.stack([image[row:row + patch_size, col:col + patch_size]
                      for row, col in corners])
  return patches, corners
