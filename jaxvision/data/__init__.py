"""Datasets and input pipelines: the embedded synthetic shapes, TFDS datasets, grain reading.

Typical use (configs embed ``shapes_data_config()`` as ``config.data``)::

  data_config = shapes_data_config(num_train=1000)
  train = Pipeline(data_config, "train", global_batch_size=128, seed=0, train=True)
  batch = train.host_batch(step)  # this host's slice of the global batch of ``step``
"""

from jaxvision.data.datasets import FEATURES
from jaxvision.data.datasets import build_dataset
from jaxvision.data.datasets import shapes_data_config
from jaxvision.data.pipeline import Pipeline
from jaxvision.data.shapes import CLASS_NAMES
from jaxvision.data.transforms import validate_boxes

__all__ = ["CLASS_NAMES", "FEATURES", "Pipeline", "build_dataset", "shapes_data_config",
           "validate_boxes"]
