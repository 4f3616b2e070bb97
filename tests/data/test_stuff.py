"""Stuff in the shapes data (``data.stuff_classes``): the default unchanged, textured stuff
regions under the objects, the things + stuff semantic map through the pipeline, pictures."""

import hashlib

import cv2
import ml_collections
import numpy as np
import pytest

from jaxvision import data, viz
from jaxvision.data import datasets, shapes, transforms
from jaxvision.data.pipeline import StandardPreprocess
from jaxvision.tasks import get_task

import configs.fcn_shapes as fcn_config

NUM_THINGS = len(shapes.CLASS_NAMES)
# sha256 of every array of shapes.render_example(default_rng([seed, 0, i]), ...) for i < 8,
# computed by the code from before stuff existed: the default dataset's bytes (and so the
# caches and results made with it) must not change. A change of numpy's generator stream
# or of Pillow's polygon fill would also show here: the dataset would then change too.
_DIGESTS_BEFORE_STUFF = {
    (32, 1, 1, 0): "055609b62d72a8e5cea18bf199212c4e5c78b6c5a66cac4aa0b8acc3fee42a68",
    (64, 2, 10, 1): "eac4f0e237b781dfc63e79a66a4b3a2b46a39cbc5ce007b0bb1f42daba896f96",
}


def _render(index, image_size=48, min_objects=1, max_objects=4, stuff_classes=4, seed=0):
  return shapes.render_example(np.random.default_rng([seed, 0, index]), image_size,
                               min_objects, max_objects, 4, stuff_classes=stuff_classes)


def _digest(image_size, min_objects, max_objects, seed, **option):
  digest = hashlib.sha256()
  for index in range(8):
    drawn = shapes.render_example(np.random.default_rng([seed, 0, index]), image_size,
                                  min_objects, max_objects, 4, **option)
    for name in sorted(drawn):
      digest.update(name.encode())
      digest.update(np.ascontiguousarray(drawn[name]).tobytes())
  return digest.hexdigest()


@pytest.mark.parametrize("setting", sorted(_DIGESTS_BEFORE_STUFF))
def test_no_stuff_draws_exactly_what_was_drawn_before(setting):
  assert _digest(*setting) == _DIGESTS_BEFORE_STUFF[setting]
  assert _digest(*setting, stuff_classes=0) == _DIGESTS_BEFORE_STUFF[setting]


def test_stuff_classes_name_the_config_only_when_set(tmp_path):
  default = "size64_objects1-1_keypoints4_train20000_validation1000_test1000_seed0"
  assert shapes.ShapesConfig().name == shapes.ShapesConfig(stuff_classes=0).name == default
  assert data.shapes_data_config().stuff_classes == 0
  assert datasets.shapes_builder_config(data.shapes_data_config()).name == default
  assert shapes.ShapesConfig(stuff_classes=3).name == default + "_stuff3"
  plain = shapes.Shapes(config=shapes.ShapesConfig(), data_dir=str(tmp_path))
  stuffed = shapes.Shapes(config=shapes.ShapesConfig(stuff_classes=3), data_dir=str(tmp_path))
  assert "stuff_map" not in plain.info.features
  assert stuffed.info.features["stuff_map"].shape == (64, 64)
  for bad in (-1, len(shapes.STUFF_NAMES) + 1):
    with pytest.raises(ValueError, match="stuff_classes"):
      shapes.ShapesConfig(stuff_classes=bad)
  assert len(shapes.STUFF_NAMES) >= 6 and len(set(shapes.STUFF_NAMES)) == len(shapes.STUFF_NAMES)


@pytest.mark.parametrize("stuff_classes", [1, 3, 6])
def test_every_pixel_has_a_stuff_class_in_few_large_connected_regions(stuff_classes):
  size = 48
  for index in range(60):
    drawn = _render(index, image_size=size, stuff_classes=stuff_classes)
    stuff_map = drawn["stuff_map"]
    assert stuff_map.dtype == np.uint8 and stuff_map.shape == (size, size)
    assert stuff_map.min() >= 1 and stuff_map.max() <= stuff_classes
    classes, areas = np.unique(stuff_map, return_counts=True)
    assert min(2, stuff_classes) <= len(classes) <= stuff_classes
    assert areas.min() >= shapes.MIN_STUFF_FRACTION / len(classes) * size ** 2, areas
    for stuff_class, area in zip(classes, areas):  # one blob each, not scattered islands
      _, components = cv2.connectedComponents((stuff_map == stuff_class).astype(np.uint8),
                                              connectivity=4)
      assert np.bincount(components.ravel())[1:].max() >= 0.95 * area


def test_semantic_map_is_things_over_stuff_and_objects_stay_flat_and_contrasting():
  contrasts = []
  for index in range(40):
    drawn = _render(index, stuff_classes=4)
    instances, labels = drawn["instance_map"], drawn["labels"]
    semantic = shapes.semantic_map(instances, labels, drawn["stuff_map"])
    thing = instances > 0
    np.testing.assert_array_equal(semantic[thing], labels[instances[thing] - 1] + 1)
    np.testing.assert_array_equal(semantic[~thing], NUM_THINGS + drawn["stuff_map"][~thing])
    assert semantic.min() >= 1 and semantic.max() <= NUM_THINGS + 4
    # Without a stuff map the old contract: 0 on background.
    plain = shapes.semantic_map(instances, labels)
    assert np.all(plain[~thing] == 0) and np.array_equal(plain[thing], semantic[thing])
    image = drawn["image"].astype(np.float32)
    for k in range(len(labels)):
      mask = (instances == k + 1).astype(np.uint8)
      ring = (cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0) & ~thing
      if mask.sum() < 20 or ring.sum() < 10:
        continue
      # One flat colour plus the pixel noise (std ~9), unlike the textures around it.
      assert image[mask > 0].std(axis=0).mean() < 11
      contrasts.append(np.linalg.norm(image[mask > 0].mean(0) - image[ring].mean(0)))
  assert len(contrasts) > 40 and np.median(contrasts) > 80, np.median(contrasts)


def _texture_descriptors(seed, count, flip=False, size=64, stuff_classes=6):
  """(stuff class, unit-norm descriptor) of every region of images without objects: the
  spectrum amplitude of the region's grey values, folded over the sign of the vertical
  frequency (a horizontal flip's symmetry) and pooled 2 x 2."""
  descriptors = []
  for index in range(count):
    drawn = _render(index, image_size=size, min_objects=0, max_objects=0,
                    stuff_classes=stuff_classes, seed=seed)
    grey, stuff_map = drawn["image"].astype(np.float32).mean(axis=-1), drawn["stuff_map"]
    if flip:
      grey, stuff_map = grey[:, ::-1], stuff_map[:, ::-1]
    for stuff_class in np.unique(stuff_map):
      inside = stuff_map == stuff_class
      amplitude = np.abs(np.fft.rfft2(np.where(inside, grey - grey[inside].mean(), 0)))
      amplitude = amplitude[:, :size // 2]
      folded = amplitude[:size // 2] + np.roll(amplitude[::-1], 1, axis=0)[:size // 2]
      pooled = folded.reshape(size // 4, 2, size // 4, 2).sum(axis=(1, 3)).ravel()
      descriptors.append((int(stuff_class), pooled / np.linalg.norm(pooled)))
  return descriptors


def test_textures_tell_the_stuff_classes_apart_and_colours_do_not():
  num_stuff = len(shapes.STUFF_NAMES)
  train = _texture_descriptors(seed=11, count=50)
  centroids = np.stack([np.mean([d for c, d in train if c == s], axis=0)
                        for s in range(1, num_stuff + 1)])
  centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
  for flip in (False, True):  # held-out images, and mirrored: a flip keeps the class
    held_out = _texture_descriptors(seed=12, count=30, flip=flip)
    predicted = np.array([np.argmax(centroids @ d) + 1 for _, d in held_out])
    truth = np.array([c for c, _ in held_out])
    assert set(truth) == set(range(1, num_stuff + 1))
    assert np.mean(predicted == truth) >= 0.9, (flip, np.mean(predicted == truth))  # chance 1/6

  classes, colours = [], []
  for index in range(150):
    drawn = _render(index, min_objects=0, max_objects=0, stuff_classes=num_stuff, seed=13)
    for stuff_class in np.unique(drawn["stuff_map"]):
      classes.append(stuff_class)
      colours.append(drawn["image"][drawn["stuff_map"] == stuff_class].mean(axis=0))
  classes, colours = np.array(classes), np.array(colours)
  overall_mean, overall_std = colours.mean(axis=0), colours.std(axis=0)
  assert np.all(overall_std > 30), overall_std
  for stuff_class in range(1, num_stuff + 1):
    in_class = colours[classes == stuff_class]
    standard_error = overall_std / np.sqrt(len(in_class))
    assert np.all(np.abs(in_class.mean(axis=0) - overall_mean) < 4 * standard_error), (
        shapes.STUFF_NAMES[stuff_class - 1], in_class.mean(axis=0), overall_mean)


@pytest.fixture(scope="module")
def stuff_config(shared_data_dir) -> ml_collections.ConfigDict:
  return data.shapes_data_config(image_size=40, min_objects=1, max_objects=4, num_train=12,
                                 num_validation=4, num_test=2, seed=2, stuff_classes=3,
                                 features=("image", "boxes", "labels", "masks", "semantic"),
                                 data_dir=shared_data_dir)


def _assert_semantic_is_things_over_stuff(semantic, masks, labels, valid, stuff_classes,
                                          ignore_label=255):
  """Where a valid mask is, its label + 1; elsewhere a stuff class (or padding)."""
  expected = np.full(semantic.shape, -1)
  for mask, label in zip(masks[valid], labels[valid]):
    expected[mask > 0] = label + 1
  thing = expected >= 0
  np.testing.assert_array_equal(semantic[thing], expected[thing])
  rest = semantic[~thing]
  assert np.all(((rest > NUM_THINGS) & (rest <= NUM_THINGS + stuff_classes))
                | (rest == ignore_label))


def test_built_dataset_and_pipeline_keep_things_over_stuff_through_flips_and_letterbox(
    stuff_config):
  builder = data.build_dataset(stuff_config)
  assert builder.builder_config.name.endswith("_stuff3")
  train_records = builder.as_data_source("train")
  for index in (0, len(train_records) - 1):
    drawn = shapes.render_example(np.random.default_rng([2, 0, index]), 40, 1, 4, 4,
                                  stuff_classes=3)
    np.testing.assert_array_equal(train_records[index]["stuff_map"], drawn["stuff_map"])
    np.testing.assert_array_equal(train_records[index]["image"], drawn["image"])

  source = data.get_source(stuff_config)
  assert source.metadata.stuff_class_names == shapes.STUFF_NAMES[:3]
  assert source.metadata.semantic_class_names == (
      ("void",) + shapes.CLASS_NAMES + shapes.STUFF_NAMES[:3])
  assert data.get_source(data.shapes_data_config()).metadata.semantic_class_names is None

  plain = next(data.Pipeline(stuff_config, "train", 12, seed=0, train=False).eval_batches())
  flips = 0
  pipeline = data.Pipeline(stuff_config, "train", 12, seed=0, train=True)
  for step in range(3):
    batch = pipeline.host_batch(step)
    for row in range(12):
      _assert_semantic_is_things_over_stuff(batch["semantic"][row], batch["masks"][row],
                                            batch["labels"][row], batch["box_valid"][row], 3)
      stored = plain["semantic"][batch["image_id"][row]]
      stored_image = plain["image"][batch["image_id"][row]]
      if np.array_equal(batch["image"][row], stored_image):
        np.testing.assert_array_equal(batch["semantic"][row], stored)
      else:
        flips += 1
        np.testing.assert_array_equal(batch["image"][row], stored_image[:, ::-1])
        np.testing.assert_array_equal(batch["semantic"][row], stored[:, ::-1])
  assert 0 < flips < 36

  # A non-square example letterboxed into a larger square: padding ignored, the rest still
  # things over stuff, and no new stuff classes appear (nearest-neighbour resizing).
  features = frozenset(stuff_config.features)
  example = {name: value for name, value in source.to_example(train_records[0], features).items()
             if name in features}
  cropped = dict(example, image=example["image"][:, :26], semantic=example["semantic"][:, :26],
                 masks=example["masks"][:, :, :26])
  cropped["boxes"] = np.minimum(example["boxes"], [26, 40, 26, 40]).astype(np.float32)
  wider = data.shapes_data_config(**{**stuff_config.to_dict(), "image_size": 64})
  row = StandardPreprocess(wider, source.metadata)(cropped, None)
  new_height, new_width = transforms.letterbox_size(40, 26, 64)
  assert row["semantic"].shape == (64, 64) and new_width < 64
  assert np.all(row["semantic"][:, new_width:] == 255)
  _assert_semantic_is_things_over_stuff(row["semantic"], row["masks"], row["labels"],
                                        row["box_valid"], 3)
  inside = row["semantic"][:new_height, :new_width]
  stuff_before = set(cropped["semantic"][cropped["semantic"] > NUM_THINGS].tolist())
  assert set(inside[inside > NUM_THINGS].tolist()) <= stuff_before


def test_fcn_classes_follow_the_semantic_map():
  config = fcn_config.get_config("quick")
  assert get_task(config).class_names == ("background",) + shapes.CLASS_NAMES
  config.data.stuff_classes = 3
  task = get_task(config)
  assert task.class_names == ("void",) + shapes.CLASS_NAMES + shapes.STUFF_NAMES[:3]
  assert task.num_classes == 1 + NUM_THINGS + 3


def test_draw_panoptic_colours_segments_over_the_image_with_a_legend():
  drawn = _render(3, image_size=40, min_objects=2, max_objects=4, stuff_classes=3)
  instances, stuff_map = drawn["instance_map"].astype(np.int32), drawn["stuff_map"]
  panoptic = np.where(instances > 0, instances, 100 + stuff_map)
  panoptic[:4, :4] = 0  # void
  segments = [{"id": k + 1, "category_id": int(label), "isthing": True}
              for k, label in enumerate(drawn["labels"])]
  segments += [{"id": 100 + int(s), "category_id": NUM_THINGS + int(s) - 1, "isthing": False}
               for s in np.unique(stuff_map)]
  names = shapes.CLASS_NAMES + shapes.STUFF_NAMES[:3]
  picture = viz.draw_panoptic(drawn["image"], panoptic, segments, names, scale=3)
  assert picture.dtype == np.uint8 and picture.shape[1:] == (120, 3)
  assert picture.shape[0] > 120  # the legend below
  overlay = picture[:120:3, ::3]
  np.testing.assert_array_equal(overlay[:4, :4], drawn["image"][:4, :4])  # void untouched
  thing_colours = {tuple(overlay[instances == k + 1].mean(axis=0).round())
                   for k in range(len(drawn["labels"]))}
  assert len(thing_colours) == len(drawn["labels"])  # one colour per instance
  # The size depends only on the image and the categories, so pictures tile into a grid.
  fewer = viz.draw_panoptic(drawn["image"], panoptic, segments[:1], names, scale=3)
  assert fewer.shape == picture.shape
  legend = picture[120:]
  assert (legend < 128).any()  # names and swatches were drawn
  with pytest.raises(ValueError, match="category_id"):
    viz.draw_panoptic(drawn["image"], panoptic, [{"id": 1, "category_id": 99,
                                                  "isthing": True}], names)
