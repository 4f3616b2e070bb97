"""Representation probes on frozen features: weighted k-NN and a linear (logistic) probe.

The evaluator gathers the features of a labelled train split and of a held-out split onto
the host, and every process calls these functions on the same numpy inputs; they are
deterministic (no randomness, full-batch optimization, no atomics), so every process gets
the same numbers. The heavy parts run jitted on the default device.

- ``knn_predict``: the weighted k-NN classifier of Wu et al. 2018 ("Unsupervised Feature
  Learning via Non-Parametric Instance Discrimination"), as DINO evaluates it: cosine
  similarity of L2-normalized features, the ``k`` most similar train examples each vote for
  their label with weight ``exp(similarity / temperature)``.
- ``fit_linear_probe``: multinomial logistic regression on standardized features, minimized
  full-batch with L-BFGS.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

# A dimension whose train features barely vary is divided by this instead of its std,
# so a constant dimension standardizes to 0 rather than to inf or NaN.
_MIN_SCALE = 1e-6
# L-BFGS stops once the gradient norm of the objective is below this (float32 optimization).
_GRADIENT_TOLERANCE = 1e-5


@dataclasses.dataclass(frozen=True)
class LinearProbe:
  """A fitted linear probe: ``logits = (features - mean) / scale @ weights + bias``.

  Attributes:
    mean: float32 [D] per-dimension mean of the training features.
    scale: float32 [D] their per-dimension standard deviation (at least ``_MIN_SCALE``).
    weights: float32 [D, C] on the standardized features.
    bias: float32 [C].
  """

  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  bias: np.ndarray


def _check_features_and_labels(features: np.ndarray, labels: np.ndarray, num_classes: int,
                               name: str) -> tuple[np.ndarray, np.ndarray]:
  """float32 [N, D] features and int32 [N] labels in ``[0, num_classes)``, or a ValueError."""
  features, labels = np.asarray(features), np.asarray(labels)
  if features.ndim != 2 or labels.shape != features.shape[:1]:
    raise ValueError(f"{name}_features {features.shape} and {name}_labels {labels.shape} must "
                     "be [N, D] and [N].")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{name}_labels must be integer class indices, got dtype {labels.dtype}.")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{name}_labels must lie in [0, num_classes={num_classes}); got "
                     f"[{labels.min()}, {labels.max()}]. Check num_classes.")
  return features.astype(np.float32), labels.astype(np.int32)


def _check_queries(features: np.ndarray, dimension: int, name: str) -> np.ndarray:
  """float32 [M, D] features with the train features' ``D``, or a ValueError."""
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] != dimension:
    raise ValueError(f"{name} {features.shape} must be [M, {dimension}], the train features' "
                     "dimension.")
  return features.astype(np.float32)


def _check_test_split(test_features: np.ndarray, test_labels: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """int32 [M] labels of non-empty [M, D] test features, or a ValueError."""
  _, test_labels = _check_features_and_labels(test_features, test_labels, num_classes, "test")
  if not len(test_labels):
    raise ValueError("Accuracy needs at least one test example; got test_labels "
                     f"{test_labels.shape}.")
  return test_labels


def _l2_normalize(x: jax.Array) -> jax.Array:
  # The floor keeps an all-zero feature (or a padding row) at 0 instead of NaN.
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_class_scores(train_features: jax.Array, train_labels: jax.Array,
                      query_chunks: jax.Array, temperature: jax.Array, k: int,
                      num_classes: int) -> jax.Array:
  """float32 [num_chunks, chunk_size, C] vote shares for [num_chunks, chunk_size, D] queries."""
  train = _l2_normalize(train_features)

  def chunk_scores(queries: jax.Array) -> jax.Array:
    # Full float32 matmul: TPUs and GPUs would otherwise round to bf16/tf32 and reorder
    # near-tied neighbours.
    similarity = jnp.matmul(_l2_normalize(queries), train.T,
                            precision=jax.lax.Precision.HIGHEST)  # [chunk, N]
    top_similarity, top_index = jax.lax.top_k(similarity, k)  # [chunk, k], most similar first
    # exp(s / T) relative to the query's nearest neighbour: the same shares, no overflow at
    # small temperatures.
    weights = jnp.exp((top_similarity - top_similarity[:, :1]) / temperature)
    # A sum over a one-hot axis, not a scatter-add, whose GPU atomics would add in any order.
    votes = jnp.sum(jax.nn.one_hot(train_labels[top_index], num_classes) * weights[..., None],
                    axis=1)  # [chunk, C]
    return votes / jnp.sum(votes, axis=1, keepdims=True)

  return jax.lax.map(chunk_scores, query_chunks)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray,
                query_features: np.ndarray, num_classes: int, k: int = 20,
                temperature: float = 0.07,
                chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Weighted k-NN classification of queries by their most cosine-similar train examples.

  Each of the ``k`` nearest train examples votes for its label with weight
  ``exp(similarity / temperature)``; the prediction is the class with the largest summed
  vote (the lowest class index on a tie). Queries run in chunks of ``chunk_size`` (the last
  padded), so memory is ``O(chunk_size * (N + k * C))`` and one program serves every chunk.

  Args:
    train_features: float [N, D] features of the labelled examples.
    train_labels: int [N] their classes in ``[0, num_classes)``.
    query_features: float [M, D] features to classify.
    num_classes: C.
    k: neighbours per query, ``1 <= k <= N``.
    temperature: positive; smaller weighs the nearest neighbours more.
    chunk_size: queries per step.

  Returns:
    int32 [M] predicted classes and float32 [M, C] class scores: each class's share of the
    query's total vote weight (rows sum to 1).
  """
  train_features, train_labels = _check_features_and_labels(
      train_features, train_labels, num_classes, "train")
  query_features = _check_queries(query_features, train_features.shape[1], "query_features")
  num_train, num_queries = len(train_features), len(query_features)
  if not 1 <= k <= num_train:
    raise ValueError(f"k={k} must be in [1, {num_train}], the number of train examples.")
  if temperature <= 0 or chunk_size < 1:
    raise ValueError(f"temperature={temperature} and chunk_size={chunk_size} must be positive.")
  chunk_size = min(chunk_size, max(num_queries, 1))
  num_chunks = -(-num_queries // chunk_size)
  padded = np.zeros((num_chunks * chunk_size, query_features.shape[1]), np.float32)
  padded[:num_queries] = query_features
  scores = _knn_class_scores(train_features, train_labels,
                             padded.reshape(num_chunks, chunk_size, padded.shape[1]),
                             jnp.float32(temperature), k=k, num_classes=num_classes)
  scores = np.asarray(scores).reshape(-1, num_classes)[:num_queries]
  return scores.argmax(axis=1).astype(np.int32), scores


def knn_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                 test_features: np.ndarray, test_labels: np.ndarray, num_classes: int,
                 **settings) -> float:
  """Top-1 accuracy of ``knn_predict`` (``settings``: ``k``, ``temperature``, ``chunk_size``)."""
  test_labels = _check_test_split(test_features, test_labels, num_classes)
  predictions, _ = knn_predict(train_features, train_labels, test_features, num_classes,
                               **settings)
  return float(np.mean(predictions == test_labels))


def _standardization(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float32 [D] mean and scale of [N, D] features, computed in float64."""
  features = features.astype(np.float64)
  scale = np.maximum(features.std(axis=0), _MIN_SCALE)
  return features.mean(axis=0).astype(np.float32), scale.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _fit_logistic_regression(features: jax.Array, labels: jax.Array, l2: jax.Array,
                             max_iterations: jax.Array, num_classes: int) -> dict[str, jax.Array]:
  """``{"weights": [D, C], "bias": [C]}`` minimizing mean cross-entropy + l2 / 2 ||W||^2."""

  def objective(params):
    logits = features @ params["weights"] + params["bias"]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return cross_entropy + 0.5 * l2 * jnp.sum(params["weights"] ** 2)

  solver = optax.lbfgs()  # Its default linesearch is the zoom linesearch (strong Wolfe).
  value_and_grad = optax.value_and_grad_from_state(objective)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=objective)
    return optax.apply_updates(params, updates), state

  def not_converged(carry):
    _, state = carry
    iteration = otu.tree_get(state, "count")
    gradient_norm = otu.tree_norm(otu.tree_get(state, "grad"))
    # The state's gradient is 0 before the first step, so always take one.
    return (iteration == 0) | ((iteration < max_iterations) &
                               (gradient_norm >= _GRADIENT_TOLERANCE))

  params = {"weights": jnp.zeros((features.shape[1], num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}
  params, _ = jax.lax.while_loop(not_converged, step, (params, solver.init(params)))
  return params


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int,
                     l2: float = 1e-4, max_iterations: int = 500) -> LinearProbe:
  """Multinomial logistic regression on standardized frozen features.

  Features are standardized per dimension with the train mean and std, so the probe does
  not depend on the features' per-dimension scale and offset. The objective, mean
  cross-entropy ``+ l2 / 2 * ||weights||^2`` (the bias is not penalized), is minimized
  full-batch in float32 with L-BFGS and a zoom linesearch from zero weights, until the
  gradient norm is below ``_GRADIENT_TOLERANCE`` or after ``max_iterations``.

  Args:
    features: float [N, D] train features.
    labels: int [N] their classes in ``[0, num_classes)``.
    num_classes: C.
    l2: penalty on the weights; positive keeps separable data from diverging.
    max_iterations: L-BFGS iterations at most.

  Returns:
    The fitted ``LinearProbe``.
  """
  features, labels = _check_features_and_labels(features, labels, num_classes, "train")
  if not len(features):
    raise ValueError("fit_linear_probe needs at least one train example; got features "
                     f"{features.shape}.")
  if l2 < 0 or max_iterations < 1:
    raise ValueError(f"l2={l2} must be >= 0 and max_iterations={max_iterations} >= 1.")
  mean, scale = _standardization(features)
  params = _fit_logistic_regression((features - mean) / scale, labels, jnp.float32(l2),
                                    jnp.int32(max_iterations), num_classes=num_classes)
  return LinearProbe(mean, scale, np.asarray(params["weights"]), np.asarray(params["bias"]))


def linear_probe_predict(probe: LinearProbe, features: np.ndarray) -> np.ndarray:
  """int32 [M] classes (argmax of the probe's logits) of float [M, D] features."""
  # float64, so a near tie is decided by the probe rather than by float32 rounding.
  features = _check_queries(features, len(probe.mean), "features").astype(np.float64)
  logits = (features - probe.mean) / probe.scale @ probe.weights.astype(np.float64) + probe.bias
  return logits.argmax(axis=1).astype(np.int32)


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                          test_features: np.ndarray, test_labels: np.ndarray,
                          num_classes: int, **settings) -> float:
  """Test accuracy of a probe fit on the train split (``settings``: ``l2``, ``max_iterations``)."""
  test_labels = _check_test_split(test_features, test_labels, num_classes)
  probe = fit_linear_probe(train_features, train_labels, num_classes, **settings)
  return float(np.mean(linear_probe_predict(probe, test_features) == test_labels))
