"""Panoptic FPN (``configs/panoptic_fpn_shapes.py``): training through the trainer's entry
point, the PQ keys beside the box and mask keys, ``predict`` with the panoptic map and its
segments, pictures, and the config checks made before anything compiles."""

import json
import os

import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import checkpoint, parallel, trainer
from jaxvision.evaluation import coco
from jaxvision.tasks import get_task

import configs.panoptic_fpn_shapes as panoptic_config

PANOPTIC_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """The quick config trained and evaluated by ``trainer.train_and_evaluate`` on 2 devices."""
  config = panoptic_config.get_config("quick")
  workdir = str(tmp_path_factory.mktemp("panoptic_fpn"))
  mesh = Mesh(np.asarray(jax.devices()[:2]), (parallel.DATA_AXIS,))
  final = trainer.train_and_evaluate(config, workdir, mesh=mesh)
  with open(os.path.join(workdir, trainer.METRICS_FILE)) as f:
    records = [json.loads(line) for line in f]
  return config, workdir, final, records


def test_quick_config_trains_every_head_and_the_semantic_loss_falls(run):
  config, _, _, records = run
  train = [r for r in records if "train/loss" in r]
  assert len(train) == config.total_steps // config.log_every
  for name in ("loss", "rpn_objectness", "roi_classifier", "roi_mask", "semantic"):
    values = np.array([r[f"train/{name}"] for r in train])
    assert np.all(np.isfinite(values)), (name, values)
  assert all(0.0 <= r["train/semantic_accuracy"] <= 1.0 for r in train)
  semantic = np.array([r["train/semantic"] for r in train])
  assert semantic[-1] < 0.85 * semantic[0], semantic


def test_evaluation_reports_pq_keys_beside_box_and_segm_keys_and_draws_the_maps(run):
  _, workdir, final, _ = run
  keys = set(coco.DETECTION_SUMMARY_KEYS) | {f"segm_{k}" for k in coco.DETECTION_SUMMARY_KEYS}
  assert keys <= set(final), sorted(final)
  for key in PANOPTIC_KEYS:
    assert np.isfinite(final[key]) and 0.0 <= final[key] <= 1.0, (key, final[key])
  pictures = os.listdir(os.path.join(workdir, "pictures"))
  assert any(name.endswith("_panoptic.png") for name in pictures), pictures


def test_predict_returns_the_panoptic_map_and_its_segments(run):
  config, workdir, _, _ = run
  _, _, variables = checkpoint.restore_for_inference(workdir)
  task = get_task(config, Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,)))
  images = task.train_batch(0)["image"][:2]
  out = task.predict(variables, images)
  size, detections = config.data.image_size, config.model.max_detections
  chex.assert_shape(out["panoptic"], (2, size, size))
  num_things, num_stuff = config.model.num_classes, config.model.num_stuff_classes
  for panoptic, segments, classes, valid in zip(
      np.asarray(out["panoptic"]), out["segments_info"], np.asarray(out["classes"]),
      np.asarray(out["valid"])):
    ids = np.unique(panoptic)
    assert ids.min() >= 0 and ids.max() <= detections + num_stuff
    assert [s["id"] for s in segments] == [i for i in ids.tolist() if i > 0]
    for segment in segments:
      if segment["isthing"]:
        assert valid[segment["id"] - 1]
        assert segment["category_id"] == classes[segment["id"] - 1]
      else:
        assert segment["category_id"] == num_things + segment["id"] - detections - 1
      assert 0 <= segment["category_id"] < len(task.panoptic_category_names)


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c.model, "mask_head", False), "set config.model.mask_head=True"),
    (lambda c: setattr(c.data, "stuff_classes", 0), "config.data.stuff_classes > 0"),
    (lambda c: setattr(c.model, "num_stuff_classes", 3),
     "num_stuff_classes=3 must equal config.data.stuff_classes=4"),
    (lambda c: setattr(c.data, "features", ("image", "boxes", "labels", "masks")),
     "add it to config.data.features"),
])
def test_bad_panoptic_settings_are_errors_before_compiling(change, match):
  config = panoptic_config.get_config("quick")
  change(config)
  with pytest.raises(ValueError, match=match):
    get_task(config)
