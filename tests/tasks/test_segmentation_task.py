"""The ``semantic_segmentation`` task: training, evaluation, data parallelism, loss, baseline."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from test_trainer import assert_close_at_scale

from jaxvision import parallel, trainer
from jaxvision.evaluation import evaluators
from jaxvision.tasks import get_task
from jaxvision.tasks import segmentation

import configs.fcn_shapes as shapes_config
import configs.fcn_voc as voc_config

NUM_CLASSES = 7  # background + the six shapes


def _mesh(count):
  return Mesh(np.asarray(jax.devices()[:count]), (parallel.DATA_AXIS,))


def _random_variables(task, batch, rng):
  """He-scaled random weights of the task's variables' shapes, drawn by numpy.

  XLA:CPU compiles the model's random initialization (JAX's partitionable threefry for
  every initializer) far slower than the steps tested here; tests that need the real
  initializers compile the unpartitionable threefry, which is about three times faster.
  """
  def fill(path, leaf):
    name = str(path[-1].key)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    if name in ("bias", "mean"):
      return np.zeros(leaf.shape, np.float32)
    return (rng.normal(size=leaf.shape) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
            ).astype(np.float32)
  return jax.tree_util.tree_map_with_path(
      fill, jax.eval_shape(task.init_variables, jax.random.key(0), batch))


def _fresh_state(task, variables, mesh):
  """A step-0 training state of ``variables``, replicated over ``mesh``."""
  state = {**variables, "opt_state": task.tx.init(variables["params"]),
           "step": jnp.zeros((), jnp.int32)}
  return jax.device_put(state, parallel.replicated(mesh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quick config trained for a few steps on the 8 test devices, then evaluated.

  Steps cycle over two batches so that the loss must fall. The loss function may be traced
  only once: a second trace would mean the jitted step recompiled.
  """
  config = shapes_config.get_config("quick")
  mesh = _mesh(8)
  task = get_task(config, mesh)
  task.loss_fn = chex.assert_max_traces(task.loss_fn, n=1)
  batches = [task.train_batch(0), task.train_batch(1)]
  with jax.threefry_partitionable(False):  # see _random_variables
    state = trainer.init_state(task, config, batches[0])
  initial = jax.device_get({name: state[name] for name in ("params", "batch_stats")})
  train_step = trainer.make_train_step(task, config)
  history = []
  for step in range(config.total_steps):
    state, metrics = train_step(state, parallel.global_batch(batches[step % 2], mesh))
    history.append(jax.device_get(metrics))
  picture_dir = str(tmp_path_factory.mktemp("segmentation_pictures"))
  eval_metrics = evaluators.run_evaluators(
      evaluators.make_evaluators(task, config, picture_dir), state, config.total_steps,
      config.seed)
  return config, task, initial, state, history, eval_metrics, picture_dir


def test_quick_config_trains_with_finite_falling_loss(trained):
  _, _, _, _, history, _, _ = trained
  losses = np.array([m["loss"] for m in history])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-2:].mean() < 0.7 * losses[:2].mean(), losses


def test_evaluation_reports_iou_and_accuracies_and_draws_pictures(trained):
  _, task, _, _, _, eval_metrics, picture_dir = trained
  assert task.class_names == ("background", "square", "circle", "triangle", "star", "cross",
                              "ring")
  for key in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "iou_background"):
    assert 0.0 <= eval_metrics[key] <= 1.0, (key, eval_metrics)
  assert set(eval_metrics) <= {"mean_iou", "pixel_accuracy", "mean_class_accuracy"} | {
      f"iou_{name}" for name in task.class_names}
  # After a few steps the background at least is found.
  assert eval_metrics["iou_background"] > 0.3
  assert any(name.endswith("_segmentation.png") for name in os.listdir(picture_dir))


def test_predict_gives_labels_and_probabilities_of_every_pixel(trained):
  config, task, _, state, _, _, _ = trained
  images = task.train_batch(0)["image"][:3]
  size = config.data.image_size
  out = task.predict(task.inference_variables(state), images)
  chex.assert_shape(out["labels"], (3, size, size))
  chex.assert_shape(out["probabilities"], (3, size, size, NUM_CLASSES))
  assert out["labels"].dtype == jnp.int32 and out["probabilities"].dtype == jnp.float32
  np.testing.assert_allclose(np.sum(out["probabilities"], -1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(out["labels"], np.argmax(out["probabilities"], -1))


def test_bad_images_and_maps_are_named_before_compiling(trained):
  _, task, _, state, _, _, _ = trained
  batch = task.train_batch(0)
  with pytest.raises(ValueError, match=r"images must be \[B, 32, 32, 3\].*resize"):
    task.predict(task.inference_variables(state), batch["image"][:, :16])
  with pytest.raises(ValueError, match=r"semantic'\] must be \[B, H, W\]"):
    task.validate_batch({**batch, "semantic": batch["semantic"][:, :16]})
  bad = batch["semantic"].copy()
  bad[0, 0, 0] = 9
  with pytest.raises(ValueError, match=r"holds \[9\].*0\.\.6.*255"):
    task.validate_batch({**batch, "semantic": bad})


@pytest.mark.parametrize("field, value, message", [
    ("upsampler", "cubic", r"model.upsampler 'cubic'"),
    ("name", "unet", r"model.name 'unet'"),
    ("skip", True, r"Unknown config.model fields \['skip'\]"),
])
def test_bad_model_config_is_named(field, value, message):
  config = shapes_config.get_config("quick")
  config.model[field] = value
  with pytest.raises(ValueError, match=message):
    get_task(config)


def test_eight_devices_match_one_device(trained):
  """One SGD step and one evaluation, sharded over 8 devices, equal the unsharded ones."""
  config = shapes_config.get_config("quick")
  config.optimizer.name = "sgd"  # compares the gradients themselves (see test_trainer)
  config.optimizer.learning_rate = 0.05
  _, _, initial, _, _, _, _ = trained
  results, confusions = [], []
  for count in (1, 8):
    mesh = _mesh(count)
    task = get_task(config, mesh)
    state, metrics = trainer.make_train_step(task, config)(
        _fresh_state(task, initial, mesh), parallel.global_batch(task.train_batch(0), mesh))
    results.append(jax.device_get((metrics["loss"], state["params"], state["batch_stats"])))
    # The evaluation of the same variables: its confusion matrix.
    made = []
    original = task.make_evaluator
    task.make_evaluator = lambda original=original: made.append(original()) or made[-1]
    evaluators.run_evaluators(evaluators.make_evaluators(task, config, None),
                              jax.device_put(initial, parallel.replicated(mesh)), 0,
                              config.seed)
    confusions.append(made[0].confusion)
  one, eight = results
  jax.tree.map(assert_close_at_scale, eight, one)  # the loss, then the parameters
  # The parameters did move: parity is not trivially true.
  assert not np.allclose(one[1]["classifier"]["kernel"], initial["params"]["classifier"]["kernel"])
  np.testing.assert_array_equal(confusions[1], confusions[0])
  assert confusions[0].sum() == config.data.num_validation * config.data.image_size**2


def test_loss_ignores_ignore_label_pixels():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)
  labels = rng.integers(0, 3, (2, 5, 4))
  labels[0, :2] = 255
  loss = segmentation.pixel_cross_entropy(logits, labels, 255)
  changed = logits.at[0, :2].set(rng.normal(size=(2, 4, 3)) * 10)
  assert float(segmentation.pixel_cross_entropy(changed, labels, 255)) == pytest.approx(float(loss))
  scored = logits.at[0, 3].add(jnp.array([5.0, -5.0, 0.0]))
  assert abs(float(segmentation.pixel_cross_entropy(scored, labels, 255)) - float(loss)) > 1e-3
  # The mean is over scored pixels only.
  log_p = jax.nn.log_softmax(logits)
  keep = labels != 255
  expected = -np.mean(np.take_along_axis(np.asarray(log_p), np.where(keep, labels, 0)[..., None],
                                         -1)[..., 0][keep])
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(segmentation.pixel_cross_entropy(logits, np.full((2, 5, 4), 255), 255)) == 0.0


def test_class_weights_weigh_each_pixel_by_its_true_class():
  logits = jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]))
  labels = jnp.array([0, 1, 255])
  weights = jnp.array([1.0, 3.0])
  # (1 * -log 0.5 + 3 * -log 0.8) / (1 + 3); the ignored pixel has no weight.
  expected = (np.log(2) - 3 * np.log(0.8)) / 4
  loss = segmentation.pixel_cross_entropy(logits, labels, 255, weights)
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  unweighted = segmentation.pixel_cross_entropy(logits, labels, 255)
  assert float(unweighted) == pytest.approx((np.log(2) - np.log(0.8)) / 2, rel=1e-6)


def test_boundary_band_marks_pixels_near_other_classes():
  semantic = np.zeros((7, 7), np.int32)
  semantic[2:5, 2:5] = 2
  semantic[0, 0] = 255  # ignored pixels (padding) do not make a boundary
  expected = semantic.copy()
  expected[1:6, 1:6] = 255  # one pixel on each side of the square's outline
  expected[3, 3] = 2  # the square's centre has no other class within one pixel
  np.testing.assert_array_equal(segmentation.boundary_band(semantic, 1, 255), expected)
  np.testing.assert_array_equal(segmentation.boundary_band(semantic, 0, 255), semantic)
  wide = np.pad(semantic, 2)
  expected = wide.copy()
  expected[2:9, 2:9] = 255  # two pixels on each side: the whole 3 x 3 square too
  np.testing.assert_array_equal(segmentation.boundary_band(wide, 2, 255), expected)


def test_preprocess_bands_boundaries_and_crops_the_map_with_the_image():
  config = shapes_config.get_config("quick")
  # Two pixels: bilinear image resizing mixes colours up to ~1.3 pixels from an edge.
  config.model.boundary_ignore_width = 2
  config.augment.random_resized_crop = True
  config.augment.crop_scale = (0.3, 0.5)
  task = get_task(config, _mesh(1))
  # Colour codes the class, so image and map must still agree after crop and flip.
  semantic = np.zeros((48, 40), np.int32)
  semantic[10:30, 5:25] = 3
  semantic[20:45, 20:38] = 5
  image = np.repeat((semantic * 40).astype(np.uint8)[..., None], 3, axis=-1)
  example = {"image": image, "semantic": semantic, "image_id": np.int32(0)}
  for seed in range(3):
    row = task.preprocess(example, np.random.default_rng(seed))
    chex.assert_shape([row["image"][..., 0], row["semantic"]], (32, 32))
    scored = row["semantic"] != 255
    assert 0.2 < scored.mean() < 1.0
    np.testing.assert_array_equal(row["image"][..., 0][scored], row["semantic"][scored] * 40)
  unaugmented = task.preprocess(example, None)
  # Letterboxed: 48 x 40 -> 32 x 27, padded on the right with the ignore label.
  assert np.all(unaugmented["semantic"][:, 27:] == 255)
  assert np.mean(unaugmented["semantic"][:, :27] != 255) > 0.5


def test_sliding_window_trains_on_sampled_pixels_and_classifies_every_pixel():
  config = shapes_config.get_config("quick")
  config.model = shapes_config.sliding_window_model_config()
  config.model.patch_size = 7
  config.model.pixels_per_image = 4
  config.model.backbone_kwargs.width = 4
  task = get_task(config, _mesh(1))
  batch = task.train_batch(0)
  variables = _random_variables(task, batch, np.random.default_rng(0))
  loss, (metrics, _) = jax.jit(task.loss_fn)(
      variables["params"], {"batch_stats": variables["batch_stats"]}, batch, jax.random.key(1))
  assert np.isfinite(float(loss)) and 0.0 <= float(metrics["pixel_accuracy"]) <= 1.0
  out = task.predict(variables, batch["image"][:2])
  chex.assert_shape(out["labels"], (2, 32, 32))
  chex.assert_shape(out["probabilities"], (2, 32, 32, NUM_CLASSES))


def test_sampled_pixels_are_scored_pixels():
  scored = np.zeros((2, 6, 5), bool)
  scored[0, 1, 2] = scored[0, 4, 0] = True
  scored[1] = True
  rows, cols = segmentation.sample_pixels(jax.random.key(0), jnp.asarray(scored), 50)
  chex.assert_shape([rows, cols], (2, 50))
  assert set(zip(rows[0].tolist(), cols[0].tolist())) == {(1, 2), (4, 0)}
  assert len(set(zip(rows[1].tolist(), cols[1].tolist()))) > 15


def test_voc_config_trains_one_step_at_voc_shapes():
  """VOC's 21 classes and 255 void band, at the config's image size, on a fake batch."""
  config = voc_config.get_config()
  task = get_task(config, _mesh(1))
  assert len(task.class_names) == 21 and task.ignore_label == 255
  size = config.data.image_size
  rng = np.random.default_rng(0)
  semantic = rng.integers(0, 21, (1, size, size)).astype(np.int32)
  semantic[:, :, size - 40:] = 255  # letterbox padding
  batch = {"image": rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8),
           "semantic": semantic}
  task.validate_batch(batch)
  state = _fresh_state(task, _random_variables(task, batch, rng), task.mesh)
  new_state, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
  assert int(new_state["step"]) == 1
  assert new_state["params"]["classifier"]["kernel"].shape[-1] == 21
