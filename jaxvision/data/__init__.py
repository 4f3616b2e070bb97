"""Datasets and input pipelines: data sources by name, TFDS datasets, grain reading.

Typical use (configs embed ``data_config()`` as ``config.data``; ``data.name`` picks the
source: ``"shapes"``, ``"tfds:<name>"``, ``"arrays"`` or ``"coco_json"``)::

  config = data_config(num_train=1000)
  train = Pipeline(config, "train", global_batch_size=128, seed=0, train=True)
  batch = train.host_batch(step)  # this host's slice of the global batch of ``step``
"""

from jaxvision.data.datasets import FEATURES
from jaxvision.data.datasets import build_dataset
from jaxvision.data.datasets import data_config
from jaxvision.data.datasets import shapes_data_config
from jaxvision.data.pipeline import Pipeline
from jaxvision.data.pipeline import StandardPreprocess
from jaxvision.data.shapes import CLASS_NAMES
from jaxvision.data.sources import DataSource
from jaxvision.data.sources import SourceMetadata
from jaxvision.data.sources import get_source
from jaxvision.data.sources import register_source
from jaxvision.data.transforms import Example
from jaxvision.data.transforms import validate_boxes
from jaxvision.data import coco_json  # noqa: F401  (registers data.name "coco_json")

__all__ = ["CLASS_NAMES", "FEATURES", "DataSource", "Example", "Pipeline", "SourceMetadata",
           "StandardPreprocess", "build_dataset", "data_config", "get_source",
           "register_source", "shapes_data_config", "validate_boxes"]
