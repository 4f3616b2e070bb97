"""Flip, padding, resizing, box validation, and augmentations."""

import functools

import numpy as np
import pytest
from PIL import Image, ImageFilter

from jaxvision.data import datasets, shapes, sources, transforms


def _example(index: int, min_objects: int = 3, max_objects: int = 6) -> dict[str, np.ndarray]:
  """A multi-object shapes example with every feature, as the pipeline sees it."""
  drawn = shapes.render_example(np.random.default_rng([9, 0, index]), 48, min_objects,
                                max_objects, num_keypoints=4)
  record = {"image": drawn["image"], "image_id": index, "instance_map": drawn["instance_map"],
            "objects": {"label": drawn["labels"], "box": drawn["boxes"],
                        "keypoints": drawn["keypoints"], "area": drawn["area"],
                        "is_crowd": drawn["is_crowd"]}}
  return sources.shapes_record_to_example(record, frozenset(datasets.FEATURES))


def _flip(example):
  return transforms.flip_horizontal(example, shapes.keypoint_flip_permutation(4))


def _tight_box(mask: np.ndarray) -> list[float]:
  rows, cols = np.nonzero(mask)
  return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("index", range(5))
def test_flipping_twice_is_the_identity(index):
  example = _example(index)
  twice = _flip(_flip(example))
  assert twice.keys() == example.keys()
  for name in example:
    np.testing.assert_array_equal(twice[name], example[name], err_msg=name)
  assert not np.array_equal(_flip(example)["image"], example["image"])


@pytest.mark.parametrize("index", range(20))
def test_flipped_annotations_follow_the_flipped_image(index):
  example = _example(index, min_objects=1, max_objects=1)
  flipped = _flip(example)
  np.testing.assert_array_equal(flipped["image"], example["image"][:, ::-1])
  mask = flipped["masks"][0].astype(bool)
  np.testing.assert_array_equal(flipped["semantic"], mask * (example["labels"][0] + 1))
  # The box still covers the flipped mask exactly.
  np.testing.assert_array_equal(flipped["boxes"][0], _tight_box(mask))
  # Keypoints stay the extreme points top, right, bottom, left of the flipped object (up to
  # the pixel picked among ties), and stay on the object.
  _, extreme_points = shapes._box_and_extreme_points(*np.nonzero(mask), 4)
  np.testing.assert_allclose(flipped["keypoints"][0, :, :2], extreme_points, atol=1.0)
  x, y = flipped["keypoints"][0, :, :2].T.astype(int)
  assert mask[y, x].all()
  np.testing.assert_array_equal(flipped["keypoints"][0, :, 2], example["keypoints"][0, :, 2])


def test_flip_keeps_unlabeled_keypoints_at_zero():
  example = _example(0)
  example["keypoints"][0, 1] = 0
  assert np.all(_flip(example)["keypoints"][0, 3] == 0)  # keypoint 1 (right) became 3 (left)


def test_padding_adds_a_valid_mask_and_zero_rows():
  example = _example(1)
  num_objects = len(example["labels"])
  padded = transforms.pad_objects(example, 10)
  np.testing.assert_array_equal(padded["box_valid"], np.arange(10) < num_objects)
  for name in transforms.OBJECT_FEATURES:
    assert padded[name].shape[0] == 10 and padded[name].dtype == example[name].dtype
    np.testing.assert_array_equal(padded[name][:num_objects], example[name])
    assert not padded[name][num_objects:].any()


def test_more_objects_than_max_boxes_is_an_error_naming_the_example():
  example = _example(2, min_objects=5, max_objects=5)
  with pytest.raises(ValueError, match=r"image_id 2 has 5 objects but data.max_boxes=4"):
    transforms.pad_objects(example, 4)


def test_validate_boxes_names_the_bad_box():
  boxes = np.array([[[0, 0, 5, 5], [1, 1, 2, 2]], [[0, 0, 5, 5], [7, 1, 3, 2]]], np.float32)
  batch = {"boxes": boxes, "box_valid": np.ones((2, 2), bool), "image_id": np.array([10, 11])}
  with pytest.raises(ValueError, match=r"Box 1 of example 1 \(image_id 11\).*x1 <= x2"):
    transforms.validate_boxes(batch)
  batch["box_valid"][1, 1] = False  # padding is not checked
  transforms.validate_boxes(batch)
  batch["boxes"][0, 0, 3] = np.nan
  with pytest.raises(ValueError, match=r"Box 0 of example 0"):
    transforms.validate_boxes(batch)
  with pytest.raises(ValueError, match=r"shape \[batch, max_boxes, 4\]"):
    transforms.validate_boxes({"boxes": boxes[0]})


def test_resize_and_pad_scales_the_longer_side_and_pads_bottom_right():
  # 40 x 80 pixels, two objects in absolute xyxy pixels.
  example = {"image": np.full((40, 80, 3), 200, np.uint8), "image_id": np.int32(7),
             "boxes": np.array([[40, 10, 80, 30], [0, 0, 16, 4]], np.float32),
             "labels": np.array([17, 0], np.int32), "area": np.array([800, 32], np.float32)}
  resized = transforms.resize_and_pad(example, 64)
  assert resized["image"].shape == (64, 64, 3)
  assert np.all(resized["image"][:32] == 200) and not resized["image"][32:].any()
  np.testing.assert_allclose(resized["boxes"], [[32, 8, 64, 24], [0, 0, 12.8, 3.2]], rtol=1e-6)
  np.testing.assert_allclose(resized["area"], [800 * 0.64, 32 * 0.64], rtol=1e-6)
  assert transforms.resize_and_pad(resized, 64) is resized


def test_resize_and_pad_pads_semantic_maps_with_the_ignore_label():
  semantic = np.ones((40, 80), np.int32)
  example = {"image": np.full((40, 80, 1), 9, np.uint8), "semantic": semantic,
             "masks": np.ones((2, 40, 80), np.uint8)}
  resized = transforms.resize_and_pad(example, 64)
  assert resized["image"].shape == (64, 64, 1) and resized["masks"].shape == (2, 64, 64)
  assert np.all(resized["semantic"][:32] == 1) and np.all(resized["semantic"][32:] == 255)
  assert np.all(resized["masks"][:, :32] == 1) and not resized["masks"][:, 32:].any()
  assert np.all(resized["image"][:32] == 9) and not resized["image"][32:].any()
  assert np.all(transforms.resize_and_pad(example, 64, ignore_label=-1)["semantic"][32:] == -1)


# --- to_channels, random_flip ------------------------------------------------------------


def _noise(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_to_channels_grey_is_pillows_luma_and_rgb_repeats_it():
  # Every (red, green) pair at 16 blue levels: it holds colours where rounding
  # 0.299 R + 0.587 G + 0.114 B differs from Pillow's fixed-point luma.
  red, green, blue = np.meshgrid(np.arange(256), np.arange(256), np.arange(0, 256, 17),
                                 indexing="ij")
  rgb = np.stack([red, green, blue], axis=-1).reshape(256, -1, 3).astype(np.uint8)
  grey = transforms.to_channels(rgb, 1)
  assert grey.shape == rgb.shape[:2] + (1,) and grey.dtype == np.uint8
  np.testing.assert_array_equal(grey[..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
  rgba = np.concatenate([rgb, _noise(rgb.shape[:2] + (1,))], axis=-1)
  np.testing.assert_array_equal(transforms.to_channels(rgba, 1), grey)
  np.testing.assert_array_equal(transforms.to_channels(rgba, 3), rgb)
  np.testing.assert_array_equal(transforms.to_channels(grey[..., 0], 3),
                                np.repeat(grey, 3, axis=-1))
  assert transforms.to_channels(rgb, 3) is rgb


@pytest.mark.parametrize("image, match", [
    (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\)"),
    (np.zeros((4, 4, 3), np.float32), "dtype float32"),
])
def test_to_channels_rejects_other_layouts(image, match):
  with pytest.raises(ValueError, match=match):
    transforms.to_channels(image, 3)
  with pytest.raises(ValueError, match="1 .*or 3 .*got 2"):
    transforms.to_channels(np.zeros((4, 4, 3), np.uint8), 2)


@pytest.mark.parametrize("seed", range(6))
def test_random_flip_draws_one_number_and_flips_when_it_is_below_the_probability(seed):
  example = _example(seed)
  rng, replay = np.random.default_rng(seed), np.random.default_rng(seed)
  flipped = transforms.random_flip(example, rng, 0.5, shapes.keypoint_flip_permutation(4))
  expected = _flip(example) if replay.random() < 0.5 else example
  for name in example:
    np.testing.assert_array_equal(flipped[name], expected[name], err_msg=name)
  assert rng.random() == replay.random()


# --- random_resized_crop -----------------------------------------------------------------


def test_crop_of_the_whole_square_image_is_a_plain_resize():
  example = _example(3)
  whole = functools.partial(transforms.random_resized_crop, scale=(1, 1), ratio=(1, 1))
  same = whole(example, np.random.default_rng(0), 48)
  for name in example:
    np.testing.assert_array_equal(same[name], example[name], err_msg=name)
  smaller, resized = whole(example, np.random.default_rng(0), 32), transforms.resize_and_pad(
      example, 32)
  for name in example:
    np.testing.assert_allclose(smaller[name], resized[name], rtol=1e-6, err_msg=name)


# Non-overlapping rectangles (y1, x1, y2, x2) in a 64 x 96 image; object i has label i.
_RECTANGLES = np.array([(4, 6, 20, 30), (8, 40, 30, 60), (5, 70, 25, 90), (36, 4, 60, 24),
                        (40, 34, 56, 62), (34, 70, 62, 92)])


def _rectangles_example() -> dict[str, np.ndarray]:
  """Filled rectangles with every per-object feature; keypoints: centre, top-left pixel."""
  num = len(_RECTANGLES)
  image = np.zeros((64, 96, 3), np.uint8)
  masks = np.zeros((num, 64, 96), np.uint8)
  for index, (y1, x1, y2, x2) in enumerate(_RECTANGLES):
    masks[index, y1:y2, x1:x2] = 1
    image[y1:y2, x1:x2] = 40 * (index + 1)
  y1, x1, y2, x2 = _RECTANGLES.T.astype(np.float32)
  keypoints = np.stack([np.stack([(x1 + x2) / 2, (y1 + y2) / 2, np.full(num, 2)], -1),
                        np.stack([x1 + 0.5, y1 + 0.5, np.ones(num)], -1)], axis=1)
  return {"image": image, "image_id": np.int32(7), "boxes": np.stack([x1, y1, x2, y2], -1),
          "labels": np.arange(num, dtype=np.int32), "area": (x2 - x1) * (y2 - y1),
          "is_crowd": np.arange(num) % 2 == 1, "masks": masks,
          "keypoints": keypoints.astype(np.float32),
          "semantic": (masks * np.arange(1, num + 1)[:, None, None]).sum(0).astype(np.int32)}


def test_cropped_objects_keep_tight_boxes_and_consistent_features_or_are_dropped():
  example, size, scale = _rectangles_example(), 40, (0.05, 1.0)
  num_dropped = num_kept = 0
  for seed in range(30):
    cropped = transforms.random_resized_crop(example, np.random.default_rng(seed), size, scale)
    top, left, h, w = transforms.sample_crop_box(np.random.default_rng(seed), 64, 96, scale)
    y1, x1, y2, x2 = _RECTANGLES.T
    kept = (np.minimum(x2, left + w) > np.maximum(x1, left)) & (
        np.minimum(y2, top + h) > np.maximum(y1, top))
    np.testing.assert_array_equal(cropped["labels"], np.flatnonzero(kept))
    num_kept, num_dropped = num_kept + kept.sum(), num_dropped + (~kept).sum()
    assert cropped["image"].shape == (size, size, 3) and cropped["semantic"].shape == (size,) * 2
    assert cropped["masks"].shape == (kept.sum(), size, size)
    x_scale, y_scale = size / w, size / h
    np.testing.assert_allclose(cropped["area"], example["area"][kept] * x_scale * y_scale,
                               rtol=1e-5)
    np.testing.assert_array_equal(cropped["is_crowd"], example["is_crowd"][kept])
    for row, label in enumerate(cropped["labels"]):
      mask, box = cropped["masks"][row].astype(bool), cropped["boxes"][row]
      assert np.all(cropped["semantic"][mask] == label + 1)
      if mask.any():
        np.testing.assert_allclose(box, _tight_box(mask), atol=1.0)
      else:  # a sliver thinner than one output pixel, missed by nearest neighbours
        assert min(box[2] - box[0], box[3] - box[1]) < 1
      for original, moved in zip(example["keypoints"][label], cropped["keypoints"][row]):
        x, y, _ = original
        if left <= x < left + w and top <= y < top + h:
          np.testing.assert_allclose(moved, [(x - left) * x_scale, (y - top) * y_scale,
                                             original[2]], rtol=1e-5)
        else:
          np.testing.assert_array_equal(moved, 0)
      centre = cropped["keypoints"][row, 0]
      assert centre[2] == 0 or mask[int(centre[1]), int(centre[0])]  # it stays on the object
  assert num_kept > 30 and num_dropped > 30


def test_crop_keeps_one_channel_images_and_images_without_objects():
  example = {"image": _noise((30, 50, 1)), "masks": np.zeros((0, 30, 50), np.uint8),
             "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int32)}
  cropped = transforms.random_resized_crop(example, np.random.default_rng(0), 24)
  assert cropped["image"].shape == (24, 24, 1) and cropped["image"].dtype == np.uint8
  assert cropped["masks"].shape == (0, 24, 24) and cropped["boxes"].shape == (0, 4)


@pytest.mark.parametrize("height, width", [(40, 60), (60, 40), (50, 50)])
def test_sampled_crop_boxes_are_inside_the_image_and_within_scale_and_ratio(height, width):
  scale, ratio = (0.2, 0.6), (0.5, 1.5)
  fallback = transforms.sample_crop_box(None, height, width, scale, ratio, attempts=0)
  num_sampled = 0
  for seed in range(100):
    top, left, h, w = box = transforms.sample_crop_box(np.random.default_rng(seed), height,
                                                       width, scale, ratio)
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width and h * w > 0
    if box != fallback:
      num_sampled += 1
      # w and h are sqrt(area * r) and sqrt(area / r) rounded to integers.
      assert (w - 0.5) * (h - 0.5) <= scale[1] * height * width
      assert (w + 0.5) * (h + 0.5) >= scale[0] * height * width
      assert (w - 0.5) / (h + 0.5) <= ratio[1] and (w + 0.5) / (h - 0.5) >= ratio[0]
  assert num_sampled > 90


@pytest.mark.parametrize("seed", range(3))
def test_crop_box_draws_area_ratio_top_left_like_torchvision(seed):
  # Crops of at most half of 100 x 100 always fit, so the first attempt succeeds.
  box = transforms.sample_crop_box(np.random.default_rng(seed), 100, 100, (0.1, 0.5))
  replay = np.random.default_rng(seed)
  area, ratio = 1e4 * replay.uniform(0.1, 0.5), np.exp(replay.uniform(np.log(3 / 4),
                                                                      np.log(4 / 3)))
  w, h = round(np.sqrt(area * ratio)), round(np.sqrt(area / ratio))
  top, left = replay.integers(0, 100 - h + 1), replay.integers(0, 100 - w + 1)
  assert box == (top, left, h, w)


@pytest.mark.parametrize("height, width, attempts, expected", [
    (100, 20, 10, (36, 0, 27, 20)), (20, 100, 10, (0, 36, 20, 27)), (30, 36, 0, (0, 0, 30, 36))])
def test_crop_box_fallback_is_the_centre_crop_narrowed_to_the_ratio_range(height, width,
                                                                         attempts, expected):
  # No full-area crop with w / h in [3/4, 4/3] fits the tall and wide images, so every
  # attempt fails; with no attempts nothing is drawn at all.
  rng = np.random.default_rng(0) if attempts else None
  assert transforms.sample_crop_box(rng, height, width, (1.0, 1.0), (0.75, 4 / 3),
                                    attempts) == expected


def test_crop_ranges_must_be_positive_and_ordered():
  with pytest.raises(ValueError, match=r"scale must be a range.*\(0.5, 0.1\)"):
    transforms.sample_crop_box(np.random.default_rng(0), 8, 8, scale=(0.5, 0.1))
  with pytest.raises(ValueError, match=r"ratio must be a range.*\(0, 1\)"):
    transforms.sample_crop_box(np.random.default_rng(0), 8, 8, ratio=(0, 1))


# --- colour, grey, blur ------------------------------------------------------------------


class _FixedDraws:
  """Stands in for the generator: a fixed order, every factor at one end of its range."""

  def __init__(self, order=(0, 1, 2, 3), pick=min):
    self.order, self.pick = np.array(order), pick

  def permutation(self, n):
    assert n == len(self.order)
    return self.order

  def uniform(self, low, high):
    return self.pick(low, high)



def test_color_jitter_with_zero_strengths_is_the_identity():
  for image in (_noise((16, 20, 3)), _noise((16, 20, 1))):
    np.testing.assert_array_equal(transforms.color_jitter(image, np.random.default_rng(0)),
                                  image)


def test_color_jitter_brightness_scales_by_the_drawn_factor():
  image = _noise((16, 20, 3))
  np.testing.assert_array_equal(transforms.color_jitter(image, _FixedDraws(), brightness=0.5),
                                np.rint(image * 0.5).astype(np.uint8))
  replay = np.random.default_rng(4)
  replay.permutation(4)
  factor = replay.uniform(0.2, 1.8)
  np.testing.assert_array_equal(
      transforms.color_jitter(image, np.random.default_rng(4), brightness=0.8),
      np.rint(np.clip(image * factor, 0, 255)).astype(np.uint8))


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (1, 0, 2, 3)])
def test_color_jitter_applies_the_drawn_order_and_clips_after_each_adjustment(order):
  image = _noise((16, 20, 3))
  luma_weights = np.array([19595, 38470, 7471]) / 2**16

  def brightness(pixels):  # factor 2
    return np.clip(2 * pixels, 0, 255)

  def contrast(pixels):  # factor 2, away from the mean grey level
    return np.clip(2 * pixels - (pixels @ luma_weights).mean(), 0, 255)

  first, second = (brightness, contrast) if order[0] == 0 else (contrast, brightness)
  np.testing.assert_array_equal(
      transforms.color_jitter(image, _FixedDraws(order, max), brightness=1, contrast=1),
      np.rint(second(first(image.astype(float)))).astype(np.uint8))


def test_color_jitter_at_factor_zero_gives_grey_and_the_mean_grey():
  image = _noise((16, 20, 3))
  grey = transforms.to_channels(image, 1)
  np.testing.assert_array_equal(transforms.color_jitter(image, _FixedDraws(), saturation=1),
                                np.repeat(grey, 3, axis=-1))
  flat = transforms.color_jitter(image, _FixedDraws(), contrast=1)
  assert np.ptp(flat) == 0 and abs(int(flat[0, 0, 0]) - grey.mean()) <= 0.5


def test_color_jitter_hue_rotates_colours_and_keeps_value_and_saturation():
  primaries = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]]], np.uint8)
  # A shift of -1/3 of the colour circle: red -> blue -> green -> red; grey stays.
  np.testing.assert_array_equal(transforms.color_jitter(primaries, _FixedDraws(), hue=1 / 3),
                                [[[0, 0, 255], [255, 0, 0], [0, 255, 0], [90, 90, 90]]])
  image = _noise((16, 20, 3))
  shifted = transforms.color_jitter(image, np.random.default_rng(0), hue=0.5).astype(int)
  assert not np.array_equal(shifted, image)
  np.testing.assert_allclose(shifted.max(-1), image.max(-1), atol=1)
  np.testing.assert_allclose(shifted.min(-1), image.min(-1), atol=1)


def test_color_jitter_on_grey_images_changes_only_brightness_and_contrast():
  grey = _noise((16, 20, 1))
  np.testing.assert_array_equal(
      transforms.color_jitter(grey, np.random.default_rng(0), saturation=1, hue=0.5), grey)
  np.testing.assert_array_equal(transforms.color_jitter(grey, _FixedDraws(), brightness=0.5),
                                np.rint(grey * 0.5).astype(np.uint8))


@pytest.mark.parametrize("strengths, match", [
    ({"brightness": -0.1}, "'brightness': -0.1"), ({"hue": 0.6}, "hue <= 0.5")])
def test_color_jitter_rejects_bad_strengths(strengths, match):
  with pytest.raises(ValueError, match=match):
    transforms.color_jitter(_noise((4, 4, 3)), np.random.default_rng(0), **strengths)


def test_random_grayscale_gives_equal_channels_of_the_luma():
  image = _noise((16, 20, 3))
  grey = transforms.random_grayscale(image, np.random.default_rng(0), 1.0)
  np.testing.assert_array_equal(grey, np.repeat(transforms.to_channels(image, 1), 3, -1))
  np.testing.assert_array_equal(transforms.random_grayscale(image, np.random.default_rng(0),
                                                            0.0), image)
  with pytest.raises(ValueError, match="random_grayscale probability .*got 2"):
    transforms.random_grayscale(image, np.random.default_rng(0), 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_smooths_noise_and_keeps_the_mean(channels):
  image = _noise((64, 64, channels))
  blurred = transforms.gaussian_blur(image, np.random.default_rng(0), sigma=(1.0, 2.0))
  assert blurred.shape == image.shape and blurred.dtype == np.uint8
  assert blurred.var() < 0.25 * image.var()
  assert abs(blurred.mean() - image.mean()) < 2
  np.testing.assert_array_equal(
      transforms.gaussian_blur(image, np.random.default_rng(0), probability=0.0), image)


def test_gaussian_blur_is_pillows_blur_with_the_drawn_sigma():
  image = _noise((20, 24, 3))
  replay = np.random.default_rng(5)
  replay.random()
  expected = Image.fromarray(image).filter(ImageFilter.GaussianBlur(replay.uniform(0.1, 2.0)))
  np.testing.assert_array_equal(transforms.gaussian_blur(image, np.random.default_rng(5)),
                                np.asarray(expected))


# --- determinism, views, patch grids -----------------------------------------------------


def _augment(example, rng):
  """A SimCLR-like chain over a whole example."""
  example = transforms.random_resized_crop(example, rng, 32)
  example = transforms.random_flip(example, rng, keypoint_permutation=np.arange(4))
  image = transforms.color_jitter(example["image"], rng, 0.4, 0.4, 0.4, 0.1)
  image = transforms.random_grayscale(image, rng, 0.2)
  return {**example, "image": transforms.gaussian_blur(image, rng, probability=0.5)}


_AUGMENTATIONS = {
    "random_resized_crop": lambda e, rng: transforms.random_resized_crop(e, rng, 24),
    "random_flip": lambda e, rng: transforms.random_flip(e, rng),
    "color_jitter": lambda e, rng: {"image": transforms.color_jitter(e["image"], rng, 0.4, 0.4,
                                                                     0.4, 0.1)},
    "random_grayscale": lambda e, rng: {"image": transforms.random_grayscale(e["image"], rng,
                                                                             0.5)},
    "gaussian_blur": lambda e, rng: {"image": transforms.gaussian_blur(e["image"], rng)},
    "patch_grid": lambda e, rng: dict(zip(("patches", "corners"), transforms.patch_grid(
        e["image"], rng, patch_size=10, gap=3, jitter=2))),
    "chain": _augment,
}


@pytest.mark.parametrize("name", _AUGMENTATIONS)
def test_augmentations_are_functions_of_the_seed(name):
  augment, example = _AUGMENTATIONS[name], _example(4)
  originals = {key: np.copy(value) for key, value in example.items()}
  outputs = [augment(example, np.random.default_rng(seed)) for seed in (0, 0, 1, 2, 3, 4)]
  for key in outputs[0]:
    np.testing.assert_array_equal(outputs[0][key], outputs[1][key], err_msg=key)
  assert len({outputs[i]["image" if "image" in outputs[i] else "patches"].tobytes()
              for i in range(1, 6)}) > 1
  for key, value in originals.items():  # the input is never modified
    np.testing.assert_array_equal(example[key], value, err_msg=key)


def test_views_differ_and_are_reproducible():
  example = _example(5)
  views = transforms.make_views(example, np.random.default_rng(0), 3, _augment)
  again = transforms.make_views(example, np.random.default_rng(0), 3, _augment)
  assert len(views) == 3
  for view, same in zip(views, again):
    assert view.keys() == same.keys()
    for key in view:
      np.testing.assert_array_equal(view[key], same[key], err_msg=key)
  images = [view["image"] for view in views]
  assert not any(np.array_equal(images[i], images[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
  seeds = np.random.default_rng(0).integers(2**63, size=3)
  np.testing.assert_array_equal(views[2]["image"],
                                _augment(example, np.random.default_rng(seeds[2]))["image"])


def test_views_depend_only_on_the_generator_state_not_on_its_spawn_history():
  """grain re-seeds pooled generators per row but keeps their seed sequences' spawn counts."""
  example = _example(5)
  used = np.random.default_rng(0)
  used.bit_generator.seed_seq.spawn(4)  # what earlier rows' spawns would have left behind
  views = transforms.make_views(example, used, 2, _augment)
  fresh = transforms.make_views(example, np.random.default_rng(0), 2, _augment)
  for view, same in zip(views, fresh):
    np.testing.assert_array_equal(view["image"], same["image"])


@pytest.mark.parametrize("seed", range(5))
def test_patch_grid_cuts_patches_at_the_corners_with_gaps(seed):
  image, patch_size, gap, jitter = _noise((60, 70, 3), seed), 12, 6, 3
  patches, corners = transforms.patch_grid(image, np.random.default_rng(seed),
                                           patch_size=patch_size, gap=gap, jitter=jitter)
  assert patches.shape == (9, 12, 12, 3) and patches.dtype == np.uint8
  assert corners.shape == (9, 2) and corners.dtype == np.int32
  for patch, (row, col) in zip(patches, corners):
    np.testing.assert_array_equal(patch, image[row:row + patch_size, col:col + patch_size])
  grid = corners.reshape(3, 3, 2)
  minimum = patch_size + gap - 2 * jitter
  assert np.all(np.diff(grid[..., 0], axis=0) >= minimum)  # rows below each other
  assert np.all(np.diff(grid[..., 1], axis=1) >= minimum)  # columns right of each other
  cells = np.stack(np.meshgrid(np.arange(3), np.arange(3), indexing="ij"), -1).reshape(9, 2)
  offsets = corners - cells * (patch_size + gap)
  offsets -= offsets.min(axis=0)  # every patch's own jitter, up to the origin
  assert offsets.max() <= 2 * jitter and len(np.unique(offsets, axis=0)) > 1


def test_patch_grid_that_does_not_fit_is_an_error_naming_the_sizes():
  image = _noise((48, 60, 1))
  # 3 x 12 + 2 x 6 + 2 x 0 = 48: just fits, at the only possible origin.
  _, corners = transforms.patch_grid(image, np.random.default_rng(0), patch_size=12, gap=6,
                                     jitter=0)
  np.testing.assert_array_equal(corners[:, 0].reshape(3, 3), [[0] * 3, [18] * 3, [36] * 3])
  with pytest.raises(ValueError, match=r"3 x 3 grid of 12-pixel patches with gap 6 and "
                                       r"jitter 1 spans 50 pixels, but the image is 48 x 60"):
    transforms.patch_grid(image, np.random.default_rng(0), patch_size=12, gap=6, jitter=1)
