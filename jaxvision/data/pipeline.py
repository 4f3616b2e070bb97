"""Deterministic, host-sharded grain pipelines with fixed-shape batches.

A pipeline reads one split of a data source (``jaxvision.data.sources``), turns each record
into an example (the source's mapping) and each example into a fixed-shape row (the task's
``preprocess``: :class:`StandardPreprocess` unless the task brings its own), then stacks rows
into this host's slices of global batches.

Training order: global example position ``g = step * global_batch_size + row`` reads record
``shuffle_epoch(g // N)[g % N]`` (grain's per-epoch index shuffle of the ``N`` records,
seeded by ``seed``) and preprocesses it with a generator seeded by ``(seed, g)``. The global
batch of a step is therefore a function of ``(seed, step)`` alone, whatever the number of
hosts: host ``p`` of ``P`` reads only rows ``[p * B / P, (p + 1) * B / P)`` of it, by random
access, so a resumed run and a multi-host run read exactly the examples of a one-host run.
Evaluation reads a split in order, unaugmented (``preprocess`` gets no generator), padded to
whole batches.

Rows are dicts (see ``Pipeline``); batches stack them along a new leading axis.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import grain
import jax
import ml_collections
import numpy as np

from jaxvision.data import datasets
from jaxvision.data import sources as sources_lib
from jaxvision.data import transforms

Batch = dict[str, np.ndarray]
Preprocess = Callable[[transforms.Example, "np.random.Generator | None"], Batch]

# Rows of a split's endless stream (see Pipeline.__init__): more than any run reads.
_MAX_ROWS = 2 ** 62


def _stack_and_validate(rows: Sequence[Batch]) -> Batch:
  """Stacks rows along a new leading axis; checks the boxes once per batch (vectorized)."""
  batch = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
  if "boxes" in batch:
    transforms.validate_boxes(batch)
  return batch


class StandardPreprocess:
  """The default example -> row mapping of supervised tasks.

  Letterboxes the image to ``data.image_size`` (semantic maps padded with
  ``data.ignore_label``), converts it to ``data.channels``, flips it (and its boxes, masks,
  keypoints and semantic map) with probability 1/2 when a generator is given and
  ``data.flip``, and pads the per-object features to ``data.max_boxes`` with a ``box_valid``
  mask. Examples without per-object features (image-level labels) get no ``box_valid``.
  """

  def __init__(self, data_config: ml_collections.ConfigDict,
               metadata: sources_lib.SourceMetadata):
    self.image_size = data_config.image_size
    self.channels = data_config.get("channels", 3)
    self.ignore_label = data_config.get("ignore_label", 255)
    self.max_boxes = data_config.max_boxes
    self.flip = bool(data_config.flip)
    self._keypoint_permutation = metadata.keypoint_flip_permutation

  def __call__(self, example: transforms.Example,
               rng: np.random.Generator | None) -> Batch:
    example = transforms.resize_and_pad(example, self.image_size, self.ignore_label)
    if "image" in example:
      example["image"] = transforms.to_channels(example["image"], self.channels)
    if rng is not None and self.flip:
      permutation = None
      if "keypoints" in example and self._keypoint_permutation is not None:
        permutation = self._keypoint_permutation(example["keypoints"].shape[1])
      example = transforms.random_flip(example, rng, keypoint_permutation=permutation)
    if any(name in example for name in transforms.OBJECT_FEATURES):
      example = transforms.pad_objects(example, self.max_boxes)
    return {name: np.asarray(value) for name, value in example.items()}


class Pipeline:
  """One split of a data source, read as this host's slices of global batches.

  Every row holds ``image_id`` int32, the features named by ``features`` (default
  ``data_config.features``) and, when it has per-object features, ``box_valid`` bool
  [max_boxes]: ``image`` uint8 [H, W, C]; ``label`` int32 (image-level class); ``boxes``
  float32 [max_boxes, 4] (x1, y1, x2, y2) pixels; ``labels`` int32 [max_boxes] (0-based, 0
  on padding); ``masks`` uint8 [max_boxes, H, W]; ``keypoints`` float32 [max_boxes, K, 3]
  (x, y, COCO visibility 0/1/2); ``semantic`` int32 [H, W]; ``area`` float32 [max_boxes];
  ``is_crowd`` bool [max_boxes]; plus whatever a task's ``preprocess`` adds. Eval batches
  also hold ``example_mask`` bool (False on padding rows). Padding objects and padding rows
  are all zeros (``image_id`` -1).
  """

  def __init__(self, data_config: ml_collections.ConfigDict, split: str,
               global_batch_size: int, seed: int, train: bool,
               process_index: int | None = None, process_count: int | None = None, *,
               preprocess: Preprocess | None = None, features: Sequence[str] | None = None,
               source: sources_lib.DataSource | None = None):
    """Builds the dataset if needed and sets up the reader.

    Args:
      data_config: ``config.data`` (see ``datasets.data_config``).
      split: A split of the source (``"train"``, ``"validation"``, ``"test"`` for shapes).
      global_batch_size: Rows per step over all hosts; divisible by ``process_count``.
      seed: Shuffling and augmentation seed, in ``[0, 2**32)``.
      train: Shuffle and augment in ``host_batch``/``iterate`` (``eval_batches`` never does).
      process_index: This host; None -> ``jax.process_index()``.
      process_count: Number of hosts; None -> ``jax.process_count()``.
      preprocess: ``(example, generator or None) -> row``; None -> :class:`StandardPreprocess`.
      features: The features to read; None -> ``data_config.features``.
      source: The data source; None -> ``sources.get_source(data_config)``.
    """
    self._source = sources_lib.get_source(data_config) if source is None else source
    self.features = self._checked_features(data_config, features)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f"The global batch size {global_batch_size} must be a positive multiple "
                       f"of the number of processes ({process_count}); change batch_size.")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} is outside [0, {process_count}).")
    if not 0 <= seed < 2**32:
      raise ValueError(f"Data seed {seed} must be in [0, 2**32).")
    if data_config.name == "shapes" and data_config.max_objects > data_config.max_boxes:
      raise ValueError(f"data.max_objects={data_config.max_objects} exceeds data.max_boxes="
                       f"{data_config.max_boxes}; set data.max_boxes >= data.max_objects.")
    self.global_batch_size = global_batch_size
    self.host_batch_size = global_batch_size // process_count
    self._preprocess = (StandardPreprocess(data_config, self._source.metadata)
                        if preprocess is None else preprocess)
    self._read_options = grain.ReadOptions(num_threads=data_config.num_threads,
                                           prefetch_buffer_size=data_config.prefetch_batches)
    self._process_index, self._process_count = process_index, process_count

    self._records = self._source.records(split)
    self.num_examples = len(self._records)
    self._padding_row: Batch | None = None

    records = grain.MapDataset.source(self._records)
    # A finite number of epochs (2^62 rows): grain's unbounded repeat() has sys.maxsize rows
    # and batch(1) of it computes a length past sys.maxsize (OverflowError); the rows are
    # the same as repeat()'s.
    epochs = _MAX_ROWS // max(1, self.num_examples)
    if train:
      rows = records.seed(seed).shuffle().repeat(epochs).random_map(self._row)
    else:
      rows = records.repeat(epochs).map(self._row)
    self._host_batches = self._host_slices(rows)

  def _checked_features(self, data_config: ml_collections.ConfigDict,
                        features: Sequence[str] | None) -> frozenset[str]:
    requested = tuple(data_config.features if features is None else features)
    unknown = sorted(set(requested) - set(datasets.FEATURES))
    if unknown:
      raise ValueError(f"Unknown data.features {unknown}; choose from {datasets.FEATURES}.")
    provided = self._source.metadata.features
    missing = sorted(set(requested) - provided)
    if missing:
      raise ValueError(f"Dataset {data_config.name!r} does not provide features {missing}; it "
                       f"provides {sorted(provided)}.")
    return frozenset(requested)

  def _host_slices(self, rows: grain.MapDataset) -> grain.MapDataset:
    """Global row ``g`` -> batches of this host: element t holds its slice of batch t."""
    return rows.batch(self.host_batch_size, batch_fn=_stack_and_validate
                      )[self._process_index::self._process_count]

  # --- rows ----------------------------------------------------------------------------
  def _row(self, record: dict, rng: np.random.Generator | None = None) -> Batch:
    """One row; ``rng`` (training only) draws the augmentation."""
    example = self._source.to_example(record, self.features)
    example = {name: value for name, value in example.items()
               if name in self.features or name == "image_id"}
    return self._preprocess(example, rng)

  def _eval_row(self, position: int) -> Batch:
    if position < self.num_examples:
      return {**self._row(self._records[position]), "example_mask": np.bool_(True)}
    if self._padding_row is None:
      real = self._row(self._records[0])
      self._padding_row = {name: np.zeros_like(value) for name, value in real.items()}
      self._padding_row["image_id"] = np.int32(-1)
      self._padding_row["example_mask"] = np.bool_(False)
    return self._padding_row

  # --- public API ----------------------------------------------------------------------
  def host_batch(self, step: int) -> Batch:
    """This host's rows of the global training batch of ``step``: leading axis B / P."""
    if step < 0:
      raise ValueError(f"step must be >= 0; got {step}.")
    return self._host_batches[step]

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    """``host_batch(start_step)``, ``host_batch(start_step + 1)``, ... prepared ahead by
    ``data.num_threads`` background threads."""
    if start_step < 0:
      raise ValueError(f"start_step must be >= 0; got {start_step}.")
    return iter(self._host_batches[start_step:].to_iter_dataset(self._read_options))

  @property
  def num_eval_batches(self) -> int:
    """Global batches in one pass over the split (the last one padded)."""
    return math.ceil(self.num_examples / self.global_batch_size)

  def eval_batches(self, num_examples: int | None = None) -> Iterator[Batch]:
    """One pass over the split in order, without augmentation, in fixed-shape batches.

    Every host yields the same number of batches of ``B / P`` rows (its slice of each global
    batch: ``num_eval_batches`` for the whole split); rows past the end of the split (or
    past its first ``num_examples``) are padding with ``example_mask`` False.
    """
    count = self.num_examples
    if num_examples is not None:
      if num_examples < 1:
        raise ValueError(f"num_examples must be positive; got {num_examples}.")
      count = min(num_examples, count)
    total = math.ceil(count / self.global_batch_size) * self.global_batch_size
    positions = grain.MapDataset.range(total)
    batches = self._host_slices(positions.map(
        lambda position: self._eval_row(position if position < count else self.num_examples)))
    return iter(batches.to_iter_dataset(self._read_options))
