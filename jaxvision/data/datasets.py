"""Data configs, the example contract, and building the embedded shapes dataset.

An *example* is the dataset-independent dict every pipeline stage works on (one image,
its N objects unpadded). It always holds ``image`` uint8 [H, W, C] (C = 1 or 3, the
source's channels) and ``image_id`` int32 scalar, plus what the dataset has of:

* ``label`` int32 scalar: the image-level class (0-based), for classification;
* ``boxes`` float32 [N, 4] ``(x1, y1, x2, y2)`` absolute pixels; ``labels`` int32 [N]
  (0-based class); ``area`` float32 [N]; ``is_crowd`` bool [N];
* ``keypoints`` float32 [N, K, 3] ``(x, y, v)`` with COCO visibility (0 unlabeled,
  1 occluded, 2 visible), ``masks`` uint8 [N, H, W] (visible part), ``semantic`` int32
  [H, W] (0 background, ``label + 1``; with stuff (shapes ``data.stuff_classes = S > 0``)
  ``label + 1`` on things and ``C + s`` on stuff class ``s = 1..S``, C object classes, no 0).

``jaxvision.data.sources`` picks a dataset by ``data.name`` and maps its records to
examples; :func:`build_dataset` generates the embedded shapes dataset it reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Any, Iterator

import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from ml_collections import config_dict

from jaxvision.data import shapes

# Every feature a pipeline can deliver, in addition to the always-present ``image_id`` and
# ``box_valid`` (and ``example_mask`` in eval batches).
FEATURES = ("image", "label", "boxes", "labels", "masks", "keypoints", "semantic", "area",
            "is_crowd")
DATA_DIR_ENV = "JAXVISION_DATA_DIR"
# TFDS's own variable, which `tfds build` writes to: a dataset prepared with it set is found.
TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
  """The data config (``config.data``): which dataset, and how the pipeline reads it.

  Fields:
    name: The data source (``jaxvision.data.sources``): ``"shapes"`` (embedded synthetic),
      ``"tfds:<name>"`` (a TFDS dataset prepared in array_record, e.g. ``"tfds:mnist"``,
      ``"tfds:coco/2017"``; bare ``"coco/2017"`` also works), ``"arrays"`` (an .npz), or
      ``"coco_json"`` (COCO-format json files and their images, ``jaxvision.data.coco_json``).
    image_size: Image height and width; other datasets are scaled and padded to it.
    min_objects, max_objects, num_train, num_validation, num_test, seed, num_keypoints,
    stuff_classes: What the shapes builder generates (see ``shapes.ShapesConfig``); ignored
      otherwise. ``stuff_classes`` (default 0: the plain background) > 0 divides each
      background into textured "stuff" regions, classes ``shapes.STUFF_NAMES[:S]``.
    data_dir: TFDS data dir; None -> ``$JAXVISION_DATA_DIR``, ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``.
    path: ``arrays``: the .npz file (``images``, optional ``labels``, ``class_names``).
    splits: ``arrays``: split name -> ``[start, end]``, image indices (ints) or fractions
      of the images (floats in [0, 1]), e.g. ``{"train": [0, 4000], "validation":
      [4000, 5000]}``. Empty by default.
    class_names: ``arrays``: class names when the file has none (default ``"class i"``).
    annotations: ``coco_json``: split name -> the COCO-format json file of that split, e.g.
      ``{"train": "ann/train.json", "validation": "ann/val.json"}``. Empty by default.
    image_root: ``coco_json``: split name -> the folder that the json's ``file_name`` values are
      relative to. Empty by default.
    max_boxes: Objects per example after padding (defaults to ``max_objects``). An example
      with more objects is an error.
    features: Which of ``FEATURES`` the pipeline delivers.
    channels: Image channels the model sees (1 or 3); the pipeline converts the source's.
    mean, std: Per-channel normalization in [0, 1] units: the model sees
      ``(image / 255 - mean) / std``.
    ignore_label: The ``semantic`` value of pixels no class is scored on (padding).
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
      "stuff_classes": 0,
      "data_dir": config_dict.placeholder(str),
      "path": config_dict.placeholder(str),
      "splits": ml_collections.ConfigDict(),
      "class_names": (),
      "annotations": ml_collections.ConfigDict(),
      "image_root": ml_collections.ConfigDict(),
      "max_boxes": 1,
      "features": ("image", "boxes", "labels"),
      "channels": 3,
      "mean": (0.5, 0.5, 0.5),
      "std": (0.25, 0.25, 0.25),
      "ignore_label": 255,
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


# The name the shapes configs were written with; its defaults are the shapes dataset's.
shapes_data_config = data_config


def shapes_builder_config(data_config: ml_collections.ConfigDict) -> shapes.ShapesConfig:
  """The shapes generation settings named by a data config."""
  return shapes.ShapesConfig(
      image_size=data_config.image_size, min_objects=data_config.min_objects,
      max_objects=data_config.max_objects, num_train=data_config.num_train,
      num_validation=data_config.num_validation, num_test=data_config.num_test,
      seed=data_config.seed, num_keypoints=data_config.num_keypoints,
      # .get: configs saved before the option existed lack the field.
      stuff_classes=data_config.get("stuff_classes", 0))


def resolve_data_dir(data_dir: str | None) -> str:
  """``data_dir``, else ``$JAXVISION_DATA_DIR``, else ``$TFDS_DATA_DIR``, else
  ``~/tensorflow_datasets``."""
  return os.path.expanduser(data_dir or os.environ.get(DATA_DIR_ENV)
                            or os.environ.get(TFDS_DATA_DIR_ENV) or "~/tensorflow_datasets")


def _make_builder(data_config: ml_collections.ConfigDict, data_dir: str) -> shapes.Shapes:
  return shapes.Shapes(config=shapes_builder_config(data_config), data_dir=data_dir,
                       file_format="array_record")


@contextlib.contextmanager
def _exclusive_lock(path: str) -> Iterator[None]:
  """Holds an exclusive ``flock`` on ``path`` (released on exit, also if the process dies)."""
  with open(path, "a") as lock_file:
    fcntl.flock(lock_file, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock_file, fcntl.LOCK_UN)


def build_dataset(data_config: ml_collections.ConfigDict) -> shapes.Shapes:
  """Returns the prepared builder of the embedded shapes dataset, generating it if needed.

  Safe when several processes (hosts sharing a file system, pytest-xdist workers) call it
  at once on one ``data_dir``: one builds under a file lock, the others wait and then read.
  Other datasets are prepared elsewhere and read by their source (``jaxvision.data.sources``).
  """
  if data_config.name != "shapes":
    raise ValueError(f"build_dataset generates the embedded shapes dataset only; "
                     f"data.name={data_config.name!r} is read by its data source "
                     "(jaxvision.data.get_source).")
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


def tfds_bbox_to_xyxy(bbox: Any, height: int, width: int) -> np.ndarray:
  """TFDS ``BBoxFeature`` boxes -> float32 [N, 4] absolute ``(x1, y1, x2, y2)`` pixels.

  Args:
    bbox: N boxes, normalized ``(ymin, xmin, ymax, xmax)`` in [0, 1] (any [N, 4]-shaped
      array or list of [4] arrays; an empty list for no objects).
    height, width: The image size in pixels.
  """
  y_min, x_min, y_max, x_max = np.asarray(bbox, dtype=np.float32).reshape(-1, 4).T
  return np.stack([x_min * width, y_min * height, x_max * width, y_max * height], axis=1)
