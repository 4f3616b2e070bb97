"""The grain pipeline: order a function of (seed, step), host slices, eval passes, errors."""

import itertools

import numpy as np
import pytest

from jaxvision import data
from jaxvision.data import shapes, transforms

BATCH = 16


def _pipeline(config, split="train", batch=BATCH, seed=0, train=True, index=0, count=1):
  return data.Pipeline(config, split, batch, seed=seed, train=train, process_index=index,
                       process_count=count)


def _assert_batches_equal(actual, expected):
  assert actual.keys() == expected.keys()
  for name in expected:
    np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def _concat(batches):
  return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def test_rows_have_the_documented_shapes_and_dtypes(multi_config):
  batch = _pipeline(multi_config).host_batch(0)
  expected = {
      "image": ((BATCH, 64, 64, 3), np.uint8), "boxes": ((BATCH, 10, 4), np.float32),
      "label": ((BATCH,), np.int32), "labels": ((BATCH, 10), np.int32),
      "box_valid": ((BATCH, 10), np.bool_),
      "masks": ((BATCH, 10, 64, 64), np.uint8), "keypoints": ((BATCH, 10, 4, 3), np.float32),
      "semantic": ((BATCH, 64, 64), np.int32), "area": ((BATCH, 10), np.float32),
      "is_crowd": ((BATCH, 10), np.bool_), "image_id": ((BATCH,), np.int32)}
  assert {name: (v.shape, v.dtype) for name, v in batch.items()} == expected
  valid = batch["box_valid"]
  assert valid.sum(axis=1).min() >= 2
  for name in ("boxes", "labels", "masks", "keypoints", "area"):
    assert not batch[name][~valid].any(), name  # padding rows are zeros
  # Masks, areas and the semantic map agree after augmentation.
  np.testing.assert_array_equal(batch["masks"].sum(axis=(2, 3)), batch["area"])
  expected_semantic = np.einsum("bnhw,bn->bhw", batch["masks"].astype(np.int32),
                                batch["labels"] + 1)
  np.testing.assert_array_equal(batch["semantic"], expected_semantic)


def test_default_features(single_config):
  batch = _pipeline(single_config).host_batch(0)
  assert set(batch) == {"image", "boxes", "labels", "box_valid", "image_id"}


@pytest.mark.parametrize("count", [2, 4])
def test_host_slices_concatenate_to_the_one_host_batch(single_config, count):
  one_host = _pipeline(single_config)
  hosts = [_pipeline(single_config, index=p, count=count) for p in range(count)]
  for step in (0, 3, 7):  # 60 examples, 16 per step: step 3 straddles an epoch boundary
    slices = [host.host_batch(step) for host in hosts]
    assert all(len(s["image_id"]) == BATCH // count for s in slices)
    _assert_batches_equal(_concat(slices), one_host.host_batch(step))


def test_batches_depend_only_on_seed_and_step(single_config):
  first, resumed = _pipeline(single_config), _pipeline(single_config)
  _assert_batches_equal(resumed.host_batch(5), first.host_batch(5))
  other_seed = _pipeline(single_config, seed=1).host_batch(5)
  assert not np.array_equal(other_seed["image_id"], first.host_batch(5)["image_id"])


def test_every_epoch_is_a_fresh_permutation(single_config):
  pipeline = _pipeline(single_config, batch=20)  # 3 steps per epoch of 60
  epochs = [np.concatenate([pipeline.host_batch(step)["image_id"]
                            for step in range(3 * e, 3 * e + 3)]) for e in range(2)]
  for ids in epochs:
    np.testing.assert_array_equal(np.sort(ids), np.arange(60))
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[0], np.arange(60))


def test_a_batch_of_one_row(single_config):
  """Global batch 1 (grain's endless repeat().batch(1) used to overflow its length)."""
  pipeline = _pipeline(single_config, batch=1)
  rows = [pipeline.host_batch(step) for step in range(61)]
  assert all(row["image"].shape[0] == 1 for row in rows)
  assert sorted(int(row["image_id"][0]) for row in rows[:60]) == list(range(60))
  _assert_batches_equal(next(pipeline.iterate(60)), rows[60])
  evaluation = list(_pipeline(single_config, batch=1, train=False).eval_batches())
  assert len(evaluation) == 60 and int(evaluation[-1]["image_id"][0]) == 59


def test_iterate_matches_host_batch(single_config):
  pipeline = _pipeline(single_config, index=1, count=2)
  for step, batch in zip(range(4, 8), pipeline.iterate(4)):
    _assert_batches_equal(batch, pipeline.host_batch(step))


def test_training_rows_are_the_stored_examples_flipped_or_not(multi_config):
  train = _pipeline(multi_config, batch=24)
  plain = next(_pipeline(multi_config, batch=24, train=False).eval_batches())  # ids 0..23
  flips = 0
  for step in range(2):
    batch = train.host_batch(step)
    for row in range(24):
      stored = {name: values[batch["image_id"][row]]
                for name, values in plain.items() if name != "example_mask"}
      if np.array_equal(batch["image"][row], stored["image"]):
        expected = stored
      else:
        flips += 1
        num = int(stored["box_valid"].sum())
        unpadded = {name: value[:num] if name in transforms.OBJECT_FEATURES else value
                    for name, value in stored.items() if name != "box_valid"}
        flipped = transforms.flip_horizontal(unpadded, shapes.keypoint_flip_permutation(4))
        expected = transforms.pad_objects(flipped, 10)
      for name in expected:
        np.testing.assert_array_equal(batch[name][row], expected[name], err_msg=name)
  assert 8 < flips < 40  # about half of 48 rows


def test_no_flips_when_disabled(single_config):
  config = single_config.copy_and_resolve_references()
  config.flip = False
  train = _pipeline(config, batch=20)
  stored = _concat(list(_pipeline(config, batch=20, train=False).eval_batches()))
  for step in range(3):
    batch = train.host_batch(step)
    np.testing.assert_array_equal(batch["image"], stored["image"][batch["image_id"]])


@pytest.mark.parametrize("count", [1, 2])
def test_eval_covers_the_split_once_with_padding(single_config, count):
  # validation has 13 examples: batches of 8 -> 2 batches, 3 padding rows.
  hosts = [_pipeline(single_config, "validation", batch=8, index=p, count=count)
           for p in range(count)]
  per_host = [list(host.eval_batches()) for host in hosts]
  assert [len(batches) for batches in per_host] == [hosts[0].num_eval_batches] * count
  assert hosts[0].num_eval_batches == 2
  global_batches = [_concat([batches[i] for batches in per_host]) for i in range(2)]
  merged = _concat(global_batches)
  assert merged["image"].shape == (16, 32, 32, 3)
  np.testing.assert_array_equal(merged["example_mask"], np.arange(16) < 13)
  np.testing.assert_array_equal(merged["image_id"], np.where(np.arange(16) < 13,
                                                             np.arange(16), -1))
  assert not merged["image"][13:].any()
  # Eval rows are the stored examples, unaugmented, whatever pipeline reads them.
  source = data.build_dataset(single_config).as_data_source("validation")
  for row in (0, 12):
    np.testing.assert_array_equal(merged["image"][row], source[row]["image"])


def test_process_defaults_come_from_jax(single_config):
  pipeline = data.Pipeline(single_config, "test", 4, seed=0, train=False)
  assert pipeline.host_batch_size == 4


@pytest.mark.parametrize("change, kwargs, message", [
    (dict(features=("image", "boxs")), {}, r"Unknown data.features \['boxs'\]"),
    (dict(name="coco/2017", features=("image", "masks")), {},
     r"'coco/2017' is not prepared .* jaxvision never downloads"),
    (dict(max_objects=3), {}, r"max_objects=3 exceeds data.max_boxes=1"),
    ({}, dict(split="valid"), r"Unknown split 'valid'.*'validation'"),
    ({}, dict(batch=15, count=2), r"batch size 15 must be a positive multiple of .* \(2\)"),
    (dict(name="imagenet2012"), {}, r"Unknown data source 'imagenet2012'.*'tfds:<argument>'"),
])
def test_bad_settings_raise_clear_errors(single_config, change, kwargs, message):
  config = single_config.copy_and_resolve_references()
  config.update(change)
  with pytest.raises(ValueError, match=message):
    _pipeline(config, **kwargs)


def test_data_config_defaults_and_unknown_fields():
  config = data.shapes_data_config()
  assert (config.name, config.image_size, config.num_train, config.num_validation,
          config.num_test, config.max_boxes, config.features, config.data_dir) == (
              "shapes", 64, 20000, 1000, 1000, 1, ("image", "boxes", "labels"), None)
  assert data.shapes_data_config(max_objects=10).max_boxes == 10
  assert data.shapes_data_config(max_objects=10, max_boxes=12).max_boxes == 12
  with pytest.raises(ValueError, match=r"Unknown data config field\(s\) \['max_box'\]"):
    data.shapes_data_config(max_box=3)


def test_iterate_prefetches_without_blocking_shutdown(single_config):
  """Abandoning the generator early must not leave the process hanging."""
  batches = list(itertools.islice(_pipeline(single_config).iterate(0), 3))
  assert len(batches) == 3
