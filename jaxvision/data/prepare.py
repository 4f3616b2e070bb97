"""Prepares TFDS datasets in ``array_record``, where the ``tfds:`` source reads them::

  pip install -e ".[prepare]"   # TensorFlow: TFDS's generation code needs it, reading does not
  python -m jaxvision.data.prepare mnist cifar10 coco/2017 voc/2012 [--data_dir DIR]

Without ``--data_dir`` it writes where training looks by default (``$JAXVISION_DATA_DIR``,
else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``). The same as
``tfds build NAME --file_format=array_record --data_dir=DIR``, whose command line (TFDS 4.9)
also needs apache-beam to start. Downloads what the dataset's TFDS builder downloads
(``coco/2017``: about 25 GB); a prepared dataset is left as it is.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import tensorflow_datasets as tfds

from jaxvision.data import datasets


def prepare(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """Downloads and prepares TFDS dataset ``name`` in array_record under ``data_dir``.

  Args:
    name: A TFDS name, optionally with config and version (``"coco/2017"``, ``"mnist:3.*.*"``).
    data_dir: Where to write; None -> where training looks (``datasets.resolve_data_dir``).

  Returns:
    The prepared builder (``builder.data_dir`` is the dataset's folder).
  """
  data_dir = datasets.resolve_data_dir(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    # Statistics are not read by jaxvision, and computing them needs TensorFlow.
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))
  except ModuleNotFoundError as error:
    if not (error.name or "").startswith("tensorflow"):
      raise
    raise ModuleNotFoundError(
        f"Preparing TFDS dataset {name!r} runs its TFDS generation code, which needs "
        "TensorFlow: pip install -e '.[prepare]' (reading the prepared dataset does not "
        "need it).", name=error.name) from error
  return builder


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="+", help="TFDS names, e.g. mnist cifar10 coco/2017")
  parser.add_argument("--data_dir", default=None,
                      help="where to write (default: where training looks, see --help)")
  args = parser.parse_args(argv)
  for name in args.names:
    builder = prepare(name, args.data_dir)
    splits = {split: info.num_examples for split, info in builder.info.splits.items()}
    print(f"{name}: {builder.data_dir} {splits}")


if __name__ == "__main__":
  main()
