"""FCN semantic segmentation of PASCAL VOC 2012 (21 classes: background + 20; 255 = void).

  python -m jaxvision.train --config configs/fcn_voc.py --workdir DIR \
      --config.data.path=/data/voc2012_segmentation.npz

Where the masks come from: TFDS's ``voc/2012`` (``tensorflow_datasets.object_detection.voc``,
TFDS 4.9) has NO segmentation masks. Its features are the image, its file name, the objects'
boxes, classes, poses and truncated/difficult flags and the image-level labels, and its splits
are the detection lists (``ImageSets/Main``), not the 2913 images of ``ImageSets/Segmentation``
with their ``SegmentationClass`` PNGs. No other TFDS dataset ships VOC's masks (SBD is not in
TFDS). So this config reads a user-prepared ``.npz`` through the ``arrays`` source
(``data.path``), made once from the extracted VOC tarball by ``jaxvision.data.voc``::

  python -m jaxvision.data.voc --voc_root VOCdevkit/VOC2012 --output ~/voc2012_segmentation.npz

* ``images``: uint8 ``[N, 512, 512, 3]``, each image letterboxed (longer side scaled to 512,
  padded bottom/right with 0), the ``train.txt`` images of ``ImageSets/Segmentation`` first
  (1464), then the ``val.txt`` ones (1449);
* ``semantic``: uint8 ``[N, 512, 512]``, the ``SegmentationClass`` palette indices resized
  with nearest neighbours the same way: 0 background, 1..20 the classes in ``CLASS_NAMES``
  order, 255 on VOC's void outlines and on the padding.

``data.splits`` takes the first 1464 rows as ``train`` and the rest as ``validation``; the
``arrays`` source delivers the file's ``semantic`` array as the ``semantic`` feature. VOC's
void band is already in its masks, so ``model.boundary_ignore_width`` is 0. Training from scratch on 1464 images gives a
poor FCN: set ``init_from`` to a run whose ``resnet50`` backbone was trained on ImageNet (the
decoder then trains from scratch, as in FCN).
"""

import ml_collections

from jaxvision.data import data_config
from jaxvision.data.voc import CLASS_NAMES  # the index is the mask's palette index
from jaxvision.optim import default_optimizer_config

NUM_TRAIN = 1464  # ImageSets/Segmentation/train.txt; val.txt has the next 1449.


def get_config(arg=None):
  if arg:
    raise ValueError(f"fcn_voc has no variant {arg!r}.")
  config = ml_collections.ConfigDict()
  config.task = "semantic_segmentation"
  config.seed = 0
  config.total_steps = 30000
  config.batch_size = 16
  config.eval_every = 2000
  config.checkpoint_every = 2000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = data_config(
      name="arrays", path="~/voc2012_segmentation.npz", image_size=512,
      splits=ml_collections.ConfigDict({"train": [0, NUM_TRAIN], "validation": [NUM_TRAIN, 2913]}),
      features=("image", "semantic"), ignore_label=255, flip=True,
      # ImageNet statistics, which a transferred backbone was trained with.
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

  config.model = ml_collections.ConfigDict(dict(
      name="fcn",
      upsampler="transposed",
      backbone="resnet50",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="imagenet", norm="batch")),
      # C5, C4, C3, C2 (stride 4), image: narrow where the maps are large (the last, 4x
      # transposed convolution costs 64 * 16 * 16 multiply-adds per output pixel).
      decoder_channels=(256, 128, 64, 16, 16),
      skips=True,
      class_names=CLASS_NAMES,
      class_weights=(),
      boundary_ignore_width=0))
  config.augment = ml_collections.ConfigDict(dict(
      random_resized_crop=True, crop_scale=(0.25, 1.0), crop_ratio=(3 / 4, 4 / 3)))
  config.optimizer = default_optimizer_config(name="sgd", learning_rate=0.01, momentum=0.9,
                                              warmup_steps=500, schedule="cosine",
                                              weight_decay=1e-4, grad_clip_norm=10.0)
  return config
