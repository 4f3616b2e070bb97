"""The Frechet distance (against scipy's matrix square root and a closed form) and the
``frechet`` evaluator end to end: a quick feature run, a quick DCGAN run, a VAE."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import parallel, trainer
from jaxvision.evaluation import evaluators, frechet
from jaxvision.tasks import base

import configs.classify_localize_shapes as feature_config
import configs.dcgan_shapes as dcgan_config
import configs.vae_shapes as vae_config


def random_statistics(rng, size, rank=None):
  factor = rng.normal(size=(size, rank or size))
  return rng.normal(size=size), factor @ factor.T / size


def test_matches_the_formula_with_scipy_sqrtm():
  linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(0)
  for size, rank in ((1, None), (6, None), (8, 3)):
    mu1, sigma1 = random_statistics(rng, size, rank)
    mu2, sigma2 = random_statistics(rng, size)
    root = linalg.sqrtm(sigma1 @ sigma2).real
    expected = (np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                - 2 * np.trace(root))
    np.testing.assert_allclose(frechet.frechet_distance(mu1, sigma1, mu2, sigma2), expected,
                               rtol=1e-6, atol=1e-8)


def test_diagonal_covariances_have_the_closed_form():
  # Commuting (diagonal) covariances: ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2.
  mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
  a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)),
                             expected, rtol=1e-12)
  # Rotating both Gaussians alike changes nothing (b's zero variance, rotated, is a rounding
  # error whose square root is ~1e-8).
  rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
  np.testing.assert_allclose(
      frechet.frechet_distance(rotation @ mu1, rotation @ np.diag(a) @ rotation.T,
                               rotation @ mu2, rotation @ np.diag(b) @ rotation.T),
      expected, rtol=1e-7)


def test_zero_for_identical_statistics_and_never_negative():
  rng = np.random.default_rng(2)
  for size, rank in ((5, None), (16, 4)):
    mu, sigma = random_statistics(rng, size, rank)
    assert frechet.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    for _ in range(5):
      other = random_statistics(rng, size, rank)
      assert frechet.frechet_distance(mu, sigma, *other) >= 0.0
  features = rng.normal(size=(50, 4))
  mu, sigma = frechet.feature_statistics(features)
  np.testing.assert_allclose(mu, features.mean(0))
  np.testing.assert_allclose(sigma, np.cov(features.T))
  with pytest.raises(ValueError, match="Covariances"):
    frechet.frechet_distance(mu, sigma, mu, sigma[:3, :3])


def test_feature_images_are_repeated_to_rgb_and_resized():
  grey = jnp.full((2, 16, 16, 1), 100.0).at[1].set(300.0)
  images = evaluators.to_feature_images(grey, (64, 64, 3))
  assert images.shape == (2, 64, 64, 3)
  np.testing.assert_allclose(images[0], 100.0, rtol=1e-6)
  np.testing.assert_allclose(images[1], 255.0, rtol=1e-6)  # clipped to [0, 255]
  with pytest.raises(ValueError, match="channels"):
    evaluators.to_feature_images(jnp.zeros((1, 8, 8, 2)), (8, 8, 3))


def one_device():
  return Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))


@pytest.fixture(scope="module")
def feature_workdir(tmp_path_factory):
  """A quick classify_localize run: the fixed feature network."""
  workdir = str(tmp_path_factory.mktemp("features"))
  config = feature_config.get_config("quick")
  config.evals = {"validation": {"kind": "batches", "pictures": False}}
  trainer.train_and_evaluate(config, workdir, mesh=one_device())
  return workdir


def test_settings_are_validated(feature_workdir, tmp_path):
  config = dcgan_config.get_config("quick,features=" + str(tmp_path / "missing"))
  task = base.get_task(config, one_device())
  settings = evaluators.eval_settings(config)["frechet"]
  with pytest.raises(FileNotFoundError, match="feature_workdir"):
    evaluators.FrechetEvaluator("frechet", task, settings, None)
  settings.feature_workdir = ""
  with pytest.raises(ValueError, match="config.evals.frechet.feature_workdir is not set"):
    evaluators.FrechetEvaluator("frechet", task, settings, None)
  settings.feature_workdir, settings.num_samples = feature_workdir, 1
  with pytest.raises(ValueError, match="num_samples"):
    evaluators.FrechetEvaluator("frechet", task, settings, None)
  with pytest.raises(ValueError, match="dcgan_shapes"):
    dcgan_config.get_config("quick,feature=x")


def test_dcgan_run_reports_a_finite_distance(feature_workdir, tmp_path):
  config = dcgan_config.get_config("quick,features=" + feature_workdir)
  config.total_steps = config.eval_every = 10
  workdir = str(tmp_path / "dcgan")
  trainer.train_and_evaluate(config, workdir, mesh=one_device())
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    values = [line["eval/frechet_distance"] for line in map(json.loads, f)
              if "eval/frechet_distance" in line]
  assert len(values) == 1 and np.isfinite(values[0]) and values[0] > 0


def test_held_out_images_as_samples_score_zero_and_shifted_ones_more(feature_workdir):
  config = dcgan_config.get_config("quick,features=" + feature_workdir)
  task = base.get_task(config, one_device())
  settings = evaluators.eval_settings(config)["frechet"]
  count = settings.num_samples  # the whole validation split of the quick config
  held_out = np.concatenate([b["image"][b["example_mask"]] for b in task.eval_batches(
      settings.split, features=("image",), num_examples=count)]).astype(np.float32)
  assert len(held_out) == count

  def distance(shift):
    task.sample = lambda variables, rng, n: jnp.asarray(held_out[:n]) + shift
    evaluator = evaluators.FrechetEvaluator("frechet", task, settings, None)
    return evaluator.run({}, 0, jax.random.key(0))["frechet_distance"]

  task.inference_variables = lambda state, network=None: {}
  same, shifted = distance(0.0), distance(60.0)
  print(f"held-out images as samples: {same:.3g}; shifted by 60: {shifted:.3g}")
  assert shifted > 0 and same < 1e-3 * shifted


def test_vae_samples_get_a_distance_too(feature_workdir):
  config = vae_config.get_config("quick,features=" + feature_workdir)
  task = base.get_task(config, one_device())
  state = trainer.init_state(task, config, task.train_batch(0))
  evaluator = evaluators.FrechetEvaluator("frechet", task,
                                          evaluators.eval_settings(config)["frechet"], None)
  distance = evaluator.run(state, 0, jax.random.key(0))["frechet_distance"]
  assert np.isfinite(distance) and distance > 0
