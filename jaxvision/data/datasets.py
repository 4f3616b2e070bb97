"""Data configs, dataset building, and the mapping from stored records to examples.

An *example* is the dataset-independent dict every pipeline stage works on (one image,
its N objects unpadded):

* ``image`` uint8 [H, W, 3]; ``image_id`` int32 scalar;
* ``boxes`` float32 [N, 4] ``(x1, y1, x2, y2)`` absolute pixels; ``labels`` int32 [N]
  (0-based class); ``area`` float32 [N]; ``is_crowd`` bool [N];
* when the dataset has them: ``keypoints`` float32 [N, K, 3] ``(x, y, v)`` with COCO
  visibility (0 unlabeled, 1 occluded, 2 visible), ``masks`` uint8 [N, H, W] (visible part),
  ``semantic`` int32 [H, W] (0 background, ``label + 1``).

Each dataset family has a :class:`RecordFormat` that maps its TFDS records to examples.
Supported: the embedded ``shapes`` (every feature) and TFDS ``coco/2017`` (boxes, labels,
area, is_crowd; mapping only, it is never downloaded by this package: prepare it with
``file_format="array_record"`` where TensorFlow is available, then point ``data_dir`` at it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from typing import Any, Callable, Iterator, Mapping

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from jaxvision.data import shapes
from jaxvision.data.transforms import Example

# Every feature a pipeline can deliver, in addition to the always-present ``image_id`` and
# ``box_valid`` (and ``example_mask`` in eval batches).
FEATURES = ("image", "boxes", "labels", "masks", "keypoints", "semantic", "area", "is_crowd")
DATA_DIR_ENV = "JAXVISION_DATA_DIR"


def shapes_data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The default data config (``config.data``) for the embedded shapes dataset.

  Fields:
    name: ``"shapes"`` or a TFDS name with a record format (``"coco/2017"``).
    image_size: Image height and width; other datasets are scaled and padded to it.
    min_objects, max_objects, num_train, num_validation, num_test, seed, num_keypoints:
      What the shapes builder generates (see ``shapes.ShapesConfig``); ignored otherwise.
    data_dir: TFDS data dir; None -> ``$JAXVISION_DATA_DIR`` or ``~/tensorflow_datasets``.
    max_boxes: Objects per example after padding (defaults to ``max_objects``). An example
      with more objects is an error.
    features: Which of ``FEATURES`` the pipeline delivers.
    flip: Random horizontal flips when training.
    num_threads: Threads that prepare batches in the background (``Pipeline.iterate``).
    prefetch_batches: Batches prepared ahead of the consumer.

  Args:
    **overrides: Field values replacing the defaults; an unknown field is an error.
  """
  config = ml_collections.ConfigDict({
      "name": "shapes",
      "image_size": 64,
      "min_objects": 1,
      "max_objects": 1,
      "num_train": 20000,
      "num_validation": 1000,
      "num_test": 1000,
      "seed": 0,
      "num_keypoints": 4,
      "data_dir": config_dict.placeholder(str),
      "max_boxes": 1,
      "features": ("image", "boxes", "labels"),
      "flip": True,
      "num_threads": 2,
      "prefetch_batches": 2,
  })
  unknown = sorted(set(overrides) - set(config.keys()))
  if unknown:
    raise ValueError(f"Unknown data config field(s) {unknown}; known: {sorted(config.keys())}.")
  config.update(overrides)
  if "max_boxes" not in overrides:
    config.max_boxes = config.max_objects
  return config


def shapes_builder_config(data_config: ml_collections.ConfigDict) -> shapes.ShapesConfig:
  """The shapes generation settings named by a data config."""
  return shapes.ShapesConfig(
      image_size=data_config.image_size, min_objects=data_config.min_objects,
      max_objects=data_config.max_objects, num_train=data_config.num_train,
      num_validation=data_config.num_validation, num_test=data_config.num_test,
      seed=data_config.seed, num_keypoints=data_config.num_keypoints)


def resolve_data_dir(data_dir: str | None) -> str:
  """``data_dir``, else ``$JAXVISION_DATA_DIR``, else ``~/tensorflow_datasets``."""
  return os.path.expanduser(data_dir or os.environ.get(DATA_DIR_ENV)
                            or "~/tensorflow_datasets")


def _make_builder(data_config: ml_collections.ConfigDict, data_dir: str
                  ) -> tfds.core.DatasetBuilder:
  if data_config.name == "shapes":
    return shapes.Shapes(config=shapes_builder_config(data_config), data_dir=data_dir,
                         file_format="array_record")
  return tfds.builder(data_config.name, data_dir=data_dir, file_format="array_record")


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``path`` (released on exit, also if the process dies)."""
  with open(path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def build_dataset(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the prepared TFDS builder for ``data_config``, generating it if needed.

  Safe when several processes (hosts sharing a file system, pytest-xdist workers) call it
  at once on one ``data_dir``: one builds under a file lock, the others wait and then read.
  """
  record_format(data_config.name)  # fail on an unsupported dataset before building it
  data_dir = resolve_data_dir(data_config.data_dir)
  builder = _make_builder(data_config, data_dir)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  config_name = builder.builder_config.name if builder.builder_config else "default"
  lock_path = os.path.join(data_dir, f".{builder.name}-{config_name}-{builder.version}.lock")
  with _exclusive_lock(lock_path):
    # Re-created: another process may have finished the build while this one waited.
    builder = _make_builder(data_config, data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return builder


@dataclasses.dataclass(frozen=True)
class RecordFormat:
  """How one dataset family's TFDS records become examples.

  Attributes:
    features: The subset of ``FEATURES`` its records can provide.
    to_example: ``(record, wanted_features) -> example``; builds costly features (masks,
      semantic) only when wanted.
    keypoint_flip_permutation: ``K -> [K]`` index map of keypoints under a horizontal flip
      (left/right keypoints swap), for datasets with keypoints.
  """

  features: frozenset[str]
  to_example: Callable[[Mapping[str, Any], frozenset[str]], Example]
  keypoint_flip_permutation: Callable[[int], np.ndarray] | None = None


def _shapes_record_to_example(record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
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
    example["semantic"] = shapes.semantic_map(record["instance_map"], objects["label"])
  if "masks" in wanted:
    object_ids = np.arange(1, len(objects["label"]) + 1, dtype=np.uint8)
    example["masks"] = (record["instance_map"][None] == object_ids[:, None, None]
                        ).astype(np.uint8)
  return example


def _coco_record_to_example(record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
  """TFDS ``coco/2017``: boxes are normalized ``(ymin, xmin, ymax, xmax)``."""
  del wanted  # every feature it has is cheap
  height, width = record["image"].shape[:2]
  objects = record["objects"]
  y_min, x_min, y_max, x_max = np.asarray(objects["bbox"], dtype=np.float32).reshape(-1, 4).T
  return {
      "image": record["image"],
      "image_id": np.int32(record["image/id"]),
      "boxes": np.stack([x_min * width, y_min * height, x_max * width, y_max * height],
                        axis=1),
      "labels": np.asarray(objects["label"], dtype=np.int32),
      "area": np.asarray(objects["area"], dtype=np.float32),
      "is_crowd": np.asarray(objects["is_crowd"], dtype=bool),
  }


_RECORD_FORMATS = {
    "shapes": RecordFormat(frozenset(FEATURES), _shapes_record_to_example,
                           shapes.keypoint_flip_permutation),
    "coco": RecordFormat(frozenset({"image", "boxes", "labels", "area", "is_crowd"}),
                         _coco_record_to_example),
}


def record_format(name: str) -> RecordFormat:
  """The record format of dataset ``name`` (``"shapes"``, ``"coco/2017"``, ...)."""
  family = name.split("/")[0].split(":")[0]
  if family not in _RECORD_FORMATS:
    raise ValueError(f"Dataset {name!r} has no record format; data.name must be one of the "
                     f"families {sorted(_RECORD_FORMATS)} (e.g. 'shapes', 'coco/2017').")
  return _RECORD_FORMATS[family]
