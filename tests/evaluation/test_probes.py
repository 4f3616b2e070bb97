"""Weighted k-NN and linear probes against explicit references, plus hand cases."""

import numpy as np
import pytest
import scipy.optimize

from jaxvision.evaluation import probes

# Every linear-probe test fits features of this shape, so the L-BFGS loop compiles once.
NUM_TRAIN, DIMENSION, NUM_CLASSES = 60, 5, 3


def _reference_knn(train_features, train_labels, query_features, num_classes, k, temperature):
  """Explicit loops in float64: vote shares and predictions of the weighted k-NN."""
  train = train_features / np.linalg.norm(train_features, axis=1, keepdims=True)
  scores = np.zeros((len(query_features), num_classes))
  for q, query in enumerate(query_features):
    query = query / np.linalg.norm(query)
    similarity = [float(query @ example) for example in train]
    for i in sorted(range(len(train)), key=lambda i: -similarity[i])[:k]:
      scores[q, train_labels[i]] += np.exp(similarity[i] / temperature)
    scores[q] /= scores[q].sum()
  return scores.argmax(axis=1), scores


@pytest.mark.parametrize("k,temperature,chunk_size", [(1, 0.07, 1024), (7, 0.07, 4),
                                                      (10, 0.5, 3)])
def test_knn_matches_brute_force(k, temperature, chunk_size):
  rng = np.random.default_rng(k)
  train_features = rng.normal(size=(40, 6)).astype(np.float32)
  train_labels = rng.integers(0, 4, 40)
  query_features = rng.normal(size=(11, 6)).astype(np.float32)
  predictions, scores = probes.knn_predict(train_features, train_labels, query_features, 4,
                                           k=k, temperature=temperature,
                                           chunk_size=chunk_size)
  expected_predictions, expected_scores = _reference_knn(
      train_features.astype(np.float64), train_labels, query_features.astype(np.float64), 4,
      k, temperature)
  assert predictions.dtype == np.int32 and scores.shape == (11, 4)
  np.testing.assert_array_equal(predictions, expected_predictions)
  np.testing.assert_allclose(scores, expected_scores, rtol=1e-4, atol=1e-6)


def test_knn_temperature_outweighs_majority():
  # One class-0 twin of the query (similarity 1) against two class-1 examples at 0.6; the
  # far class-0 example is not among the 3 neighbours.
  train_features = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
  train_labels = np.array([0, 1, 1, 0])
  query = np.array([[2.0, 0.0]])
  sharp, sharp_scores = probes.knn_predict(train_features, train_labels, query, 2, k=3,
                                           temperature=0.07)
  flat, _ = probes.knn_predict(train_features, train_labels, query, 2, k=3, temperature=10.0)
  assert sharp[0] == 0 and flat[0] == 1
  np.testing.assert_allclose(sharp_scores[0, 1] / sharp_scores[0, 0],
                             2 * np.exp((0.6 - 1.0) / 0.07), rtol=1e-4)


def test_knn_names_bad_inputs():
  features, labels = np.ones((5, 3)), np.zeros(5, np.int32)
  with pytest.raises(ValueError, match="k=6"):
    probes.knn_predict(features, labels, features, 2, k=6)
  with pytest.raises(ValueError, match="query_features"):
    probes.knn_predict(features, labels, np.ones((2, 4)), 2, k=1)
  with pytest.raises(ValueError, match="train_labels"):
    probes.knn_predict(features, np.zeros(4, np.int32), features, 2, k=1)
  with pytest.raises(ValueError, match="num_classes"):
    probes.knn_predict(features, labels + 2, features, 2, k=1)


def _objective(theta, features, labels, l2):
  """Mean cross-entropy + l2 / 2 ||W||^2 and its gradient, for scipy."""
  weights = theta[:DIMENSION * NUM_CLASSES].reshape(DIMENSION, NUM_CLASSES)
  logits = features @ weights + theta[DIMENSION * NUM_CLASSES:]
  top = logits.max(axis=1, keepdims=True)
  log_normalizer = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
  residual = np.exp(logits - log_normalizer) - np.eye(NUM_CLASSES)[labels]
  value = (np.mean(log_normalizer[:, 0] - logits[np.arange(len(labels)), labels])
           + 0.5 * l2 * np.sum(weights ** 2))
  gradient = np.concatenate([(features.T @ residual / len(labels) + l2 * weights).ravel(),
                             residual.mean(axis=0)])
  return value, gradient


def _noisy_blobs(seed):
  """Overlapping class blobs with dimensions of very different scale and offset."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, NUM_TRAIN)
  centers = rng.normal(size=(NUM_CLASSES, DIMENSION))
  features = centers[labels] + rng.normal(size=(NUM_TRAIN, DIMENSION))
  return features * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 5.0, labels


def test_linear_probe_reaches_the_scipy_optimum():
  features, labels = _noisy_blobs(0)
  l2 = 1e-3
  probe = probes.fit_linear_probe(features, labels, NUM_CLASSES, l2=l2)
  standardized = (features - features.mean(axis=0)) / features.std(axis=0)
  reference = scipy.optimize.minimize(
      _objective, np.zeros(DIMENSION * NUM_CLASSES + NUM_CLASSES), jac=True,
      args=(standardized, labels, l2), method="L-BFGS-B", options=dict(gtol=1e-10))
  theta = np.concatenate([probe.weights.ravel(), probe.bias]).astype(np.float64)
  value, _ = _objective(theta, standardized, labels, l2)
  assert value == pytest.approx(reference.fun, rel=1e-4)


def test_linear_probe_separates_separable_data():
  rng = np.random.default_rng(1)
  labels = np.arange(NUM_TRAIN) % NUM_CLASSES
  features = rng.normal(size=(NUM_TRAIN, DIMENSION)) * 0.3
  features[np.arange(NUM_TRAIN), labels] += 3.0
  probe = probes.fit_linear_probe(features, labels, NUM_CLASSES)
  np.testing.assert_array_equal(probes.linear_probe_predict(probe, features), labels)


def test_linear_probe_ignores_per_dimension_affine_rescaling():
  features, labels = _noisy_blobs(2)
  queries, _ = _noisy_blobs(3)
  scale, offset = np.array([1e3, -0.5, 2e-2, 7.0, 1.0]), np.array([-4.0, 1e2, 0.3, 0.0, 9.0])
  probe = probes.fit_linear_probe(features, labels, NUM_CLASSES)
  rescaled = probes.fit_linear_probe(features * scale + offset, labels, NUM_CLASSES)
  np.testing.assert_array_equal(probes.linear_probe_predict(rescaled, queries * scale + offset),
                                probes.linear_probe_predict(probe, queries))


def test_accuracy_helpers_on_a_hand_case():
  # Three well-separated clusters; of the 4 test examples the last is labelled wrongly.
  centers = np.eye(NUM_CLASSES, DIMENSION) * 10.0
  labels = np.arange(NUM_TRAIN) % NUM_CLASSES
  features = centers[labels] + np.random.default_rng(4).normal(size=(NUM_TRAIN, DIMENSION))
  test_features = centers[[0, 1, 2, 0]]
  test_labels = np.array([0, 1, 2, 1])
  assert probes.knn_accuracy(features, labels, test_features, test_labels, NUM_CLASSES,
                             k=5) == 0.75
  assert probes.linear_probe_accuracy(features, labels, test_features, test_labels,
                                      NUM_CLASSES, l2=1e-2) == 0.75
  with pytest.raises(ValueError, match="test_labels"):
    probes.knn_accuracy(features, labels, test_features, test_labels[:3], NUM_CLASSES)
