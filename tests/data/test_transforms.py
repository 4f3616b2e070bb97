"""Flip, padding, resizing, box validation, and the COCO record mapping."""

import numpy as np
import pytest

from jaxvision.data import datasets, shapes, transforms


def _example(index: int, min_objects: int = 3, max_objects: int = 6) -> dict[str, np.ndarray]:
  """A multi-object shapes example with every feature, as the pipeline sees it."""
  drawn = shapes.render_example(np.random.default_rng([9, 0, index]), 48, min_objects,
                                max_objects, num_keypoints=4)
  record = {"image": drawn["image"], "image_id": index, "instance_map": drawn["instance_map"],
            "objects": {"label": drawn["labels"], "box": drawn["boxes"],
                        "keypoints": drawn["keypoints"], "area": drawn["area"],
                        "is_crowd": drawn["is_crowd"]}}
  return datasets.record_format("shapes").to_example(record, frozenset(datasets.FEATURES))


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


def _coco_record() -> dict:
  """A record shaped like TFDS ``coco/2017`` (normalized yxyx boxes), 40 x 80 pixels."""
  image = np.full((40, 80, 3), 200, np.uint8)
  return {"image": image, "image/id": np.int64(397133), "image/filename": b"x.jpg",
          "objects": {"bbox": np.array([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.1, 0.2]],
                                       np.float32),
                      "label": np.array([17, 0]), "area": np.array([800, 32]),
                      "is_crowd": np.array([False, True]), "id": np.array([1, 2])}}


def test_coco_records_become_absolute_xyxy_examples():
  coco = datasets.record_format("coco/2017")
  example = coco.to_example(_coco_record(), frozenset({"image", "boxes"}))
  np.testing.assert_allclose(example["boxes"], [[40, 10, 80, 30], [0, 0, 16, 4]])
  np.testing.assert_array_equal(example["labels"], [17, 0])
  np.testing.assert_array_equal(example["is_crowd"], [False, True])
  assert example["image_id"] == 397133 and example["labels"].dtype == np.int32
  assert not coco.features >= {"masks"}


def test_resize_and_pad_scales_the_longer_side_and_pads_bottom_right():
  example = datasets.record_format("coco/2017").to_example(_coco_record(), frozenset())
  resized = transforms.resize_and_pad(example, 64)
  assert resized["image"].shape == (64, 64, 3)
  assert np.all(resized["image"][:32] == 200) and not resized["image"][32:].any()
  np.testing.assert_allclose(resized["boxes"], [[32, 8, 64, 24], [0, 0, 12.8, 3.2]], rtol=1e-6)
  np.testing.assert_allclose(resized["area"], [800 * 0.64, 32 * 0.64], rtol=1e-6)
  assert transforms.resize_and_pad(resized, 64) is resized


def test_unknown_dataset_family_is_an_error():
  with pytest.raises(ValueError, match="no record format.*shapes"):
    datasets.record_format("imagenet2012")
