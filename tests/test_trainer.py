"""End to end: train the quick config, evaluate, restore, transfer; data-parallel parity."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import checkpoint, parallel, trainer
from jaxvision.evaluation import evaluators
from jaxvision.evaluate import evaluate_workdir
from jaxvision.tasks import get_task

import configs.classify_localize_shapes as classify_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = ("eval/accuracy", "eval/mean_iou", "eval/localization_accuracy")


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained once on the 8 test devices."""
  workdir = str(tmp_path_factory.mktemp("classify_quick"))
  config = classify_config.get_config("quick")
  metrics = trainer.train_and_evaluate(config, workdir)
  return config, workdir, metrics


def test_train_writes_metrics_checkpoints_pictures(trained):
  config, workdir, metrics = trained
  assert jax.device_count() == 8
  lines = read_metrics(workdir)
  assert all("step" in line for line in lines)
  final = [line for line in lines if "eval/accuracy" in line][-1]
  assert final["step"] == config.total_steps
  for key in METRIC_KEYS:
    assert 0.0 <= final[key] <= 1.0
    assert final[key] == pytest.approx(metrics[key.removeprefix("eval/")])
  assert any("train/loss" in line for line in lines)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert checkpoint.Checkpointer(workdir).latest_step() == config.total_steps
  pictures = os.listdir(os.path.join(workdir, "pictures"))
  assert any(p.endswith(".png") for p in pictures)


def test_evaluate_reproduces_final_metrics(trained):
  config, workdir, metrics = trained
  step, again = evaluate_workdir(config, workdir)
  assert step == config.total_steps
  for key in ("accuracy", "mean_iou", "localization_accuracy"):
    assert again[key] == pytest.approx(metrics[key], abs=1e-6)
  assert os.path.exists(os.path.join(workdir, f"eval_validation_step{step}.json"))


def test_restore_for_inference_predicts(trained):
  config, workdir, _ = trained
  restored_config, model, variables = checkpoint.restore_for_inference(workdir)
  assert restored_config.task == config.task
  assert set(variables) == {"params", "batch_stats"}
  task = get_task(restored_config)
  batch = next(iter(task.eval_batches("validation")))
  predictions = task.predict(variables, batch["image"][:4])
  assert predictions["boxes"].shape == (4, 4)
  assert predictions["classes"].shape == (4,)
  boxes = np.asarray(predictions["boxes"])
  assert np.all(boxes[:, 2:] >= boxes[:, :2])


def test_checkpoint_from_eight_devices_restores_on_one(trained, tmp_path):
  """A fresh 1-device process restores the 8-device checkpoint and predicts the same."""
  config, workdir, _ = trained
  _, _, variables = checkpoint.restore_for_inference(workdir)
  task = get_task(config)
  images = next(iter(task.eval_batches("validation")))["image"][:8]
  expected = jax.device_get(task.predict(variables, images))
  np.save(tmp_path / "images.npy", images)
  script = f"""
import jax, numpy as np
from jaxvision import checkpoint
from jaxvision.tasks import get_task
assert jax.device_count() == 1, jax.devices()
config, model, variables = checkpoint.restore_for_inference({workdir!r})
out = get_task(config).predict(variables, np.load({str(tmp_path / "images.npy")!r}))
np.savez({str(tmp_path / "out.npz")!r}, **jax.device_get(out))
"""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
  restored = np.load(tmp_path / "out.npz")
  for key in ("classes", "scores", "boxes"):
    np.testing.assert_allclose(restored[key], expected[key], rtol=1e-5, atol=1e-5)


def test_unknown_config_key_is_an_error_naming_it(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "jaxvision.train", "--config",
       "configs/classify_localize_shapes.py:quick", f"--workdir={tmp_path}",
       "--config.optimizer.learning_rat=0.1"],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  assert "learning_rat" in result.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def _state_and_batches(config, mesh, steps):
  task = get_task(config, mesh)
  batches = [task.train_batch(step) for step in range(steps)]
  return task, trainer.init_state(task, config, batches[0]), batches


def parity_config():
  """The quick config with SGD: Adam's update ``m / sqrt(v)`` is about ``lr * sign(g)`` and
  so turns last-bit differences of near-zero gradients into lr-sized ones; SGD compares
  the gradients themselves."""
  config = classify_config.get_config("quick")
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  return config


def assert_close_at_scale(actual, desired):
  """Equal up to float rounding: the sums of 8 devices are added in another order, so an
  element's error is a few ulps of the largest terms of its tensor, not of itself (a
  near-zero weight beside weights of 20 may differ by 1e-5)."""
  scale = float(np.abs(desired).max()) if np.size(desired) else 0.0
  np.testing.assert_allclose(actual, desired, rtol=2e-4, atol=1e-5 + 2e-6 * scale)


def test_eight_devices_match_one_device():
  """The sharded step on 8 devices equals the unsharded step (same global batch)."""
  config = parity_config()
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = Mesh(np.asarray(devices), (parallel.DATA_AXIS,))
    # The tolerances below were measured from JAX's default initial weights; the session's
    # unpartitionable threefry (tests/conftest.py) draws others, with which one weight
    # leaves them after 3 steps (differences of a few ulps grow through batch norm).
    with jax.threefry_partitionable(True):
      task, state, batches = _state_and_batches(config, mesh, 3)
    if len(devices) == 1:  # a copy, before the steps donate the state
      fresh = np.array(state["params"]["class_head"]["kernel"])
    step_fn = trainer.make_train_step(task, config)
    for batch in batches:
      state, _ = step_fn(state, parallel.global_batch(batch, mesh))
    assert state["params"]["class_head"]["kernel"].sharding.mesh.devices.size == len(devices)
    results.append(jax.device_get(state))
  one, eight = results
  assert int(one["step"]) == int(eight["step"]) == 3
  jax.tree.map(assert_close_at_scale, one["params"], eight["params"])
  jax.tree.map(assert_close_at_scale, one["batch_stats"], eight["batch_stats"])
  # The parameters did move: parity is not trivially true.
  assert not np.allclose(fresh, one["params"]["class_head"]["kernel"])


def test_transfer_loads_backbone_and_freezes(trained, tmp_path):
  _, source, _ = trained
  config = classify_config.get_config("quick")
  config.init_from = source
  config.optimizer.freeze_regex = "^backbone/"
  config.total_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path))
  _, _, source_variables = checkpoint.restore_for_inference(source)
  _, _, variables = checkpoint.restore_for_inference(str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, source_variables["params"]["backbone"],
               variables["params"]["backbone"])
  # Heads were trained from scratch: they differ from the source run's.
  assert not np.allclose(source_variables["params"]["class_head"]["kernel"],
                         variables["params"]["class_head"]["kernel"])


def test_transfer_from_incompatible_checkpoint_names_the_parameter(trained, tmp_path):
  _, source, _ = trained
  config = classify_config.get_config("quick")
  config.init_from = source
  config.model.backbone_kwargs.width = 16  # The source backbone has width 8.
  with pytest.raises(ValueError, match=r"init_from=.*different model.*backbone"):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
  config = classify_config.get_config("quick")
  config.optimizer.name = "sgd"
  config.optimizer.warmup_steps = 0
  config.optimizer.schedule = "constant"
  config.optimizer.learning_rate = 1e30
  config.checkpoint_every = 1
  with pytest.raises(FloatingPointError, match=r"Non-finite loss .* at step \d+.*kept intact"):
    trainer.train_and_evaluate(config, str(tmp_path))
  _, _, variables = checkpoint.restore_for_inference(str(tmp_path))
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(variables))


def test_missing_config_field_is_named():
  config = classify_config.get_config("quick")
  del config["eval_every"]
  with pytest.raises(ValueError, match="eval_every"):
    trainer.train_and_evaluate(config, "/nonexistent")


def test_bad_images_and_boxes_are_named_before_compiling(trained):
  config, workdir, _ = trained
  _, _, variables = checkpoint.restore_for_inference(workdir)
  task = get_task(config)
  batch = next(iter(task.eval_batches("validation")))
  images = batch["image"][:2]
  with pytest.raises(ValueError, match=r"rank 4"):
    task.predict(variables, images[0])
  with pytest.raises(ValueError, match=r"\[B, 64, 64, 3\].*resize"):
    task.predict(variables, images[:, :32])
  with pytest.raises(ValueError, match=r"uint8 or float32.*float64"):
    task.predict(variables, images.astype(np.float64))
  bad = dict(batch, boxes=batch["boxes"].copy())
  bad["boxes"][1, 0] = [30.0, 10.0, 20.0, 40.0]  # x2 < x1
  with pytest.raises(ValueError, match=r"Box 0 of example 1.*x1 <= x2"):
    task.validate_batch(bad)


def test_second_evaluation_and_predict_compile_nothing(trained):
  """Every jitted function is built once per run (and per ``predict`` model): evaluating or
  predicting again reuses the compiled program instead of tracing anew."""
  config, workdir, _ = trained
  config = config.copy_and_resolve_references()
  config.evals = {"validation": {"kind": "batches", "pictures": False},
                  "knn": {"kind": "knn", "num_train": 32, "k": 5}}
  task = get_task(config)
  task.eval_outputs = chex.assert_max_traces(task.eval_outputs, n=1)
  task.representation = chex.assert_max_traces(task.representation, n=1)
  scheduled = evaluators.make_evaluators(task, config, picture_dir=None)
  state = checkpoint.Checkpointer(workdir, read_only=True).restore(trainer.abstract_like(
      trainer.init_state(task, config, task.train_batch(0))))
  first = evaluators.run_evaluators(scheduled, state, 1, config.seed)
  second = evaluators.run_evaluators(scheduled, state, 2, config.seed)
  assert first == second and {"accuracy", "knn_accuracy"} <= set(first)
  by_name = {s.name: s.evaluator for s in scheduled}
  jitted = [by_name["validation"]._outputs, by_name["knn"]._features._representation]
  assert [f._cache_size() for f in jitted] == [1, 1]

  variables = task.inference_variables(state)
  images = task.train_batch(0)["image"][:4]
  first, second = task.predict(variables, images), task.predict(variables, images)
  np.testing.assert_array_equal(first["boxes"], second["boxes"])
  assert task._predict._cache_size() == 1


def test_progress_bar_shows_the_tasks_losses():
  assert trainer._progress_losses(  # pylint: disable=protected-access
      {"train/loss": 1.25, "train/steps_per_second": 3.0}) == {"loss": "1.2500"}
  # A task without one loss (the DCGAN) shows each of its losses, not a missing "loss".
  assert trainer._progress_losses(  # pylint: disable=protected-access
      {"train/generator_loss": 2.0, "train/discriminator_loss": 0.5,
       "train/steps_per_second": 3.0}) == {"discriminator_loss": "0.5000",
                                          "generator_loss": "2.0000"}
