"""The real TFDS datasets the configs name (coco/2017, voc/2012, mnist, cifar10), mocked.

How: ``tfds.testing.mock_data(policy=USE_FILES, data_dir=...)`` patches
``read_only_builder.builder_from_files`` and ``DatasetBuilder.as_data_source`` (the TF-free
array_record reading the ``tfds:`` source does), so no record is read from disk. It needs the
dataset's prepared metadata (``dataset_info.json``, ``features.json``, label files) in
``data_dir``, which the pip package does not ship: :func:`_write_metadata` writes it from the
dataset's own TFDS builder code (mnist, cifar10 and voc describe themselves without
TensorFlow; coco's ``_info`` names ``tf.int64`` once, patched to numpy's).

mock_data's default random records (used as is for mnist and cifar10) draw each feature's
length independently (``objects/bbox`` 15 boxes beside ``objects/label`` 11 labels) and each
box corner independently (ymin > ymax half the time), which no real detection dataset holds.
So coco and voc records come from ``as_data_source_fn``: the same TFDS random generator over
the real features, every object field cut to one count and each box's corners ordered.
"""

from __future__ import annotations

import importlib
import pathlib
import types

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh
from PIL import Image
from tensorflow_datasets.object_detection import coco as tfds_coco
from tensorflow_datasets.testing import mocking

from jaxvision import data, parallel, trainer
from jaxvision.data import prepare
from jaxvision.tasks import base

import configs.faster_rcnn_coco as coco_config
import configs.faster_rcnn_shapes as shapes_detection_config
import configs.simclr_cifar10 as simclr_config

_EVERYTHING = frozenset(data.FEATURES)
_NUM_EXAMPLES = 4  # mocked records per split
# Split sizes written in the metadata (the real datasets' split names): ids of datasets
# without image/id count positions over the sorted splits, so a split's first id is the
# sizes of the splits before it.
_SPLITS = {"train": 6, "validation": 3, "test": 2}
_TRAIN_TEST = {"train": 6, "test": 2}  # mnist, cifar10


def _coco_builder(data_dir: str, monkeypatch) -> tfds.core.DatasetBuilder:
  """TFDS's coco/2017 builder; its ``_info`` spells one dtype ``tf.int64`` (no TF here)."""
  monkeypatch.setattr(tfds_coco, "tf", types.SimpleNamespace(int64=np.int64))
  builder = tfds.builder("coco/2017", data_dir=data_dir, file_format="array_record")
  builder.info.features["objects"]["label"].names = [f"category {i}" for i in range(80)]
  return builder


def _write_metadata(builder: tfds.core.DatasetBuilder, splits: dict[str, int]) -> None:
  """Writes what ``tfds build --file_format=array_record`` writes besides the records."""
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0,
                          filename_template=tfds.core.ShardedFileTemplate(
                              data_dir=builder.data_dir, dataset_name=builder.name,
                              split=split, filetype_suffix="array_record"))
      for split, size in splits.items()]))
  pathlib.Path(builder.data_dir).mkdir(parents=True)
  builder.info.write_to_directory(builder.data_dir)


class _ConsistentObjects:
  """Records of TFDS's random generator, each with one object count and ordered corners."""

  def __init__(self, features: tfds.features.FeaturesDict, seed: int):
    self._generator = mocking.RandomFakeGenerator(features, _NUM_EXAMPLES, seed=seed)

  def __len__(self) -> int:
    return _NUM_EXAMPLES

  def __getitem__(self, index: int) -> dict:
    record = self._generator[index]
    objects = record["objects"]
    count = min(len(values) for values in objects.values())
    objects = {name: values[:count] for name, values in objects.items()}
    bbox = objects["bbox"]
    objects["bbox"] = np.concatenate([np.minimum(bbox[:, :2], bbox[:, 2:]),
                                      np.maximum(bbox[:, :2], bbox[:, 2:])], axis=1)
    return {**record, "objects": objects}


def _consistent_data_source(builder, split, **kwargs):
  """``as_data_source_fn``: replaces ``DatasetBuilder.as_data_source``."""
  del kwargs
  return _ConsistentObjects(builder.info.features, seed=sorted(_SPLITS).index(split))


def _mocked(data_dir: str, detection: bool):
  return tfds.testing.mock_data(
      num_examples=_NUM_EXAMPLES, policy=tfds.testing.MockPolicy.USE_FILES, data_dir=data_dir,
      as_data_source_fn=_consistent_data_source if detection else None)


@pytest.fixture
def coco_dir(tmp_path, monkeypatch) -> str:
  _write_metadata(_coco_builder(str(tmp_path), monkeypatch), _SPLITS)
  with _mocked(str(tmp_path), detection=True):
    yield str(tmp_path)


def _prepared(name: str, data_dir: pathlib.Path) -> str:
  splits = _SPLITS if name == "voc/2012" else _TRAIN_TEST
  _write_metadata(tfds.builder(name, data_dir=str(data_dir), file_format="array_record"),
                  splits)
  return str(data_dir)


@pytest.fixture
def voc_dir(tmp_path) -> str:
  with _mocked(_prepared("voc/2012", tmp_path), detection=True):
    yield str(tmp_path)


@pytest.fixture
def cifar10_dir(tmp_path) -> str:
  with _mocked(_prepared("cifar10", tmp_path), detection=False):
    yield str(tmp_path)


def _examples(source: data.DataSource, split: str) -> list[tuple[dict, dict]]:
  records = source.records(split)
  assert len(records) == _NUM_EXAMPLES
  return [(records[i], source.to_example(records[i], _EVERYTHING)) for i in range(len(records))]


def _check_objects(record: dict, example: dict) -> None:
  """Boxes are the record's normalized (ymin, xmin, ymax, xmax) as absolute x1, y1, x2, y2."""
  height, width = record["image"].shape[:2]
  ymin, xmin, ymax, xmax = np.asarray(record["objects"]["bbox"]).T
  count = len(ymin)
  assert count > 0
  np.testing.assert_allclose(
      example["boxes"], np.stack([xmin * width, ymin * height, xmax * width, ymax * height], 1),
      rtol=1e-6)
  assert example["boxes"].dtype == np.float32 and example["boxes"].shape == (count, 4)
  assert np.all(example["boxes"][:, 2:] >= example["boxes"][:, :2])
  assert np.all(example["boxes"][:, 2] <= width) and np.all(example["boxes"][:, 3] <= height)
  np.testing.assert_array_equal(example["labels"], record["objects"]["label"])
  assert example["labels"].dtype == np.int32 and example["area"].dtype == np.float32
  assert example["area"].shape == (count,)


# --- the sources: real features -> the example contract ---------------------------------
def test_coco_2017_objects_become_absolute_xyxy_boxes(coco_dir):
  source = data.get_source(data.data_config(name="coco/2017", data_dir=coco_dir))
  assert source.splits == ("test", "train", "validation")
  assert source.metadata.class_names == tuple(f"category {i}" for i in range(80))
  assert source.metadata.channels == 3
  assert source.metadata.features == {"image", "boxes", "labels", "area", "is_crowd"}
  for record, example in _examples(source, "validation"):
    assert example["image"].dtype == np.uint8 and example["image"].shape[2] == 3
    _check_objects(record, example)
    assert example["image_id"] == record["image/id"] and example["image_id"].dtype == np.int32
    # COCO stores each object's (mask) area; it is kept, not recomputed from the box.
    np.testing.assert_array_equal(example["area"], record["objects"]["area"])
    np.testing.assert_array_equal(example["is_crowd"], record["objects"]["is_crowd"])
    assert example["is_crowd"].dtype == np.bool_


def test_voc_2012_objects_and_positional_ids(voc_dir):
  source = data.get_source(data.data_config(name="tfds:voc/2012", data_dir=voc_dir))
  assert source.splits == ("test", "train", "validation")
  assert source.metadata.class_names[:3] == ("aeroplane", "bicycle", "bird")
  assert len(source.metadata.class_names) == 20 and source.metadata.channels == 3
  # No crowd flag, no stored area (the box area), no image-level label (VOC's "labels" is a
  # sequence), no segmentation: fcn_voc reads VOC's masks from the tarball instead.
  assert source.metadata.features == {"image", "boxes", "labels", "area"}
  for position, (record, example) in enumerate(_examples(source, "train")):
    _check_objects(record, example)
    boxes = example["boxes"]
    np.testing.assert_allclose(example["area"], np.prod(boxes[:, 2:] - boxes[:, :2], axis=1),
                               rtol=1e-6)
    assert "is_crowd" not in example and "label" not in example
    assert example["image_id"] == _SPLITS["test"] + position  # after the test split


@pytest.mark.parametrize("name, shape, first_id", [("mnist", (28, 28, 1), _SPLITS["test"]),
                                                   ("cifar10", (32, 32, 3), _SPLITS["test"])])
def test_classification_datasets(name, shape, first_id, tmp_path):
  with _mocked(_prepared(name, tmp_path), detection=False):
    source = data.get_source(data.data_config(name=f"tfds:{name}", data_dir=str(tmp_path)))
    assert source.splits == ("test", "train")
    assert len(source.metadata.class_names) == 10
    assert source.metadata.channels == shape[2]
    assert source.metadata.features == {"image", "label"}
    for position, (record, example) in enumerate(_examples(source, "train")):
      assert example.keys() == {"image", "image_id", "label"}
      assert example["image"].shape == shape and example["image"].dtype == np.uint8
      np.testing.assert_array_equal(example["image"], record["image"])
      assert example["label"] == record["label"] and example["label"].dtype == np.int32
      assert example["image_id"] == first_id + position


def test_objects_of_different_lengths_are_named(voc_dir):
  """mock_data's default records (each field its own length) are refused, not misaligned."""
  source = data.get_source(data.data_config(name="tfds:voc/2012", data_dir=voc_dir))
  record = source.records("train")[0]
  objects = {**record["objects"], "label": record["objects"]["label"][:-1]}
  with pytest.raises(ValueError, match="voc/2012.*image 2 has per-object features of "
                                       "different lengths"):
    source.to_example({**record, "objects": objects}, _EVERYTHING)


def test_image_with_other_channels_is_named(coco_dir):
  source = data.get_source(data.data_config(name="coco/2017", data_dir=coco_dir))
  record = source.records("train")[0]
  cmyk = np.zeros(record["image"].shape[:2] + (4,), np.uint8)
  with pytest.raises(ValueError, match=r"image \d+ decodes to shape .*4\), not \[H, W, 3\]"):
    source.to_example({**record, "image": cmyk}, _EVERYTHING)


# --- the configs that name them: one train step on the mocked data ------------------------
def _one_train_step(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = base.get_task(config, mesh)
  batch = task.train_batch(0)
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  _, metrics = trainer.make_train_step(task, config)(state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))
  return batch


def test_faster_rcnn_coco_trains_on_coco_2017(coco_dir):
  config = coco_config.get_config()
  assert config.data.name == "coco/2017"
  size = 64  # the recipe's 1024 px and ResNet-50 compile for minutes on CPU: the quick sizes
  config.data.update(data_dir=coco_dir, image_size=size)
  config.batch_size = 2
  config.model.update(backbone="resnet_tiny", fpn_channels=16, box_head_hidden=32,
                      rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                      roi_samples_per_image=32, detection_candidates=100)
  config.data_proposals.num_proposals = 50
  batch = _one_train_step(config)
  assert batch["image"].shape == (2, size, size, 3)
  assert batch["boxes"].shape == (2, config.data.max_boxes, 4)
  boxes = batch["boxes"][batch["box_valid"]]
  assert len(boxes) >= 2 * 5  # mock_data draws >= 5 objects per image
  assert np.all(boxes >= 0) and np.all(boxes <= size)
  assert batch["is_crowd"].dtype == np.bool_


def test_voc_2012_detection_batches(voc_dir):
  """No config names voc/2012 (fcn_voc needs masks TFDS lacks); a detection config reads it."""
  config = shapes_detection_config.get_config("quick")
  size = config.data.image_size
  config.data.update(name="tfds:voc/2012", data_dir=voc_dir, max_boxes=64,
                     features=("image", "boxes", "labels", "area"))
  config.model.num_classes = 20
  config.batch_size = 2
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = base.get_task(config, mesh)
  batch = task.train_batch(0)
  task.validate_batch(batch)
  assert batch["image"].shape == (2, size, size, 3) and batch["boxes"].shape == (2, 64, 4)
  boxes, labels = batch["boxes"][batch["box_valid"]], batch["labels"][batch["box_valid"]]
  assert len(boxes) >= 2 * 5 and np.all(boxes >= 0) and np.all(boxes <= size)
  assert np.all((labels >= 0) & (labels < 20))
  assert "is_crowd" not in batch


@pytest.mark.parametrize("config_name", ["pixelcnn_mnist", "vae_mnist", "pixelcnn_cifar10",
                                         "pixelrnn_cifar10", "vae_cifar10"])
def test_likelihood_configs_train_on_their_dataset(config_name, tmp_path):
  config = importlib.import_module(f"configs.{config_name}").get_config("quick")
  tfds_name = config.data.name.removeprefix("tfds:")
  assert tfds_name in ("mnist", "cifar10")
  config.data.data_dir = _prepared(tfds_name, tmp_path)
  config.batch_size = 4
  with _mocked(config.data.data_dir, detection=False):
    batch = _one_train_step(config)
  assert batch["image"].shape == (4,) + ((28, 28, 1) if tfds_name == "mnist" else (32, 32, 3))


def test_simclr_cifar10_trains_on_cifar10(cifar10_dir):
  config = simclr_config.get_config()
  assert config.data.name == "tfds:cifar10"
  config.data.data_dir = cifar10_dir
  config.batch_size = 4
  config.model.update(backbone="resnet_tiny", hidden=32, projection_dim=16)
  config.model.backbone_kwargs.width = 8
  batch = _one_train_step(config)
  assert batch["views"].shape == (4, 2, 32, 32, 3)


# --- an unprepared dataset says which, where, and how to prepare it ----------------------
_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"
# Every config whose default variant reads a TFDS dataset (every config file is loaded, so
# new ones are covered; a helper such as generative.mnist_data_config may set the name).
_TFDS_CONFIGS = sorted(
    path.stem for path in _CONFIG_DIR.glob("*.py")
    if importlib.import_module(f"configs.{path.stem}").get_config().data.name.startswith(
        ("tfds:", "coco/")))


def test_the_configs_naming_tfds_datasets_are_found():
  assert {"faster_rcnn_coco", "pixelcnn_mnist", "vae_mnist", "simclr_cifar10"} <= set(
      _TFDS_CONFIGS)


@pytest.mark.parametrize("config_name", _TFDS_CONFIGS)
def test_config_on_an_unprepared_dataset_says_how_to_prepare_it(config_name, tmp_path):
  config = importlib.import_module(f"configs.{config_name}").get_config()
  tfds_name = config.data.name.removeprefix("tfds:")
  data_dir = tmp_path / "tensorflow_datasets"
  config.data.data_dir = str(data_dir)
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  with pytest.raises(ValueError) as error:
    trainer.train_and_evaluate(config, str(tmp_path / "workdir"), mesh=mesh)
  message = str(error.value)
  assert f"TFDS dataset {tfds_name!r} is not prepared in {data_dir}" in message
  assert f"python -m jaxvision.data.prepare {tfds_name} --data_dir={data_dir}" in message
  assert (f"tfds build {tfds_name} --file_format=array_record --data_dir={data_dir}"
          in message)
  assert "jaxvision[prepare]" in message


def test_tfds_data_dir_is_the_fallback_data_dir(monkeypatch, tmp_path):
  """Where ``tfds build`` writes with ``$TFDS_DATA_DIR`` set is read; ours comes first."""
  monkeypatch.delenv("JAXVISION_DATA_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds_env"))
  with pytest.raises(ValueError, match=f"is not prepared in {tmp_path}/tfds_env "):
    data.get_source(data.data_config(name="tfds:mnist"))
  monkeypatch.setenv("JAXVISION_DATA_DIR", str(tmp_path / "ours"))
  with pytest.raises(ValueError, match=f"is not prepared in {tmp_path}/ours "):
    data.get_source(data.data_config(name="tfds:mnist"))


# --- preparing: jaxvision.data.prepare ----------------------------------------------------
class JaxvisionTestPrepared(tfds.core.GeneratorBasedBuilder):
  """Registered (``prepare`` takes names), 6 x 10 RGB images with ids and one object."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test data."}
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(6, 10, 3)),
        "image/id": np.int64,
        "objects": tfds.features.Sequence({"bbox": tfds.features.BBoxFeature(),
                                           "label": tfds.features.ClassLabel(num_classes=2)}),
    }))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for index in range(2):
      image = Image.fromarray(np.full((6, 10, 3), 40 * index, np.uint8))  # PIL: no TF
      yield index, {"image": image, "image/id": 7 + index, "objects": {
          "bbox": [tfds.features.BBox(0.5, 0.0, 1.0, 0.5)], "label": [index]}}


def test_prepare_writes_what_the_source_reads(monkeypatch, tmp_path, capsys):
  monkeypatch.setenv("JAXVISION_DATA_DIR", str(tmp_path))  # the default: where training looks
  prepare.main(["jaxvision_test_prepared"])
  assert "jaxvision_test_prepared/1.0.0 {'train': 2}" in capsys.readouterr().out
  source = data.get_source(data.data_config(name="tfds:jaxvision_test_prepared"))
  example = source.to_example(source.records("train")[1], _EVERYTHING)
  assert example["image_id"] == 8 and example["image"][0, 0, 0] == 40
  np.testing.assert_allclose(example["boxes"], [[0.0, 3.0, 5.0, 6.0]])


def test_prepare_without_tensorflow_says_what_to_install(monkeypatch, tmp_path):
  def needs_tensorflow(self, **kwargs):
    raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

  monkeypatch.setattr(JaxvisionTestPrepared, "download_and_prepare", needs_tensorflow)
  with pytest.raises(ModuleNotFoundError, match=r"'jaxvision_test_prepared'.*TensorFlow: pip "
                                                r"install -e '\.\[prepare\]'"):
    prepare.prepare("jaxvision_test_prepared", str(tmp_path))
