"""Data sources by name: shapes, TFDS datasets in array_record, .npz arrays, the registry."""

import json
import os
import pathlib
import pickle
import shutil

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxvision import data
from jaxvision.data import datasets, shapes, sources

_EVERYTHING = frozenset(data.FEATURES)


# --- shapes ------------------------------------------------------------------------------
def test_shapes_source_metadata(single_config):
  source = data.get_source(single_config)
  assert source.splits == ("train", "validation", "test")
  assert source.metadata.class_names == shapes.CLASS_NAMES
  assert source.metadata.channels == 3
  assert source.metadata.features == _EVERYTHING
  np.testing.assert_array_equal(source.metadata.keypoint_flip_permutation(4), [0, 3, 2, 1])
  assert [len(source.records(split)) for split in source.splits] == [60, 13, 7]


def test_shapes_examples_are_the_stored_records(multi_config):
  source = data.get_source(multi_config)
  record = source.records("validation")[4]
  objects = record["objects"]
  example = source.to_example(record, _EVERYTHING)
  instance_map = record["instance_map"]
  num_objects = len(objects["label"])
  expected = {
      "image": record["image"], "image_id": 4, "boxes": objects["box"],
      "labels": objects["label"], "keypoints": objects["keypoints"], "area": objects["area"],
      "is_crowd": objects["is_crowd"],
      "masks": np.stack([instance_map == i + 1 for i in range(num_objects)]),
      "semantic": np.where(instance_map > 0,
                           objects["label"][np.maximum(instance_map.astype(int) - 1, 0)] + 1, 0),
      "label": objects["label"][np.argmax(objects["area"])],
  }
  assert example.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_array_equal(example[name], value, err_msg=name)
  assert example["masks"].dtype == np.uint8 and example["semantic"].dtype == np.int32
  assert example["label"].dtype == np.int32 and example["image_id"].dtype == np.int32
  # Costly features only when wanted.
  assert "masks" not in source.to_example(record, frozenset({"image", "boxes"}))


def test_shapes_label_is_the_class_of_the_largest_visible_object(multi_config):
  source = data.get_source(multi_config)
  records = source.records("train")
  not_first = not_last = 0
  for index in range(len(records)):
    objects = records[index]["objects"]
    label = source.to_example(records[index], frozenset({"label"}))["label"]
    assert label == objects["label"][np.argmax(objects["area"])]
    not_first += label != objects["label"][0]
    not_last += label != objects["label"][-1]
  assert not_first and not_last  # neither the first- nor the last-drawn rule would pass

  record = records[0]
  tied = dict(record, objects=dict(record["objects"],
                                   area=np.ones_like(record["objects"]["area"])))
  assert source.to_example(tied, frozenset({"label"}))["label"] == record["objects"]["label"][0]
  empty = dict(record, objects={name: value[:0] for name, value in record["objects"].items()})
  with pytest.raises(ValueError, match="no objects.*min_objects"):
    source.to_example(empty, frozenset({"label"}))


# --- arrays ------------------------------------------------------------------------------
def _arrays_config(path, splits, **overrides):
  return data.data_config(name="arrays", path=str(path), splits=splits, **overrides)


def _save(tmp_path, name="arrays.npz", **arrays):
  path = tmp_path / name
  np.savez(path, **arrays)
  return path


def _gray_images(count=10, height=5, width=7):
  return (np.arange(count * height * width) % 251).astype(np.uint8).reshape(count, height, width)


def test_arrays_grayscale_with_index_splits(tmp_path):
  images, labels = _gray_images(), np.array([0, 1, 2, 0, 1, 2, 0, 1, 4, 0])
  path = _save(tmp_path, images=images, labels=labels)
  source = data.get_source(_arrays_config(path, {"train": [0, 6], "validation": [6, 10]}))
  assert source.splits == ("train", "validation")
  assert source.metadata.channels == 1
  assert source.metadata.features == {"image", "label"}
  assert source.metadata.class_names == tuple(f"class {i}" for i in range(5))
  validation = source.records("validation")
  assert len(source.records("train")) == 6 and len(validation) == 4
  example = source.to_example(grain.MapDataset.source(validation)[1], _EVERYTHING)
  assert example.keys() == {"image", "image_id", "label"}
  assert example["image"].shape == (5, 7, 1) and example["image"].dtype == np.uint8
  np.testing.assert_array_equal(example["image"][..., 0], images[7])
  assert example["image_id"] == 7 and example["image_id"].dtype == np.int32
  assert example["label"] == 1 and example["label"].dtype == np.int32
  with pytest.raises(IndexError):
    validation[4]
  reloaded = pickle.loads(pickle.dumps(validation))  # grain may ship sources to workers
  np.testing.assert_array_equal(reloaded[3]["image"], validation[3]["image"])


def test_arrays_rgb_with_fractional_splits(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (10, 4, 6, 3), dtype=np.uint8)
  path = _save(tmp_path, images=images)
  source = data.get_source(_arrays_config(path, {"train": [0.0, 0.8], "test": [0.8, 1.0]}))
  assert source.metadata.channels == 3
  assert source.metadata.features == {"image"} and source.metadata.class_names == ()
  test = source.records("test")
  assert len(source.records("train")) == 8 and len(test) == 2
  examples = [source.to_example(test[i], _EVERYTHING) for i in range(2)]
  assert [int(example["image_id"]) for example in examples] == [8, 9]
  np.testing.assert_array_equal(examples[1]["image"], images[9])
  assert "label" not in examples[0]
  with pytest.raises(ValueError, match="Unknown split 'validation'.*'test', 'train'"):
    source.records("validation")


def test_arrays_semantic_maps_become_the_semantic_feature(tmp_path):
  images = _gray_images(count=4)
  semantic = np.arange(4 * 5 * 7).reshape(4, 5, 7).astype(np.uint8) % 3
  semantic[1, 0, 0] = 255  # void
  path = _save(tmp_path, images=images, semantic=semantic)
  source = data.get_source(_arrays_config(path, {"train": [0, 2], "validation": [2, 4]}))
  assert source.metadata.features == {"image", "semantic"}
  example = source.to_example(source.records("train")[1], _EVERYTHING)
  assert example["semantic"].dtype == np.int32 and example["semantic"][0, 0] == 255
  np.testing.assert_array_equal(example["semantic"], semantic[1])
  bad = _save(tmp_path, "bad.npz", images=images, semantic=semantic[:, :4])
  with pytest.raises(ValueError, match=r"'semantic' must be integer class maps \[N, H, W\]"):
    data.get_source(_arrays_config(bad, {"train": [0, 4]}))


def test_arrays_class_names_from_the_file_then_the_config_then_numbers(tmp_path):
  labels = np.array([0, 1, 1, 0])
  images = _gray_images(count=4)
  splits = {"train": [0, 4]}
  named = _save(tmp_path, "named.npz", images=images, labels=labels,
                class_names=np.array(["cat", "dog"]))
  unnamed = _save(tmp_path, "unnamed.npz", images=images, labels=labels)
  from_file = data.get_source(_arrays_config(named, splits, class_names=("x", "y")))
  from_config = data.get_source(_arrays_config(unnamed, splits, class_names=("x", "y")))
  numbered = data.get_source(_arrays_config(unnamed, splits))
  assert from_file.metadata.class_names == ("cat", "dog")
  assert from_config.metadata.class_names == ("x", "y")
  assert numbered.metadata.class_names == ("class 0", "class 1")
  with pytest.raises(ValueError, match="data.class_names names 1 classes.*label 1"):
    data.get_source(_arrays_config(unnamed, splits, class_names=("x",)))


_GOOD_SPLITS = {"train": [0, 4]}


@pytest.mark.parametrize("arrays, splits, message", [
    (None, _GOOD_SPLITS, "does not exist"),
    (dict(pictures=_gray_images(4)), _GOOD_SPLITS, "no 'images' array.*pictures"),
    (dict(images=_gray_images(4).astype(np.float32)), _GOOD_SPLITS, "must be uint8"),
    (dict(images=_gray_images(4)[:, 0]), _GOOD_SPLITS, r"\[N, H, W\].*\(4, 7\)"),
    (dict(images=np.zeros((4, 5, 7, 4), np.uint8)), _GOOD_SPLITS, r"C = 1 or 3.*\(4, 5, 7, 4\)"),
    (dict(images=_gray_images(4), labels=np.zeros(3, int)), _GOOD_SPLITS, "N = 4"),
    (dict(images=_gray_images(4), labels=np.array([0, 1, -1, 0])), _GOOD_SPLITS, "0-based"),
    (dict(images=_gray_images(4), labels=np.zeros(4)), _GOOD_SPLITS, "integers"),
    (dict(images=_gray_images(4)), {}, "data.splits is empty"),
    (dict(images=_gray_images(4)), {"train": [0, 5]}, r"train is \[0, 5\).*4 images"),
    (dict(images=_gray_images(4)), {"train": [2, 2]}, r"train is \[2, 2\)"),
    (dict(images=_gray_images(4)), {"train": [0.0, 0.1]}, r"train is \[0, 0\)"),
    (dict(images=_gray_images(4)), {"train": [0.5, 1.5]}, r"fractions must be in \[0, 1\]"),
    (dict(images=_gray_images(4)), {"train": [0, 1.0]}, "two indices"),
])
def test_arrays_errors_name_the_problem(tmp_path, arrays, splits, message):
  path = tmp_path / "missing.npz" if arrays is None else _save(tmp_path, **arrays)
  with pytest.raises(ValueError, match=message):
    data.get_source(_arrays_config(path, splits))


def test_arrays_needs_a_path():
  with pytest.raises(ValueError, match="data.path is not set"):
    data.get_source(data.data_config(name="arrays", splits=_GOOD_SPLITS))


# --- tfds --------------------------------------------------------------------------------
def _digit_image(split: str, index: int) -> np.ndarray:
  return (np.arange(64).reshape(8, 8) + 3 * index + (100 if split == "test" else 0)
          ).astype(np.uint8)


# Boxes of the detection dataset: normalized (ymin, xmin, ymax, xmax) on 12 x 16 images, and
# the same boxes as absolute (x1, y1, x2, y2) pixels.
_NORMALIZED_BOXES = [(0.25, 0.5, 0.75, 1.0), (0.0, 0.0, 0.5, 0.25)]
_PIXEL_BOXES = [(8.0, 3.0, 16.0, 9.0), (0.0, 0.0, 4.0, 6.0)]


class JaxvisionTestDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """8 x 8 grey images with an image-level ClassLabel; no ids."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test data."}
  code_path = None  # no checksums file to look up

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 1)),
            "label": tfds.features.ClassLabel(names=["zero", "one", "two"]),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples("train", 5),
            "test": self._generate_examples("test", 3)}

  def _generate_examples(self, split, count):
    for index in range(count):
      # A PIL image is PNG-encoded by PIL; a numpy one would need TensorFlow.
      yield index, {"image": Image.fromarray(_digit_image(split, index)), "label": index % 3}


class JaxvisionTestDetection(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """12 x 16 RGB images with ids, an image-level label and objects (no stored area)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test data."}
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, disable_shuffling=True,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 16, 3)),
            "image/id": np.int64,
            "label": tfds.features.ClassLabel(names=["indoor", "outdoor"]),
            "objects": tfds.features.Sequence({
                "bbox": tfds.features.BBoxFeature(),
                "label": tfds.features.ClassLabel(names=["cat", "dog", "bird"]),
                "is_crowd": np.bool_,
            }),
        }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"validation": self._generate_examples()}

  def _generate_examples(self):
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    boxes = [tfds.features.BBox(*box) for box in _NORMALIZED_BOXES]
    yield 0, {"image": Image.fromarray(image), "image/id": 1000, "label": 1,
              "objects": {"bbox": boxes, "label": [2, 0], "is_crowd": [False, True]}}
    yield 1, {"image": Image.fromarray(image), "image/id": 1001, "label": 0,
              "objects": {"bbox": [], "label": [], "is_crowd": []}}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory) -> str:
  directory = str(tmp_path_factory.mktemp("tfds"))
  for builder_class in (JaxvisionTestDigits, JaxvisionTestDetection):
    builder_class(data_dir=directory, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return directory


def test_tfds_classification_dataset(tfds_dir):
  source = data.get_source(data.data_config(name="tfds:jaxvision_test_digits",
                                            data_dir=tfds_dir))
  assert source.splits == ("test", "train")
  assert source.metadata.class_names == ("zero", "one", "two")
  assert source.metadata.channels == 1
  assert source.metadata.features == {"image", "label"}
  train = grain.MapDataset.source(source.records("train"))
  assert len(train) == 5
  example = source.to_example(train[4], _EVERYTHING)
  assert example.keys() == {"image", "image_id", "label"}
  np.testing.assert_array_equal(example["image"], _digit_image("train", 4)[..., None])
  assert example["label"] == 1 and example["label"].dtype == np.int32
  # No stored ids: position in the split after the 3 test images, so unique across splits.
  test = source.records("test")
  ids = [int(source.to_example(test[i], _EVERYTHING)["image_id"]) for i in range(3)]
  assert ids + [int(example["image_id"])] == [0, 1, 2, 7]
  versioned = data.get_source(data.data_config(name="tfds:jaxvision_test_digits:1.0.0",
                                               data_dir=tfds_dir))
  assert versioned.metadata == source.metadata


def test_tfds_detection_dataset(tfds_dir):
  source = data.get_source(data.data_config(name="tfds:jaxvision_test_detection",
                                            data_dir=tfds_dir))
  assert source.splits == ("validation",)
  assert source.metadata.class_names == ("cat", "dog", "bird")  # the objects', not the image's
  assert source.metadata.channels == 3
  assert source.metadata.features == {"image", "label", "boxes", "labels", "area", "is_crowd"}
  records = source.records("validation")
  example = source.to_example(records[0], _EVERYTHING)
  assert example["image"].shape == (12, 16, 3)
  assert example["image_id"] == 1000 and example["label"] == 1
  np.testing.assert_allclose(example["boxes"], _PIXEL_BOXES)
  np.testing.assert_array_equal(example["labels"], [2, 0])
  np.testing.assert_allclose(example["area"], [48.0, 24.0])
  np.testing.assert_array_equal(example["is_crowd"], [False, True])
  assert {name: example[name].dtype for name in ("boxes", "labels", "area", "is_crowd")} == {
      "boxes": np.float32, "labels": np.int32, "area": np.float32, "is_crowd": np.bool_}
  empty = source.to_example(records[1], _EVERYTHING)
  assert empty["image_id"] == 1001
  assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == empty["area"].shape == (0,)


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path):
  command = f"tfds build mnist --file_format=array_record --data_dir={tmp_path}"
  with pytest.raises(ValueError, match="never downloads") as error:
    data.get_source(data.data_config(name="tfds:mnist", data_dir=str(tmp_path)))
  assert command in str(error.value)


def test_bare_coco_name_is_the_tfds_dataset(tmp_path):
  with pytest.raises(ValueError, match="tfds build coco/2017 --file_format=array_record"):
    data.get_source(data.data_config(name="coco/2017", data_dir=str(tmp_path)))


def test_tfds_dataset_in_tfrecord_is_refused(tfds_dir, tmp_path):
  shutil.copytree(os.path.join(tfds_dir, "jaxvision_test_digits"),
                  tmp_path / "jaxvision_test_digits")
  info_path = tmp_path / "jaxvision_test_digits" / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info["fileFormat"] = "tfrecord"
  info_path.write_text(json.dumps(info))
  with pytest.raises(ValueError, match="(?s)stored as tfrecord.*--file_format=array_record"):
    data.get_source(data.data_config(name="tfds:jaxvision_test_digits",
                                     data_dir=str(tmp_path)))


def _write_prepared_metadata(builder: tfds.core.DatasetBuilder,
                             split_sizes: dict[str, int]) -> None:
  """Writes the metadata of a prepared dataset (its info, its splits), without records."""
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0,
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir=builder.data_dir, dataset_name=builder.name,
                              split=split, filetype_suffix="array_record"))
      for split, size in split_sizes.items()]))
  pathlib.Path(builder.data_dir).mkdir(parents=True)
  builder.info.write_to_directory(builder.data_dir)


def test_mocked_mnist(tmp_path):
  """Real mnist features through ``tfds.testing.mock_data``'s random records.

  ``mock_data`` mocks ``as_data_source`` (array_record), but the pip package ships no
  metadata files, so the mnist metadata is written here from its (TF-free) builder code.
  """
  _write_prepared_metadata(
      tfds.builder("mnist", data_dir=str(tmp_path), file_format="array_record"),
      {"train": 6, "test": 3})
  with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    source = data.get_source(data.data_config(name="tfds:mnist", data_dir=str(tmp_path)))
    assert source.metadata.class_names == tuple(str(digit) for digit in range(10))
    assert source.metadata.channels == 1 and source.metadata.features == {"image", "label"}
    records = source.records("train")
    examples = [source.to_example(records[i], _EVERYTHING) for i in range(len(records))]
  assert len(examples) == 4
  for position, example in enumerate(examples):
    assert example["image"].shape == (28, 28, 1) and example["image"].dtype == np.uint8
    assert 0 <= example["label"] < 10
    assert example["image_id"] == 3 + position  # after the 3 test images


# --- registry and config ------------------------------------------------------------------
def test_unknown_source_lists_the_registered_ones():
  with pytest.raises(ValueError,
                     match=r"'nonesuch'.*'arrays', 'coco_json', 'shapes', 'tfds:<argument>'"):
    data.get_source(data.data_config(name="nonesuch"))


def test_registered_sources_are_found_by_name(monkeypatch):
  monkeypatch.setattr(sources, "_FACTORIES", dict(sources._FACTORIES))
  made = []

  @data.register_source("mine:")
  def make_mine(data_config):
    made.append(data_config.name)
    return "a source"

  assert data.get_source(data.data_config(name="mine:7")) == "a source"
  assert made == ["mine:7"]
  with pytest.raises(ValueError, match="Unknown data source 'mine:'"):
    data.get_source(data.data_config(name="mine:"))  # the argument is missing
  with pytest.raises(ValueError, match="already registered"):
    data.register_source("mine:")(make_mine)


def test_data_config_fields():
  config = data.data_config()
  assert config.name == "shapes" and config.path is None and not config.splits
  assert config.class_names == () and config.channels == 3 and config.ignore_label == 255
  # The default normalization is the former fixed (x / 255 - 0.5) / 0.25.
  pixels = np.array([0, 64, 255])
  for mean, std in zip(config.mean, config.std):
    np.testing.assert_allclose((pixels / 255 - mean) / std, (pixels / 255 - 0.5) / 0.25)
  assert data.shapes_data_config(num_train=5).num_train == 5
  arrays = data.data_config(name="arrays", splits={"train": [0.0, 0.5]})
  assert list(arrays.splits["train"]) == [0.0, 0.5]
  with pytest.raises(ValueError, match=r"Unknown data config field\(s\) \['colour'\]"):
    data.data_config(colour=1)
  assert "label" in datasets.FEATURES
