"""Calibration of classification scores: ECE, reliability diagrams, temperature scaling.

Host-side numpy (float64). Bins are equal-width on [0, 1] and half-open on the left,
``(lo, hi]``, as in Guo et al. 2017 ("On Calibration of Modern Neural Networks"); a
confidence of exactly 0 falls in the first bin. ``viz.plot_reliability_diagram`` draws a
``ReliabilityDiagram``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ReliabilityDiagram:
  """Per-bin statistics of confidence vs accuracy.

  Attributes:
    bin_edges: float64 [num_bins + 1], ``linspace(0, 1, num_bins + 1)``.
    confidence: float64 [num_bins] mean confidence of the bin's predictions (NaN if empty).
    accuracy: float64 [num_bins] fraction of them that are correct (NaN if empty).
    count: int64 [num_bins] predictions per bin.
    expected_calibration_error: ``sum_b count_b / N * |accuracy_b - confidence_b|``.
  """

  bin_edges: np.ndarray
  confidence: np.ndarray
  accuracy: np.ndarray
  count: np.ndarray
  expected_calibration_error: float


def confidence_and_correctness(probabilities: np.ndarray,
                               labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Confidence of each prediction and whether it is right.

  Args:
    probabilities: float [N, C] class probabilities (the prediction is the argmax), or
      float [N] the confidence of already-made predictions.
    labels: int [N] true classes for [N, C] probabilities; for [N] confidences, whether
      each prediction is correct (bool or 0/1).

  Returns:
    float64 [N] confidences in [0, 1] and bool [N] correctness.
  """
  probabilities = np.asarray(probabilities, np.float64)
  labels = np.asarray(labels)
  if probabilities.ndim not in (1, 2) or labels.shape != probabilities.shape[:1]:
    raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must be "
                     "[N, C] and [N] (classes) or [N] and [N] (confidence, correctness).")
  if probabilities.ndim == 2:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
  else:
    confidence, correct = probabilities, labels.astype(bool)
  if confidence.size and (confidence.min() < 0 or confidence.max() > 1):
    raise ValueError("Confidences must lie in [0, 1]; pass probabilities (e.g. softmax of "
                     "the logits), not logits.")
  return confidence, correct


def reliability_diagram(probabilities: np.ndarray, labels: np.ndarray,
                        num_bins: int = 15) -> ReliabilityDiagram:
  """Bins predictions by confidence (see ``confidence_and_correctness`` for the inputs)."""
  confidence, correct = confidence_and_correctness(probabilities, labels)
  bin_edges = np.linspace(0.0, 1.0, num_bins + 1)
  # searchsorted 'left' puts c in bin i with edges[i] < c <= edges[i + 1].
  bin_index = np.clip(np.searchsorted(bin_edges, confidence, side="left") - 1, 0, num_bins - 1)
  count = np.bincount(bin_index, minlength=num_bins)
  confidence_sum = np.bincount(bin_index, weights=confidence, minlength=num_bins)
  correct_sum = np.bincount(bin_index, weights=correct, minlength=num_bins)
  with np.errstate(divide="ignore", invalid="ignore"):
    mean_confidence = np.where(count > 0, confidence_sum / count, np.nan)
    accuracy = np.where(count > 0, correct_sum / count, np.nan)
  error = float(np.abs(correct_sum - confidence_sum).sum() / max(len(confidence), 1))
  return ReliabilityDiagram(bin_edges, mean_confidence, accuracy, count, error)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               num_bins: int = 15) -> float:
  """ECE with ``num_bins`` equal-width bins (inputs as ``confidence_and_correctness``)."""
  return reliability_diagram(probabilities, labels, num_bins).expected_calibration_error


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """float64 [N, C] ``softmax(logits / temperature)``."""
  scaled = np.asarray(logits, np.float64) / temperature
  scaled -= scaled.max(axis=-1, keepdims=True)
  exp = np.exp(scaled)
  return exp / exp.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray,
                            temperature: float = 1.0) -> float:
  """Mean ``-log softmax(logits / temperature)[label]`` over [N, C] logits, int [N] labels."""
  scaled = np.asarray(logits, np.float64) / temperature
  top = scaled.max(axis=-1)
  log_normalizer = top + np.log(np.exp(scaled - top[:, None]).sum(axis=-1))
  return float(np.mean(log_normalizer - scaled[np.arange(len(scaled)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, min_temperature: float = 1e-2,
                    max_temperature: float = 1e2, max_iterations: int = 100) -> float:
  """Temperature ``T`` minimizing the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

  Fit it on a held-out validation split, not on the data it will be evaluated on. The
  NLL is convex in ``beta = 1 / T`` (a log-sum-exp minus a linear term), so this runs a
  safeguarded Newton iteration on ``beta`` within the bracket
  ``[1 / max_temperature, 1 / min_temperature]``, bisecting (geometrically) whenever a
  Newton step would leave the bracket. The result is clipped to the bracket (e.g. ``T``
  hits ``min_temperature`` when every validation prediction is already right).

  Args:
    logits: float [N, C] validation logits.
    labels: int [N] their true classes.

  Returns:
    The temperature (divide logits by it before the softmax).
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"logits {logits.shape} and labels {labels.shape} must be [N, C] and [N].")
  true_logit = logits[np.arange(len(logits)), labels]

  def derivatives(beta: float) -> tuple[float, float]:
    """First and second derivative of the mean NLL with respect to beta."""
    probabilities = softmax(logits, 1.0 / beta)
    expected = (probabilities * logits).sum(axis=1)
    variance = (probabilities * (logits - expected[:, None]) ** 2).sum(axis=1)
    return float(np.mean(expected - true_logit)), float(np.mean(variance))

  low, high = 1.0 / max_temperature, 1.0 / min_temperature
  if derivatives(low)[0] >= 0:
    return max_temperature
  if derivatives(high)[0] <= 0:
    return min_temperature
  beta = float(np.clip(1.0, low, high))
  for _ in range(max_iterations):
    slope, curvature = derivatives(beta)
    if slope > 0:
      high = beta
    else:
      low = beta
    step = beta - slope / curvature if curvature > 0 else np.nan
    new_beta = step if low < step < high else np.sqrt(low * high)
    if abs(new_beta - beta) <= 1e-12 * beta:
      beta = new_beta
      break
    beta = new_beta
  return 1.0 / beta
