"""The Frechet distance between two Gaussians, the sample-quality number of generative models.

Heusel et al. (2017) fit a Gaussian to the features of generated images and one to the
features of real images, in the feature space of a fixed network, and report

  ``d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``

(FID when the network is Inception-v3; the ``frechet`` evaluator uses a network trained on
the same data, named by the config). Numpy only: ``tr((sigma1 sigma2)^(1/2))`` is the sum of
the square roots of the eigenvalues of the symmetric PSD ``sigma1^(1/2) sigma2 sigma1^(1/2)``,
which has the same eigenvalues as ``sigma1 sigma2``.
"""

from __future__ import annotations

import numpy as np


def sqrt_psd(matrix: np.ndarray) -> np.ndarray:
  """The symmetric PSD square root of a symmetric PSD matrix (eigenvalues < 0 from rounding
  are taken as 0)."""
  eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, float64) of features ``[N, D]``."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"Feature statistics need [N >= 2, D] features, got {features.shape}.")
  return features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """The squared Frechet (2-Wasserstein) distance between ``N(mu1, sigma1)`` and
  ``N(mu2, sigma2)``; covariances symmetric PSD ``[D, D]``. Computed in float64; clipped at
  0 (the exact value is >= 0; rounding can take an exact 0 a hair below)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"Means must be vectors of one size, got {mu1.shape} and {mu2.shape}.")
  size = len(mu1)
  if sigma1.shape != (size, size) or sigma2.shape != (size, size):
    raise ValueError(f"Covariances must be [{size}, {size}], got {sigma1.shape} and "
                     f"{sigma2.shape}.")
  root = sqrt_psd(sigma1)
  product = root @ sigma2 @ root
  eigenvalues = np.linalg.eigvalsh((product + product.T) / 2)
  trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None)))
  difference = mu1 - mu2
  distance = difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
  return float(max(distance, 0.0))
