"""Building the dataset from several processes at once on one data_dir."""

import os
import pathlib
import subprocess
import sys

import numpy as np

import jaxvision
from jaxvision import data
from jaxvision.data import datasets

_BUILD_AND_COUNT = """
import sys
from jaxvision import data
from jaxvision.data import datasets
config = data.shapes_data_config(num_train=150, num_validation=5, num_test=5,
                                 data_dir=sys.argv[1])
print(len(data.build_dataset(config).as_data_source("train")))
"""


def test_concurrent_builds_on_one_directory(tmp_path):
  repo_root = str(pathlib.Path(jaxvision.__file__).parents[1])
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo_root, os.environ.get("PYTHONPATH", "")]))
  processes = [subprocess.Popen([sys.executable, "-c", _BUILD_AND_COUNT, str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
  outputs = [process.communicate(timeout=120) for process in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
    assert stdout.split()[-1] == "150"
  config = data.shapes_data_config(num_train=150, num_validation=5, num_test=5,
                                   data_dir=str(tmp_path))
  builder = data.build_dataset(config)
  versions = list(pathlib.Path(builder.data_dir).parent.iterdir())
  assert [path.name for path in versions] == ["1.0.0"]  # one build, no leftovers
  source = builder.as_data_source("train")
  assert [int(source[i]["image_id"]) for i in (0, 149)] == [0, 149]
  assert not np.array_equal(source[0]["image"], source[1]["image"])


def test_default_config_names_a_builder(tmp_path):
  builder = datasets._make_builder(data.shapes_data_config(data_dir=str(tmp_path)), str(tmp_path))
  assert builder.builder_config.num_train == 20000 and not builder.is_prepared()
