"""PASCAL VOC 2012 segmentation -> the ``.npz`` that ``configs/fcn_voc.py`` reads.

TFDS's ``voc/2012`` has no segmentation masks (see ``configs/fcn_voc.py``), so the masks come
from the extracted ``VOCtrainval_11-May-2012.tar``, once, on a machine that has it::

  python -m jaxvision.data.voc --voc_root ~/data/VOCdevkit/VOC2012 \
      --output ~/voc2012_segmentation.npz [--image_size 512]

It reads ``ImageSets/Segmentation/train.txt`` then ``val.txt`` (1464 + 1449 images), each
``JPEGImages/<id>.jpg`` and its ``SegmentationClass/<id>.png`` (a palette PNG whose indices
are the classes: 0 background, 1..20, 255 void), letterboxes both with
``transforms.resize_and_pad`` (longer side to ``image_size``; the image padded with 0, the map
resized with nearest neighbours and padded with 255, so padding is never scored) and writes
``images`` uint8 ``[N, S, S, 3]``, ``semantic`` uint8 ``[N, S, S]``, ``image_ids`` and
``class_names``: the ``arrays`` source's layout, train images first. At 512 px the file is
about 3 GB (uncompressed, so that it loads fast).
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

import numpy as np
from PIL import Image

from jaxvision.data import sources, transforms

CLASS_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOID_LABEL = 255
SPLIT_FILES = ("train", "val")  # ImageSets/Segmentation/<name>.txt, in this order


def read_ids(voc_root: str, split: str) -> list[str]:
  """The image ids listed in ``ImageSets/Segmentation/<split>.txt``."""
  path = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist: --voc_root must be the VOC2012 directory "
                            "(holding ImageSets/, JPEGImages/ and SegmentationClass/).")
  with open(path) as f:
    return [line.strip() for line in f if line.strip()]


def read_example(voc_root: str, image_id: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """One letterboxed ``(image [S, S, 3] uint8, semantic [S, S] uint8)``."""
  image = np.asarray(Image.open(os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg"))
                     .convert("RGB"))
  mask_image = Image.open(os.path.join(voc_root, "SegmentationClass", f"{image_id}.png"))
  if mask_image.mode != "P":
    raise ValueError(f"SegmentationClass/{image_id}.png has mode {mask_image.mode!r}; VOC's "
                     "masks are palette ('P') PNGs whose indices are the classes.")
  semantic = np.asarray(mask_image)
  if semantic.shape != image.shape[:2]:
    raise ValueError(f"{image_id}: mask {semantic.shape} and image {image.shape[:2]} differ "
                     "in size.")
  labels = np.unique(semantic)
  bad = labels[(labels >= len(CLASS_NAMES)) & (labels != VOID_LABEL)]
  if bad.size:
    raise ValueError(f"{image_id}: mask values {bad.tolist()} are neither a class "
                     f"(0..{len(CLASS_NAMES) - 1}) nor void ({VOID_LABEL}).")
  example = transforms.resize_and_pad({"image": image, "semantic": semantic.astype(np.int32)},
                                      image_size, ignore_label=VOID_LABEL)
  return example["image"], example["semantic"].astype(np.uint8)


def prepare(voc_root: str, output: str, image_size: int = 512,
            splits: Sequence[str] = SPLIT_FILES) -> dict[str, int]:
  """Writes the ``.npz``; returns the number of images of each split (in file order)."""
  voc_root = os.path.expanduser(voc_root)
  ids = {split: read_ids(voc_root, split) for split in splits}
  total = sum(len(split_ids) for split_ids in ids.values())
  images = np.zeros((total, image_size, image_size, 3), np.uint8)
  semantic = np.zeros((total, image_size, image_size), np.uint8)
  all_ids = [image_id for split in splits for image_id in ids[split]]
  for index, image_id in enumerate(all_ids):
    images[index], semantic[index] = read_example(voc_root, image_id, image_size)
  sources.save_arrays_npz(output, images=images, semantic=semantic,
                          image_ids=np.asarray(all_ids), class_names=np.asarray(CLASS_NAMES))
  return {split: len(split_ids) for split, split_ids in ids.items()}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--voc_root", required=True, help="the VOCdevkit/VOC2012 directory")
  parser.add_argument("--output", required=True, help="the .npz to write")
  parser.add_argument("--image_size", type=int, default=512,
                      help="letterbox side (configs/fcn_voc.py's data.image_size)")
  args = parser.parse_args(argv)
  counts = prepare(args.voc_root, args.output, args.image_size)
  start = 0
  for split, count in counts.items():
    print(f"{split}: rows [{start}, {start + count})")
    start += count
  print(f"wrote {args.output}")


if __name__ == "__main__":
  main()
