"""The synthetic shapes: determinism, difficulty (class/colour independence), geometry."""

import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import shapes


def _render(index: int, image_size: int = 32, min_objects: int = 1, max_objects: int = 1,
            seed: int = 0) -> dict[str, np.ndarray]:
  return shapes.render_example(np.random.default_rng([seed, 0, index]), image_size,
                               min_objects, max_objects, num_keypoints=4)


@pytest.fixture(scope="module")
def single_objects() -> list[dict[str, np.ndarray]]:
  return [_render(i) for i in range(600)]


@pytest.fixture(scope="module")
def crowded() -> list[dict[str, np.ndarray]]:
  return [_render(i, image_size=64, min_objects=4, max_objects=10) for i in range(60)]


def _tight_box(mask: np.ndarray) -> list[float]:
  rows, cols = np.nonzero(mask)
  return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_rendering_is_a_function_of_the_seed():
  first, again, other = _render(5, seed=7), _render(5, seed=7), _render(5, seed=8)
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  assert not np.array_equal(first["image"], other["image"])


def test_classes_are_balanced(single_objects):
  counts = np.bincount([ex["labels"][0] for ex in single_objects],
                       minlength=len(data.CLASS_NAMES))
  expected = len(single_objects) / len(data.CLASS_NAMES)
  sigma = np.sqrt(expected * (1 - 1 / len(data.CLASS_NAMES)))
  assert len(data.CLASS_NAMES) >= 6
  assert np.all(np.abs(counts - expected) < 4 * sigma), counts


def test_colour_says_nothing_about_the_class(single_objects):
  labels = np.array([ex["labels"][0] for ex in single_objects])
  colours = np.array([ex["image"][ex["instance_map"] == 1].mean(axis=0)
                      for ex in single_objects])
  overall_mean, overall_std = colours.mean(axis=0), colours.std(axis=0)
  assert np.all(overall_std > 50), overall_std  # colours spread over the whole range
  for label in range(len(data.CLASS_NAMES)):
    in_class = colours[labels == label]
    standard_error = overall_std / np.sqrt(len(in_class))
    assert np.all(np.abs(in_class.mean(axis=0) - overall_mean) < 4 * standard_error), (
        data.CLASS_NAMES[label], in_class.mean(axis=0), overall_mean)


def test_background_is_not_flat(single_objects):
  """Flat-colour thresholding fails: the background alone spans a wide colour range."""
  spreads = [np.ptp(ex["image"][ex["instance_map"] == 0].astype(np.float32), axis=0).min()
             for ex in single_objects[:50]]
  assert np.median(spreads) > 60, spreads


def test_sizes_span_8_px_to_half_the_image(single_objects):
  round_classes = [data.CLASS_NAMES.index("circle"), data.CLASS_NAMES.index("ring")]
  diameters = np.array([(ex["boxes"][0, 2:] - ex["boxes"][0, :2]).max()
                        for ex in single_objects if ex["labels"][0] in round_classes])
  assert diameters.min() >= shapes.MIN_OBJECT_SIZE - 1 and diameters.max() <= 32 / 2 + 1
  assert diameters.min() < 10 and diameters.max() > 14, (diameters.min(), diameters.max())


def test_single_object_box_is_the_tight_box_of_its_mask(single_objects):
  for ex in single_objects[:100]:
    np.testing.assert_array_equal(ex["boxes"][0], _tight_box(ex["instance_map"] == 1))
    assert ex["area"][0] == (ex["instance_map"] == 1).sum()


def test_occlusion_keeps_masks_disjoint_and_boxes_of_the_full_object(crowded):
  occluded_keypoints = 0
  for ex in crowded:
    num_objects = len(ex["labels"])
    assert num_objects >= 4
    visible = [ex["instance_map"] == i + 1 for i in range(num_objects)]
    # Visible masks are the instance map's layers: disjoint, union == all objects' pixels.
    assert sum(ex["area"]) == sum(m.sum() for m in visible) == (ex["instance_map"] > 0).sum()
    for index, (mask, box) in enumerate(zip(visible, ex["boxes"])):
      assert mask.sum() > 0  # never fully hidden
      x1, y1, x2, y2 = _tight_box(mask)
      assert box[0] <= x1 and box[1] <= y1 and box[2] >= x2 and box[3] >= y2
      if index == num_objects - 1:  # drawn last: nothing covers it
        np.testing.assert_array_equal(box, [x1, y1, x2, y2])
    # Keypoints lie in their box; visible ones on the object, occluded ones under a later one.
    for index, (keypoints, box) in enumerate(zip(ex["keypoints"], ex["boxes"])):
      x, y, visibility = keypoints.T
      assert np.all((x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3]))
      owner = ex["instance_map"][y.astype(int), x.astype(int)]
      np.testing.assert_array_equal(owner == index + 1, visibility == 2)
      assert np.all(owner[visibility == 1] > index + 1)
      occluded_keypoints += (visibility == 1).sum()
  assert occluded_keypoints > 0  # objects do overlap


def test_keypoints_are_the_extreme_points_top_right_bottom_left(single_objects):
  for ex in single_objects[:100]:
    x, y, _ = ex["keypoints"][0].T
    x1, y1, x2, y2 = ex["boxes"][0]
    assert y[0] == y1 + 0.5 and x[1] == x2 - 0.5 and y[2] == y2 - 0.5 and x[3] == x1 + 0.5


def test_builder_stores_exactly_what_was_rendered(multi_config):
  builder = data.build_dataset(multi_config)
  config = builder.builder_config
  for split_index, split in enumerate(shapes.SPLITS):
    source = builder.as_data_source(split)
    assert len(source) == getattr(config, f"num_{split}")
    for index in (0, len(source) - 1):
      record = source[index]
      drawn = shapes.render_example(np.random.default_rng([config.seed, split_index, index]),
                                    config.image_size, config.min_objects, config.max_objects,
                                    config.num_keypoints)
      assert record["image_id"] == index
      np.testing.assert_array_equal(record["image"], drawn["image"])
      np.testing.assert_array_equal(record["instance_map"], drawn["instance_map"])
      np.testing.assert_array_equal(record["objects"]["box"], drawn["boxes"])
      np.testing.assert_array_equal(record["objects"]["keypoints"], drawn["keypoints"])
  train, validation = builder.as_data_source("train"), builder.as_data_source("validation")
  assert not np.array_equal(train[0]["image"], validation[0]["image"])


def test_config_name_follows_every_field():
  base = shapes.ShapesConfig()
  assert shapes.ShapesConfig().name == base.name
  for field, value in dict(image_size=32, min_objects=0, max_objects=3, num_train=5,
                           num_validation=5, num_test=5, seed=1, num_keypoints=8).items():
    assert shapes.ShapesConfig(**{field: value}).name != base.name, field


@pytest.mark.parametrize("fields, message", [
    (dict(image_size=8), "image_size"),
    (dict(min_objects=3, max_objects=2), "min_objects"),
    (dict(max_objects=300), "max_objects"),
    (dict(num_test=0), "num_test"),
])
def test_bad_generation_settings_are_named(fields, message):
  with pytest.raises(ValueError, match=message):
    shapes.ShapesConfig(**fields)
