"""Data sources by name: where the records of ``config.data.name`` come from.

A :class:`DataSource` gives, per split, a grain random-access source of records
(:meth:`DataSource.records`: ``len`` and ``[i]``, what ``grain.MapDataset.source`` takes)
and maps each record to the dataset-independent example of ``jaxvision.data.datasets``
(:meth:`DataSource.to_example`). Its :class:`SourceMetadata` says what it can provide.
:func:`get_source` picks the source from ``data.name``:

* ``"shapes"``: the embedded synthetic shapes (built locally on first use, file-locked).
* ``"tfds:<name>"`` (``"tfds:mnist"``, ``"tfds:coco/2017"``, ``"tfds:mnist:3.0.1"``): a TFDS
  dataset already prepared with ``file_format="array_record"`` in ``data.data_dir``. Its
  example mapping follows the dataset's declared features, not its name. jaxvision never
  downloads: prepare it with ``python -m jaxvision.data.prepare <name>`` (``data/prepare.py``;
  ``tfds build <name> --file_format=array_record``) where TensorFlow is installed. Bare
  COCO names (``"coco/2017"``) mean ``"tfds:coco/2017"``.
* ``"arrays"``: images (and labels) in an ``.npz`` file, split by index ranges.
* ``"coco_json"``: a user's COCO-format json files and image folders, read directly
  (``jaxvision.data.coco_json``).

New sources register a factory with :func:`register_source`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jaxvision.data import datasets
from jaxvision.data import shapes
from jaxvision.data.transforms import Example

SourceFactory = Callable[[ml_collections.ConfigDict], "DataSource"]

# Registered names ending in ":" take an argument: data.name = "tfds:<tfds name>".
_FACTORIES: dict[str, SourceFactory] = {}
# TFDS names data.name accepted without the "tfds:" prefix before sources existed.
_BARE_TFDS_FAMILIES = ("coco",)
# Key of a record's position in its split, added by sources whose records have no id.
_POSITION = "jaxvision/position"


@dataclasses.dataclass(frozen=True)
class SourceMetadata:
  """What a source's examples hold.

  Attributes:
    class_names: Class names, index = label: of the objects for detection datasets, of
      the images otherwise; empty for unlabelled data.
    channels: Channels of the stored images: 1 or 3.
    features: The subset of ``datasets.FEATURES`` its examples can provide.
    keypoint_flip_permutation: ``K -> [K]`` index map of keypoints under a horizontal flip
      (left/right keypoints swap), for sources with keypoints.
    category_ids: The dataset's own id of each class (index = label), for sources whose
      files number classes otherwise (a COCO json's ``category_id``); None: the label.
    semantic_class_names: Names of the ``semantic`` map's values (index = value), for
      sources whose map is not "background" + ``class_names`` (the default, None): shapes
      with stuff, whose map is ``label + 1`` on things and ``C + s`` on stuff ``s`` (index
      0, which no pixel holds there, is named ``"void"``).
    stuff_class_names: The stuff classes ``s = 1..S`` (index ``s - 1``); empty without stuff.
  """

  class_names: tuple[str, ...]
  channels: int
  features: frozenset[str]
  keypoint_flip_permutation: Callable[[int], np.ndarray] | None = None
  category_ids: tuple[int, ...] | None = None
  semantic_class_names: tuple[str, ...] | None = None
  stuff_class_names: tuple[str, ...] = ()

  def __post_init__(self):
    if self.channels not in (1, 3):
      raise ValueError(f"A source's images must have 1 or 3 channels; got {self.channels}.")
    unknown = sorted(self.features - set(datasets.FEATURES))
    if unknown:
      raise ValueError(f"Source features {unknown} are not in datasets.FEATURES "
                       f"{datasets.FEATURES}; add them there with their documentation.")
    if self.category_ids is not None and len(self.category_ids) != len(self.class_names):
      raise ValueError(f"{len(self.category_ids)} category ids for {len(self.class_names)} "
                       "class names; a source gives one id per class.")


class _RecordView:
  """A random-access source: ``[i]`` is ``read(i)`` for ``0 <= i < length``.

  ``read`` is a ``functools.partial`` of a module-level function, so the view pickles
  (grain may send sources to worker processes).
  """

  def __init__(self, length: int, read: Callable[[int], dict[str, Any]]):
    self._length = length
    self._read = read

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self._length:
      raise IndexError(f"Record {index} is outside [0, {self._length}).")
    return self._read(index)


class DataSource(abc.ABC):
  """Records of a dataset's splits and their mapping to examples.

  Attributes:
    name: The ``data.name`` it was made for (named in error messages).
    metadata: What its examples hold.
    splits: Its split names.
  """

  name: str
  metadata: SourceMetadata
  splits: tuple[str, ...]

  def records(self, split: str) -> Sequence[Mapping[str, Any]]:
    """The records of ``split``: a random-access source (``len``, ``[i] -> record``)."""
    if split not in self.splits:
      raise ValueError(f"Unknown split {split!r} of data source {self.name!r}; its splits "
                       f"are {list(self.splits)}.")
    return self._split_records(split)

  @abc.abstractmethod
  def _split_records(self, split: str) -> Sequence[Mapping[str, Any]]:
    """:meth:`records` of a known split."""

  @abc.abstractmethod
  def to_example(self, record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
    """The example (see ``jaxvision.data.datasets``) of one record of :meth:`records`.

    Args:
      record: One record.
      wanted: The features the caller will use; costly ones (masks, semantic maps) are
        built only when wanted, cheap ones may be returned anyway.
    """


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
  """Registers a factory ``data_config -> DataSource`` for ``data.name == name``.

  A name ending in ``":"`` (``"tfds:"``) takes an argument: it matches every
  ``data.name`` of the form ``"<name><argument>"``, and the factory reads the argument
  from ``data_config.name``.
  """
  if ":" in name[:-1]:
    raise ValueError(f"Data source name {name!r} may hold ':' only as its last character.")

  def register(factory: SourceFactory) -> SourceFactory:
    if name in _FACTORIES:
      raise ValueError(f"A data source named {name!r} is already registered; choose another "
                       "name.")
    _FACTORIES[name] = factory
    return factory
  return register


def _registered_name(name: str) -> str | None:
  """The registered name that ``data.name`` selects, or None."""
  if name.split("/")[0] in _BARE_TFDS_FAMILIES:
    name = "tfds:" + name
  prefix, colon, argument = name.partition(":")
  if colon:
    return prefix + colon if argument and prefix + colon in _FACTORIES else None
  return name if name in _FACTORIES else None


def get_source(data_config: ml_collections.ConfigDict) -> DataSource:
  """The data source named by ``data_config.name``, built or prepared as needed."""
  registered = _registered_name(data_config.name)
  if registered is None:
    known = [name + "<argument>" if name.endswith(":") else name for name in sorted(_FACTORIES)]
    raise ValueError(f"Unknown data source {data_config.name!r} (no record format reads it); "
                     f"data.name must be one of {known} (e.g. 'shapes', 'arrays', 'tfds:mnist', "
                     "'tfds:coco/2017').")
  return _FACTORIES[registered](data_config)


# --- shapes ------------------------------------------------------------------------------
def shapes_record_to_example(record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
  """The example of a stored shapes record; masks and the semantic map only when wanted."""
  objects = record["objects"]
  example = {
      "image": record["image"],
      "image_id": np.int32(record["image_id"]),
      "boxes": objects["box"],
      "labels": objects["label"],
      "keypoints": objects["keypoints"],
      "area": objects["area"],
      "is_crowd": objects["is_crowd"],
  }
  if "semantic" in wanted:
    # Records of a dataset with stuff hold its map: things on top of stuff, no background.
    example["semantic"] = shapes.semantic_map(record["instance_map"], objects["label"],
                                              record.get("stuff_map"))
  if "masks" in wanted:
    object_ids = np.arange(1, len(objects["label"]) + 1, dtype=np.uint8)
    example["masks"] = (record["instance_map"][None] == object_ids[:, None, None]
                        ).astype(np.uint8)
  return example


@register_source("shapes")
class ShapesSource(DataSource):
  """The embedded synthetic shapes (``jaxvision.data.shapes``), every feature.

  The image-level ``label`` is the class of the object with the largest visible area (the
  first on ties): the object's class in the single-object configs.
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.name = data_config.name
    self._data_config = data_config
    self.splits = shapes.SPLITS
    stuff_names = shapes.STUFF_NAMES[:data_config.get("stuff_classes", 0)]
    self.metadata = SourceMetadata(
        class_names=shapes.CLASS_NAMES, channels=3, features=frozenset(datasets.FEATURES),
        keypoint_flip_permutation=shapes.keypoint_flip_permutation,
        semantic_class_names=(("void",) + shapes.CLASS_NAMES + stuff_names
                              if stuff_names else None),
        stuff_class_names=stuff_names)

  @functools.cached_property
  def _builder(self) -> shapes.Shapes:
    """Generated on first read, not before: a notebook restoring a model needs no data."""
    return datasets.build_dataset(self._data_config)

  def _split_records(self, split: str) -> Sequence[Mapping[str, Any]]:
    return self._builder.as_data_source(split)

  def to_example(self, record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
    example = shapes_record_to_example(record, wanted)
    if "label" in wanted:
      if not len(example["labels"]):
        raise ValueError(f"Shapes image {int(example['image_id'])} has no objects, so it has "
                         "no image-level 'label'; set data.min_objects >= 1 or drop 'label' "
                         "from data.features.")
      example["label"] = np.int32(example["labels"][np.argmax(example["area"])])
    return example


# --- tfds --------------------------------------------------------------------------------
def _positioned_tfds_record(records: Sequence[Mapping[str, Any]], first_position: int,
                            index: int) -> dict[str, Any]:
  return {**records[index], _POSITION: first_position + index}


@register_source("tfds:")
class TfdsSource(DataSource):
  """A TFDS dataset prepared in ``array_record``, read TF-free.

  Example mapping, from the dataset's declared features:

  * ``image``: the ``image`` feature, uint8 [H, W, C] (C = 1 or 3).
  * ``label``: a top-level ``ClassLabel`` named ``label``.
  * ``boxes``, ``labels``, ``area``: an ``objects`` ``Sequence`` with a ``bbox``
    ``BBoxFeature`` (normalized ``(ymin, xmin, ymax, xmax)``, converted to absolute
    ``(x1, y1, x2, y2)`` pixels) and a ``ClassLabel`` ``label``; ``area`` is the objects'
    ``area`` when stored, else the box area. ``is_crowd`` when the objects store it.
  * ``image_id``: the ``image/id`` feature when stored, else the record's position in its
    split plus the sizes of the splits before it (in sorted order), unique across splits.

  So ``coco/2017`` gives boxes, labels, its stored (mask) area, is_crowd and COCO's image
  ids; ``voc/2012`` boxes and labels (its difficult/truncated flags and poses are not read);
  ``mnist`` and ``cifar10`` the image and its label. A record whose image does not decode
  to the declared channels, or whose object fields differ in length, is an error naming it.
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.name = data_config.name
    tfds_name = data_config.name.removeprefix("tfds:")
    self._builder = _prepared_tfds_builder(tfds_name,
                                           datasets.resolve_data_dir(data_config.data_dir))
    info = self._builder.info
    self.splits = tuple(sorted(info.splits.keys()))
    sizes = [info.splits[split].num_examples for split in self.splits]
    self._first_positions = dict(zip(self.splits, np.cumsum([0] + sizes[:-1]).tolist()))

    declared = info.features
    channels = self._image_channels(declared)
    self._has_image_id = "image/id" in declared
    self._has_label = isinstance(_feature(declared, "label"), tfds.features.ClassLabel)
    objects = self._object_features(declared)
    self._has_objects = objects is not None
    self._object_keys = frozenset(objects.keys()) if self._has_objects else frozenset()
    features = {"image"}
    class_names = ()
    if self._has_label:
      features.add("label")
      class_names = declared["label"].names
    if self._has_objects:
      features |= {"boxes", "labels", "area"} | ({"is_crowd"} & self._object_keys)
      class_names = objects["label"].names
    self.metadata = SourceMetadata(class_names=tuple(class_names), channels=channels,
                                   features=frozenset(features))

  def _image_channels(self, declared: tfds.features.FeaturesDict) -> int:
    image = _feature(declared, "image")
    shape = getattr(image, "shape", None)
    if (shape is None or len(shape) != 3 or shape[-1] not in (1, 3)
        or getattr(image, "np_dtype", None) != np.uint8):
      raise ValueError(
          f"TFDS dataset {self.name!r} needs an 'image' feature of uint8 [H, W, C] with C = 1 "
          f"or 3; its features are {declared}. Choose an image dataset or register a source "
          "for it with jaxvision.data.sources.register_source.")
    return shape[-1]

  @staticmethod
  def _object_features(declared: tfds.features.FeaturesDict
                       ) -> tfds.features.FeaturesDict | None:
    """The per-object features when the dataset has objects with boxes and labels."""
    objects = _feature(declared, "objects")
    if not isinstance(objects, tfds.features.Sequence):
      return None
    inner = objects.feature
    if (isinstance(inner, tfds.features.FeaturesDict)
        and isinstance(_feature(inner, "bbox"), tfds.features.BBoxFeature)
        and isinstance(_feature(inner, "label"), tfds.features.ClassLabel)):
      return inner
    return None

  def _split_records(self, split: str) -> Sequence[Mapping[str, Any]]:
    records = self._builder.as_data_source(split)
    if self._has_image_id:
      return records
    return _RecordView(len(records), functools.partial(
        _positioned_tfds_record, records, self._first_positions[split]))

  def to_example(self, record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
    del wanted  # every feature a TFDS record has is cheap
    image = np.asarray(record["image"])
    example = {
        "image": image,
        "image_id": np.int32(record["image/id"] if self._has_image_id else record[_POSITION]),
    }
    self._check_image(image, int(example["image_id"]))
    if self._has_label:
      example["label"] = np.int32(record["label"])
    if self._has_objects:
      objects = record["objects"]
      height, width = image.shape[:2]
      boxes = datasets.tfds_bbox_to_xyxy(objects["bbox"], height, width)
      example["boxes"] = boxes
      example["labels"] = np.asarray(objects["label"], dtype=np.int32).reshape(-1)
      if "area" in self._object_keys:
        example["area"] = np.asarray(objects["area"], dtype=np.float32).reshape(-1)
      else:
        example["area"] = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
      if "is_crowd" in self._object_keys:
        example["is_crowd"] = np.asarray(objects["is_crowd"], dtype=bool).reshape(-1)
      self._check_objects(example)
    return example

  def _check_image(self, image: np.ndarray, image_id: Any) -> None:
    """TFDS decodes grey images to the declared channels; others (CMYK JPEGs decoded by
    PIL, RGBA PNGs) would reach the model with the wrong channel count."""
    if image.ndim != 3 or image.shape[-1] != self.metadata.channels:
      raise ValueError(
          f"TFDS dataset {self.name!r}: image {image_id} decodes to shape {image.shape}, not "
          f"[H, W, {self.metadata.channels}] as its 'image' feature declares; re-encode that "
          "image as RGB (or grey) and rebuild the dataset.")

  def _check_objects(self, example: Example) -> None:
    """The per-object features of one record must agree on the number of objects."""
    counts = {name: len(example[name]) for name in ("boxes", "labels", "area", "is_crowd")
              if name in example}
    if len(set(counts.values())) > 1:
      raise ValueError(
          f"TFDS dataset {self.name!r}: image {int(example['image_id'])} has per-object "
          f"features of different lengths {counts} (from its 'objects' sequence); every "
          "object needs a bbox, a label and each other stored field.")


def _feature(features: tfds.features.FeaturesDict, key: str
             ) -> tfds.features.FeatureConnector | None:
  """``features[key]``, or None when it has no such feature."""
  return features[key] if key in features else None


def _prepared_tfds_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
  """The builder of TFDS dataset ``name`` prepared in ``array_record`` under ``data_dir``.

  Read from the prepared files, never from the dataset's generation code: that code may
  need TensorFlow even to describe the dataset (``coco`` does).
  """
  build_command = f"tfds build {name} --file_format=array_record --data_dir={data_dir}"
  try:
    builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as error:
    raise ValueError(
        f"TFDS dataset {name!r} is not prepared in {data_dir} (data.data_dir, else "
        f"${datasets.DATA_DIR_ENV}, else ${datasets.TFDS_DATA_DIR_ENV}, else "
        f"~/tensorflow_datasets). jaxvision never downloads datasets: where TensorFlow can "
        f"be installed (pip install 'jaxvision[prepare]') run\n"
        f"  python -m jaxvision.data.prepare {name} --data_dir={data_dir}\n"
        f"or equivalently (with apache-beam installed too)\n  {build_command}\n"
        f"then point data.data_dir at that directory (README.md, 'Real datasets').") from error
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ValueError(
        f"TFDS dataset {name!r} in {builder.data_dir} is stored as "
        f"{builder.info.file_format.value}; jaxvision reads array_record (random access, "
        f"TF-free). Rebuild it elsewhere with\n  {build_command}")
  return builder


# --- arrays ------------------------------------------------------------------------------
def _array_record(arrays: Mapping[str, np.ndarray], start: int, index: int) -> dict[str, Any]:
  """Row ``start + index`` of every array (``images`` as ``image``), and its index."""
  record = {("image" if name == "images" else name): values[start + index]
            for name, values in arrays.items()}
  record["index"] = start + index
  return record


def save_arrays_npz(path: str, **arrays: np.ndarray) -> str:
  """Writes an ``.npz`` for the ``arrays`` source atomically (a temporary file renamed into
  place: a killed writer leaves no half-written file); returns the user-expanded path."""
  path = os.path.expanduser(path)
  temporary = path + ".tmp.npz"  # np.savez adds .npz to names without it
  np.savez(temporary, **arrays)
  os.replace(temporary, path)
  return path


@register_source("arrays")
class ArraysSource(DataSource):
  """Images (and labels) of an ``.npz`` file, split by index ranges.

  The file (``data.path``) holds ``images`` uint8 [N, H, W] or [N, H, W, C] (C = 1 or 3),
  optionally ``labels`` [N] (integers >= 0), ``semantic`` [N, H, W] (integer class maps,
  e.g. VOC's palette indices with 255 on void pixels) and ``class_names`` [num_classes]
  (strings).
  ``data.splits`` maps each split to ``[start, end)``: integer indices, or fractions of N
  (floats in [0, 1], rounded to the nearest index). Examples: ``image`` uint8 [H, W, C]
  ([H, W, 1] for [N, H, W] files), ``image_id`` = the image's index in the file, ``label``
  when the file has labels, ``semantic`` int32 [H, W] when it has class maps. Class names: the file's, else ``data.class_names``, else
  ``"class 0"``, ``"class 1"``, ... up to the largest label.
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.name = data_config.name
    path = data_config.path
    if not path:
      raise ValueError("data.path is not set; data.name='arrays' reads images from an .npz "
                       "file: set data.path to it.")
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
      raise ValueError(f"data.path {path!r} does not exist; set data.path to an .npz file "
                       "holding 'images' (and optionally 'labels', 'class_names').")
    with np.load(path, allow_pickle=False) as arrays:
      if "images" not in arrays.files:
        raise ValueError(f"{path} has no 'images' array (it has {sorted(arrays.files)}); save "
                         "the images as np.savez(path, images=..., labels=...).")
      images = self._checked_images(arrays["images"], path)
      labels = (self._checked_labels(arrays["labels"], len(images), path)
                if "labels" in arrays.files else None)
      semantic = (self._checked_semantic(arrays["semantic"], images.shape[:3], path)
                  if "semantic" in arrays.files else None)
      file_class_names = (tuple(str(name) for name in arrays["class_names"])
                          if "class_names" in arrays.files else ())
    self._arrays = {"images": images}
    if labels is not None:
      self._arrays["labels"] = labels
    if semantic is not None:
      self._arrays["semantic"] = semantic
    for values in self._arrays.values():
      values.setflags(write=False)  # examples are views of them: later stages must copy
    self._ranges = self._split_ranges(data_config.splits, len(images), path)
    self.splits = tuple(self._ranges)
    class_names = file_class_names or tuple(data_config.class_names)
    if labels is not None:
      num_classes = int(labels.max()) + 1
      if not class_names:
        class_names = tuple(f"class {label}" for label in range(num_classes))
      elif len(class_names) < num_classes:
        origin = "the file's class_names" if file_class_names else "data.class_names"
        raise ValueError(f"{origin} names {len(class_names)} classes but {path} has label "
                         f"{num_classes - 1}; give one name per class.")
    features = {"image"} | ({"label"} if labels is not None else set()) | (
        {"semantic"} if semantic is not None else set())
    self.metadata = SourceMetadata(class_names=class_names, channels=images.shape[-1],
                                   features=frozenset(features))

  @staticmethod
  def _checked_images(images: np.ndarray, path: str) -> np.ndarray:
    """``images`` as uint8 [N, H, W, C]."""
    if images.dtype != np.uint8:
      raise ValueError(f"{path}: 'images' must be uint8 (0..255); got {images.dtype}. Scale "
                       "and convert them with np.clip(x, 0, 255).astype(np.uint8).")
    if images.ndim == 3:
      return images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ValueError(f"{path}: 'images' must be [N, H, W] or [N, H, W, C] with C = 1 or 3; "
                       f"got shape {images.shape}.")
    return images

  @staticmethod
  def _checked_labels(labels: np.ndarray, num_images: int, path: str) -> np.ndarray:
    """``labels`` as int32 [N]."""
    if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"{path}: 'labels' must be integers [N] with N = {num_images} (one "
                       f"per image); got shape {labels.shape} dtype {labels.dtype}.")
    if num_images and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
      raise ValueError(f"{path}: 'labels' must be 0-based class indices; got values in "
                       f"[{labels.min()}, {labels.max()}].")
    return labels.astype(np.int32)

  @staticmethod
  def _checked_semantic(semantic: np.ndarray, images_shape: tuple[int, ...], path: str
                        ) -> np.ndarray:
    """``semantic`` as int32 [N, H, W], one class map per image."""
    if semantic.shape != images_shape or not np.issubdtype(semantic.dtype, np.integer):
      raise ValueError(f"{path}: 'semantic' must be integer class maps [N, H, W] = "
                       f"{list(images_shape)}, one per image; got shape {semantic.shape} "
                       f"dtype {semantic.dtype}.")
    return semantic.astype(np.int32)

  @staticmethod
  def _split_ranges(splits: ml_collections.ConfigDict, num_images: int, path: str
                    ) -> dict[str, tuple[int, int]]:
    """``data.splits`` as ``split -> (start, end)`` indices, checked against N."""
    if not splits:
      raise ValueError("data.splits is empty; data.name='arrays' needs each split's range, "
                       "e.g. data.splits = {'train': [0, 4000], 'validation': [4000, 5000]} "
                       "or {'train': [0.0, 0.8], 'validation': [0.8, 1.0]}.")
    ranges = {}
    for split, bounds in splits.items():
      bounds = tuple(bounds) if isinstance(bounds, (list, tuple)) else (bounds,)
      kinds = {type(bound) for bound in bounds}
      if len(bounds) != 2 or not (kinds <= {int} or kinds <= {float}):
        raise ValueError(f"data.splits.{split} = {bounds} must be [start, end]: two indices "
                         "(ints) or two fractions of the images (floats in [0, 1]).")
      if kinds == {float}:
        if not all(0.0 <= bound <= 1.0 for bound in bounds):
          raise ValueError(f"data.splits.{split} = {bounds}: fractions must be in [0, 1].")
        bounds = tuple(round(bound * num_images) for bound in bounds)
      start, end = bounds
      if not 0 <= start < end <= num_images:
        raise ValueError(f"data.splits.{split} is [{start}, {end}) but {path} has "
                         f"{num_images} images; a split needs 0 <= start < end <= "
                         f"{num_images}.")
      ranges[split] = (start, end)
    return ranges

  def _split_records(self, split: str) -> Sequence[Mapping[str, Any]]:
    start, end = self._ranges[split]
    return _RecordView(end - start, functools.partial(_array_record, self._arrays, start))

  def to_example(self, record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
    del wanted  # every feature it has is cheap
    example = {"image": record["image"], "image_id": np.int32(record["index"])}
    if "labels" in record:
      example["label"] = np.int32(record["labels"])
    if "semantic" in record:
      example["semantic"] = record["semantic"]
    return example
