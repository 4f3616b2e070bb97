"""Tiny shapes datasets shared by the data tests (built once per session, under the lock)."""

import ml_collections
import pytest

from jaxvision import data


@pytest.fixture(scope="session")
def single_config(shared_data_dir) -> ml_collections.ConfigDict:
  """One object per 32 x 32 image; 60 training examples, so batches of 16 cross epochs."""
  return data.shapes_data_config(image_size=32, num_train=60, num_validation=13, num_test=7,
                                 seed=3, data_dir=shared_data_dir)


@pytest.fixture(scope="session")
def multi_config(shared_data_dir) -> ml_collections.ConfigDict:
  """2-10 overlapping objects per 64 x 64 image, every feature."""
  return data.shapes_data_config(image_size=64, min_objects=2, max_objects=10, num_train=24,
                                 num_validation=9, num_test=5, seed=1, features=data.FEATURES,
                                 data_dir=shared_data_dir)
