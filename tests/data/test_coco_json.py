"""``data.name = "coco_json"``: a COCO-format dataset written to disk and read back directly.

The dataset has JPEG and PNG images, a grey, an RGBA and an EXIF-rotated one, an image
without annotations, a crowd region, polygon and (compressed and uncompressed) RLE masks,
keypoints and non-contiguous category ids; its validation json reuses the training json's
image ids. It is decoded, trained on with the detector's quick config and evaluated against
the json itself (checked against pycocotools' COCOeval).
"""

import copy
import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxvision import data, parallel, trainer
from jaxvision.data import coco_json
from jaxvision.evaluation import coco, evaluators
from jaxvision.tasks import get_task

import configs.faster_rcnn_coco_json as json_config

# Listed out of id order: labels follow the ids (dog 3 -> 0, cat 7 -> 1, bird 11 -> 2).
CATEGORIES = [{"id": 11, "name": "bird"},
              {"id": 3, "name": "dog", "keypoints": ["left_ear", "right_ear"]},
              {"id": 7, "name": "cat"}]
CATEGORY_IDS = (3, 7, 11)


def rectangle(x, y, w, h):
  return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def box_mask(height, width, x, y, w, h):
  mask = np.zeros((height, width), np.uint8)
  mask[y:y + h, x:x + w] = 1
  return mask


def compressed_rle(mask):
  rle = mask_utils.encode(np.asfortranarray(mask))
  return {"size": rle["size"], "counts": rle["counts"].decode()}


def uncompressed_rle(mask):
  """COCO's crowd format: run lengths of the column-major mask, starting with zeros."""
  flat = mask.ravel(order="F")
  changes = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def scene(height, width, boxes, seed):
  """Dark noise with a bright block inside each box (so the detector has something to see)."""
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
  for x, y, w, h in boxes:
    image[y:y + h, x:x + w] = (220, 180 - 40 * (w % 3), 60)
  return image


def annotation(id_, image_id, category_id, bbox, segmentation=None, **extra):
  x, y, w, h = bbox
  return {"id": id_, "image_id": image_id, "category_id": category_id, "bbox": list(bbox),
          "area": float(w * h), "iscrowd": 0,
          "segmentation": rectangle(*bbox) if segmentation is None else segmentation, **extra}


def write_dataset(root):
  """Writes train and validation jsons and images under ``root``; returns what to expect."""
  expected = {}
  train_dir = os.path.join(root, "train")
  os.makedirs(train_dir)
  # rgb.jpg: a polygon (with keypoints) and a compressed-RLE object.
  rgb_rle = box_mask(32, 48, 28, 8, 16, 20)
  Image.fromarray(scene(32, 48, [(4, 4, 20, 12), (28, 8, 16, 20)], 0)).save(
      os.path.join(train_dir, "rgb.jpg"), quality=95)
  # crowd.png: a crowd region (uncompressed RLE) and a polygon object.
  crowd = box_mask(40, 40, 0, 0, 16, 16)
  Image.fromarray(scene(40, 40, [(0, 0, 16, 16), (20, 20, 16, 12)], 1)).save(
      os.path.join(train_dir, "crowd.png"))
  grey = scene(32, 32, [(8, 8, 12, 12)], 2)[..., 0]
  Image.fromarray(grey, "L").save(os.path.join(train_dir, "grey.png"))
  rgba = np.concatenate([scene(28, 36, [(2, 2, 20, 20)], 3),
                         np.full((28, 36, 1), 128, np.uint8)], axis=2)
  Image.fromarray(rgba, "RGBA").save(os.path.join(train_dir, "rgba.png"))
  Image.fromarray(scene(24, 32, [], 4)).save(os.path.join(train_dir, "empty.jpg"))
  # rotated.jpg: stored 90 degrees counter-clockwise, EXIF orientation 6 turns it upright.
  upright = np.zeros((24, 40, 3), np.uint8)
  upright[4:14, 10:30] = 255
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(
      os.path.join(train_dir, "rotated.jpg"), quality=95, exif=exif.tobytes())
  expected.update(rgb_rle=rgb_rle, crowd=crowd, grey=grey, rgba=rgba, upright=upright)

  train = {
      "images": [
          {"id": 1, "file_name": "rgb.jpg", "width": 48, "height": 32},
          {"id": 2, "file_name": "crowd.png", "width": 40, "height": 40},
          {"id": 3, "file_name": "grey.png", "width": 32, "height": 32},
          {"id": 4, "file_name": "rgba.png", "width": 36, "height": 28},
          {"id": 5, "file_name": "empty.jpg", "width": 32, "height": 24},
          {"id": 6, "file_name": "rotated.jpg", "width": 40, "height": 24},
      ],
      "annotations": [
          annotation(10, 1, 3, (4, 4, 20, 12), keypoints=[6, 6, 2, 20, 6, 1], num_keypoints=2),
          annotation(11, 1, 7, (28, 8, 16, 20), compressed_rle(rgb_rle)),
          {**annotation(12, 2, 7, (0, 0, 16, 16), uncompressed_rle(crowd)), "iscrowd": 1},
          annotation(13, 2, 11, (20, 20, 16, 12)),
          annotation(14, 3, 3, (8, 8, 12, 12), keypoints=[10, 10, 2, 0, 0, 0], num_keypoints=1),
          annotation(15, 4, 11, (2, 2, 20, 20)),
          annotation(16, 6, 3, (10, 4, 20, 10)),
      ],
      "categories": CATEGORIES,
  }
  val_dir = os.path.join(root, "val")
  os.makedirs(val_dir)
  Image.fromarray(scene(30, 40, [(2, 2, 14, 10), (20, 10, 16, 16)], 5)).save(
      os.path.join(val_dir, "a.png"))
  Image.fromarray(scene(32, 32, [(4, 4, 20, 20)], 6)).save(
      os.path.join(val_dir, "b.jpg"), quality=95)
  Image.fromarray(scene(20, 20, [], 7)).save(os.path.join(val_dir, "empty.png"))
  validation = {
      # The same ids as training images: examples are told apart by position, not json id.
      "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                 {"id": 2, "file_name": "b.jpg", "width": 32, "height": 32},
                 {"id": 3, "file_name": "empty.png", "width": 20, "height": 20}],
      "annotations": [
          annotation(1, 1, 3, (2, 2, 14, 10)),
          annotation(2, 1, 7, (20, 10, 16, 16)),
          annotation(3, 2, 11, (4, 4, 20, 20)),
          {**annotation(4, 2, 3, (0, 26, 32, 6),
                        uncompressed_rle(box_mask(32, 32, 0, 26, 32, 6))), "iscrowd": 1},
      ],
      "categories": CATEGORIES,
  }
  paths = {"train": os.path.join(root, "train.json"),
           "validation": os.path.join(root, "val.json")}
  for split, content in (("train", train), ("validation", validation)):
    with open(paths[split], "w") as f:
      json.dump(content, f)
  roots = {"train": train_dir, "validation": val_dir}
  return paths, roots, expected


def quick_config(paths, roots):
  config = json_config.get_config("quick")
  for split in ("train", "validation"):
    config.data.annotations[split] = paths[split]
    config.data.image_root[split] = roots[split]
  return config


def mesh_of(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("coco_json"))
  paths, roots, expected = write_dataset(root)
  return quick_config(paths, roots), paths, expected


def test_examples_decode_boxes_masks_keypoints_and_every_image_kind(dataset):
  config, _, expected = dataset
  source = data.get_source(config.data)
  assert source.metadata.class_names == ("dog", "cat", "bird")
  assert source.metadata.category_ids == CATEGORY_IDS
  assert set(data.FEATURES) - {"label", "semantic"} == source.metadata.features
  np.testing.assert_array_equal(source.metadata.keypoint_flip_permutation(2), [1, 0])
  records = source.records("train")
  examples = [source.to_example(record, frozenset(data.FEATURES)) for record in records]
  rgb, crowd, grey, rgba, empty, rotated = examples

  np.testing.assert_array_equal(rgb["boxes"], [[4, 4, 24, 16], [28, 8, 44, 28]])
  np.testing.assert_array_equal(rgb["labels"], [0, 1])
  assert rgb["image"].shape == (32, 48, 3)
  # A polygon covers the pixels [x1, x2) x [y1, y2); RLE decodes to the mask it encodes.
  np.testing.assert_array_equal(rgb["masks"][0], box_mask(32, 48, 4, 4, 20, 12))
  np.testing.assert_array_equal(rgb["masks"][1], expected["rgb_rle"])
  np.testing.assert_array_equal(rgb["keypoints"], [[[6, 6, 2], [20, 6, 1]], np.zeros((2, 3))])

  np.testing.assert_array_equal(crowd["is_crowd"], [True, False])
  np.testing.assert_array_equal(crowd["labels"], [1, 2])
  np.testing.assert_array_equal(crowd["masks"][0], expected["crowd"])
  np.testing.assert_array_equal(grey["image"], np.repeat(expected["grey"][..., None], 3, 2))
  np.testing.assert_array_equal(rgba["image"], expected["rgba"][..., :3])
  assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
  assert empty["image"].shape == (24, 32, 3)
  # EXIF orientation applied: the stored 40 x 24 pixels come out upright, 24 x 40.
  assert rotated["image"].shape == (24, 40, 3)
  assert np.abs(rotated["image"].astype(int) - expected["upright"]).mean() < 8
  # Image ids: positions over the sorted splits laid end to end (json ids repeat).
  assert [int(example["image_id"]) for example in examples] == list(range(6))
  assert [source.image(i).json_id for i in range(6, 9)] == [1, 2, 3]
  assert source.image(6).split == "validation"


def test_pipeline_letterboxes_and_the_evaluator_maps_boxes_back(dataset):
  config, _, _ = dataset
  config = copy.deepcopy(config)
  config.data.features = ("image", "boxes", "labels", "masks", "is_crowd")
  pipeline = data.Pipeline(config.data, "train", 8, seed=0, train=False)
  batch = next(pipeline.eval_batches())
  # rgb.jpg (48 x 32) in the 64 px letterbox: 64 x 43 pixels, padded at the bottom.
  np.testing.assert_allclose(batch["boxes"][0, :2], np.asarray(
      [[4, 4, 24, 16], [28, 8, 44, 28]]) * ([64 / 48, 43 / 32] * 2), rtol=1e-6)
  assert batch["masks"].shape == (8, config.data.max_boxes, 64, 64)
  np.testing.assert_array_equal(batch["is_crowd"][1, :2], [True, False])
  back = coco_json.original_boxes(batch["boxes"][0, :2], 32, 48, 64)
  np.testing.assert_allclose(back, [[4, 4, 24, 16], [28, 8, 44, 28]], atol=1e-4)


def perfect_outputs(batch, classes=None):
  """Detections equal to the batch's ground-truth boxes (proposals likewise)."""
  valid = batch["box_valid"]
  outputs = {"boxes": batch["boxes"], "scores": valid.astype(np.float32),
             "classes": batch["labels"] if classes is None else classes, "valid": valid}
  return {**outputs, "proposal_boxes": batch["boxes"], "proposal_scores": outputs["scores"],
          "proposal_valid": valid}


def evaluate_task(task, make_outputs):
  evaluator = task.make_evaluator()
  for batch in task.eval_batches("validation"):
    evaluator.add(make_outputs(batch), batch)
  return evaluator


def cocoeval_stats(json_path, detections):
  """pycocotools' numbers for detections against the json file itself."""
  ground_truth = COCO(json_path)
  evaluation = COCOeval(ground_truth, ground_truth.loadRes(copy.deepcopy(detections)), "bbox")
  evaluation.evaluate()
  evaluation.accumulate()
  evaluation.summarize()
  return dict(zip(coco.DETECTION_SUMMARY_KEYS, evaluation.stats))


def test_evaluation_is_against_the_json_in_its_category_ids(dataset):
  config, paths, _ = dataset
  task = get_task(config, mesh_of(1))
  assert task.num_classes == 3  # model.num_classes unset: the json's categories

  perfect = evaluate_task(task, perfect_outputs)
  ground_truth = perfect.detections.ground_truth_dict()
  with open(paths["validation"]) as f:
    validation = json.load(f)
  assert ground_truth["annotations"] == validation["annotations"]
  assert sorted(image["id"] for image in ground_truth["images"]) == [1, 2, 3]
  counts = {i: sum(a["category_id"] == i for a in ground_truth["annotations"])
            for i in CATEGORY_IDS}
  assert counts == {3: 2, 7: 1, 11: 1}
  detections = perfect.detections.detection_dicts()
  assert {d["category_id"] for d in detections} == set(CATEGORY_IDS)
  # Detections equal to the ground truth, mapped back to the json's pixels, match it.
  stats = perfect.result()
  assert stats["AP"] == pytest.approx(1.0) and stats["AP75"] == pytest.approx(1.0)
  reference = cocoeval_stats(paths["validation"], detections)
  for key in coco.DETECTION_SUMMARY_KEYS:
    assert stats[key] == pytest.approx(reference[key], abs=1e-12), key

  # The same boxes under another class (another json id) match nothing.
  wrong = evaluate_task(task, lambda batch: perfect_outputs(batch, (batch["labels"] + 1) % 3))
  assert wrong.result()["AP"] == 0.0

  # Jittered boxes with random scores: the project's evaluator equals COCOeval on the json.
  rng = np.random.default_rng(0)

  def jittered(batch):
    outputs = perfect_outputs(batch)
    outputs["boxes"] = batch["boxes"] + rng.uniform(-3, 3, batch["boxes"].shape)
    outputs["scores"] = rng.uniform(0.1, 1, batch["box_valid"].shape)
    return outputs
  noisy = evaluate_task(task, jittered)
  stats, reference = noisy.result(), cocoeval_stats(paths["validation"],
                                                    noisy.detections.detection_dicts())
  assert 0 < stats["AP"] < 1
  for key in coco.DETECTION_SUMMARY_KEYS:
    assert stats[key] == pytest.approx(reference[key], abs=1e-12), key


def test_quick_config_trains_evaluates_and_predicts_json_ids(dataset, tmp_path):
  config, _, _ = dataset
  mesh = mesh_of(2)
  task = get_task(config, mesh)
  first = task.train_batch(0)
  task.validate_batch(first)
  state = trainer.init_state(task, config, first)
  train_step = trainer.make_train_step(task, config)
  losses = []
  for step in range(config.total_steps):
    batch = task.train_batch(step)
    state, metrics = train_step(state, parallel.global_batch(batch, mesh))
    losses.append(float(jax.device_get(metrics["loss"])))
  assert np.all(np.isfinite(losses)), losses
  metrics = evaluators.run_evaluators(
      evaluators.make_evaluators(task, config, str(tmp_path)), state, config.total_steps,
      config.seed)
  for key in coco.DETECTION_SUMMARY_KEYS + ("rpn_AR100",):
    assert -1.0 <= metrics[key] <= 1.0, (key, metrics[key])
  out = task.predict(task.inference_variables(state), first["image"][:2])
  classes, valid = np.asarray(out["classes"]), np.asarray(out["valid"])
  np.testing.assert_array_equal(np.asarray(out["category_ids"])[valid],
                                np.asarray(CATEGORY_IDS)[classes[valid]])


# --- errors, raised when the source is built (before anything compiles) ------------------


def broken(tmp_path, change):
  """A fresh dataset with ``change(train_json_dict, root)`` applied; its data config."""
  paths, roots, _ = write_dataset(str(tmp_path))
  with open(paths["train"]) as f:
    content = json.load(f)
  change(content, str(tmp_path))
  with open(paths["train"], "w") as f:
    json.dump(content, f)
  return quick_config(paths, roots).data


def test_missing_image_names_the_file(tmp_path):
  data_config = broken(tmp_path, lambda content, root: os.remove(
      os.path.join(root, "train", "grey.png")))
  with pytest.raises(ValueError, match=r"do not exist: \[.*train/grey\.png'\]"):
    data.get_source(data_config)


def test_image_removed_after_building_is_named_when_read(tmp_path):
  data_config = broken(tmp_path, lambda content, root: None)
  source = data.get_source(data_config)
  os.remove(os.path.join(str(tmp_path), "train", "rgba.png"))
  with pytest.raises(ValueError, match=r"train/rgba\.png \(.*train\.json: image 4 "
                                       r"\(rgba\.png\)\) does not exist"):
    source.to_example(source.records("train")[3], frozenset({"image", "boxes"}))


def test_box_outside_the_image_names_annotation_file_and_box(tmp_path):
  def change(content, root):
    content["annotations"][0]["bbox"] = [30, 20, 30, 30]  # image 1 is 48 x 32
  with pytest.raises(ValueError, match=r"train\.json: annotation 10 of image 1 \(rgb\.jpg\) "
                                       r"has bbox \[x, y, w, h\] = \[30, 20, 30, 30\], outside"):
    data.get_source(broken(tmp_path, change))


def test_unknown_category_names_annotation_and_file(tmp_path):
  def change(content, root):
    content["annotations"][3]["category_id"] = 99
  with pytest.raises(ValueError, match=r"annotation 13 of image 2 \(crowd\.png\) has "
                                       r"category_id 99, which is not in the json's categories "
                                       r"\(ids \[3, 7, 11\]\)"):
    data.get_source(broken(tmp_path, change))
