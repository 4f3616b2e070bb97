"""jaxvision.data.voc on a fake VOCdevkit: letterboxing, void padding, order, the config's source."""

import os

import numpy as np
import pytest
from PIL import Image

from configs import fcn_voc
from jaxvision.data import sources, voc

# (id, height, width) per split: landscape, portrait, square.
FAKE_SPLITS = {"train": [("2007_000032", 30, 40), ("2007_000039", 40, 20)],
               "val": [("2007_000033", 24, 24)]}


def _palette_png(labels: np.ndarray, path: str) -> None:
  mask = Image.fromarray(labels.astype(np.uint8), mode="P")
  mask.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
  mask.save(path)


@pytest.fixture
def voc_root(tmp_path):
  root = tmp_path / "VOC2012"
  for folder in ("ImageSets/Segmentation", "JPEGImages", "SegmentationClass"):
    (root / folder).mkdir(parents=True)
  rng = np.random.default_rng(1)
  for split, examples in FAKE_SPLITS.items():
    (root / "ImageSets/Segmentation" / f"{split}.txt").write_text(
        "".join(f"{image_id}\n" for image_id, _, _ in examples))
    for image_id, height, width in examples:
      Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
          root / "JPEGImages" / f"{image_id}.jpg", quality=95)
      labels = rng.integers(0, 21, (height, width))
      labels[0, :] = voc.VOID_LABEL  # an outline
      _palette_png(labels, str(root / "SegmentationClass" / f"{image_id}.png"))
  return str(root)


def test_prepare_letterboxes_masks_with_void_padding_train_first(voc_root, tmp_path):
  output = str(tmp_path / "voc.npz")
  assert voc.prepare(voc_root, output, image_size=16) == {"train": 2, "val": 1}
  with np.load(output) as arrays:
    assert arrays["images"].shape == (3, 16, 16, 3) and arrays["images"].dtype == np.uint8
    assert arrays["semantic"].shape == (3, 16, 16) and arrays["semantic"].dtype == np.uint8
    assert arrays["image_ids"].tolist() == ["2007_000032", "2007_000039", "2007_000033"]
    assert tuple(arrays["class_names"]) == voc.CLASS_NAMES
    semantic = arrays["semantic"]
  # 30 x 40 -> 12 x 16: the last 4 rows are padding, void; 40 x 20 -> 16 x 8: 8 columns.
  assert np.all(semantic[0, 12:] == voc.VOID_LABEL) and np.all(semantic[1, :, 8:] == 255)
  # Nearest-neighbour resizing keeps labels labels: only the mask's own values appear.
  mask = np.asarray(Image.open(os.path.join(voc_root, "SegmentationClass", "2007_000033.png")))
  assert set(np.unique(semantic[2])) <= set(np.unique(mask))
  np.testing.assert_array_equal(semantic[2, 0], voc.VOID_LABEL)  # the outline row, scaled
  # The config's arrays source reads the file as it is laid out.
  config = fcn_voc.get_config()
  config.data.path = output
  config.data.splits = {"train": [0, 2], "validation": [2, 3]}
  source = sources.get_source(config.data)
  assert source.metadata.class_names == voc.CLASS_NAMES
  example = source.to_example(source.records("validation")[0], frozenset({"image", "semantic"}))
  np.testing.assert_array_equal(example["semantic"], semantic[2])


def test_bad_inputs_are_named(voc_root, tmp_path):
  with pytest.raises(FileNotFoundError, match="--voc_root must be the VOC2012 directory"):
    voc.prepare(str(tmp_path), str(tmp_path / "x.npz"))
  labels = np.full((24, 24), 30)  # not a VOC class
  _palette_png(labels, os.path.join(voc_root, "SegmentationClass", "2007_000033.png"))
  with pytest.raises(ValueError, match=r"mask values \[30\]"):
    voc.prepare(voc_root, str(tmp_path / "x.npz"), image_size=16)
  assert not os.path.exists(tmp_path / "x.npz")
