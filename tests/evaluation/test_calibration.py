"""Calibration: ECE against hand-computed and loop-based references; temperature scaling."""

import numpy as np
import pytest

from jaxvision.evaluation import calibration


def loop_ece(confidence, correct, num_bins):
  """Guo et al.'s reference: bins (lo, hi] over linspace edges, a Python loop."""
  edges = np.linspace(0, 1, num_bins + 1)
  error = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    in_bin = (confidence > lo) & (confidence <= hi)
    if lo == 0:
      in_bin |= confidence == 0
    if in_bin.any():
      error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
  return error


def test_hand_computed_ece():
  confidence = np.array([0.1, 0.3, 0.35, 0.9, 0.95])
  correct = np.array([0, 1, 0, 1, 1])
  # Bin (0, .5]: confidence .25, accuracy 1/3, 3 of 5; bin (.5, 1]: .925 vs 1, 2 of 5.
  expected = 3 / 5 * abs(1 / 3 - 0.25) + 2 / 5 * abs(1 - 0.925)
  assert calibration.expected_calibration_error(confidence, correct, 2) == pytest.approx(expected)
  diagram = calibration.reliability_diagram(confidence, correct, 2)
  np.testing.assert_array_equal(diagram.count, [3, 2])
  np.testing.assert_allclose(diagram.accuracy, [1 / 3, 1])
  np.testing.assert_allclose(diagram.confidence, [0.25, 0.925])


def test_ece_of_probabilities_matches_loop_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2000, 7)) * 2
  labels = rng.integers(0, 7, 2000)
  probabilities = calibration.softmax(logits)
  # Confidences exactly on bin edges and at 0 exercise the (lo, hi] rule.
  confidence = np.r_[probabilities.max(1), np.linspace(0, 1, 16), 0.0]
  correct = np.r_[probabilities.argmax(1) == labels, rng.random(17) < 0.5]
  for num_bins in (1, 10, 15):
    assert calibration.expected_calibration_error(confidence, correct, num_bins) == pytest.approx(
        loop_ece(confidence, correct, num_bins), abs=1e-12)
  assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(
      loop_ece(probabilities.max(1), probabilities.argmax(1) == labels, 15), abs=1e-12)


def test_rejects_logits_and_mismatched_shapes():
  with pytest.raises(ValueError, match="not logits"):
    calibration.expected_calibration_error(np.array([[3.0, -1.0]]), np.array([0]))
  with pytest.raises(ValueError, match="must be"):
    calibration.expected_calibration_error(np.ones((4, 3)) / 3, np.zeros(5, int))


def overconfident_split(rng, num_examples, temperature):
  """Labels drawn from softmax(z); the "model" reports temperature * z."""
  true_logits = rng.normal(size=(num_examples, 10)) * 1.5
  cumulative = calibration.softmax(true_logits).cumsum(axis=1)
  labels = (rng.random((num_examples, 1)) > cumulative).sum(axis=1)
  return true_logits * temperature, labels


def test_temperature_scaling_recovers_the_temperature_and_calibrates():
  rng = np.random.default_rng(1)
  validation_logits, validation_labels = overconfident_split(rng, 20000, 3.0)
  test_logits, test_labels = overconfident_split(rng, 20000, 3.0)
  temperature = calibration.fit_temperature(validation_logits, validation_labels)
  assert temperature == pytest.approx(3.0, rel=0.05)
  # The fit is the NLL minimum on the validation split ...
  fitted_nll = calibration.negative_log_likelihood(validation_logits, validation_labels,
                                                   temperature)
  for other in (temperature * 0.97, temperature * 1.03):
    assert fitted_nll < calibration.negative_log_likelihood(validation_logits,
                                                            validation_labels, other)
  # ... and it transfers to the test split: lower NLL and ECE than the raw scores.
  before = calibration.negative_log_likelihood(test_logits, test_labels)
  after = calibration.negative_log_likelihood(test_logits, test_labels, temperature)
  assert after < before - 0.1
  ece_before = calibration.expected_calibration_error(calibration.softmax(test_logits),
                                                      test_labels)
  ece_after = calibration.expected_calibration_error(
      calibration.softmax(test_logits, temperature), test_labels)
  assert ece_before > 0.1 and ece_after < 0.02


def test_temperature_is_clipped_when_everything_is_right():
  logits = np.array([[5.0, 0.0], [0.0, 4.0]])
  assert calibration.fit_temperature(logits, np.array([0, 1]), min_temperature=0.05) == 0.05
