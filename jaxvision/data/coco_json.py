"""A user's COCO-format dataset, read directly: ``data.name = "coco_json"``.

``data.annotations`` maps each split to its COCO json (``images``, ``annotations``,
``categories``) and ``data.image_root`` maps it to the folder its ``file_name`` values are
relative to::

  config.data.name = "coco_json"
  config.data.annotations = {"train": "ann/train.json", "validation": "ann/val.json"}
  config.data.image_root = {"train": "images/train", "validation": "images/val"}

Nothing is converted: the source is a random-access list of the json's images (in its
``images`` order), and each image file is decoded with Pillow when the pipeline's workers
read it (JPEG, PNG, ...; grey, palette and RGBA images become RGB, alpha dropped; 16-bit
grey is scaled to 8 bits), turned upright by its EXIF orientation. The json's ``width`` and
``height`` are those of the upright image (what annotation tools show), and are checked.

Examples: ``boxes`` from ``bbox`` (``x, y, w, h`` -> ``x1, y1, x2, y2``), ``labels`` 0..C-1
from ``category_id`` (categories sorted by id; ``SourceMetadata.category_ids`` maps back,
class names are the categories' ``name``), ``area`` (the json's, else the box area),
``is_crowd`` from ``iscrowd``, ``masks`` from polygons or RLE (pycocotools' mask API; offered
when every annotation has a ``segmentation``), ``keypoints`` [N, K, 3] (offered when a
category or annotation has keypoints; objects without them get visibility 0). Images
without annotations are kept, as negatives. Annotations with a zero-width or zero-height box
are left out of the examples (they cannot be regressed to), but not out of the evaluation.
``image_id`` is the image's position in the splits (sorted by name) laid end to end, unique
across splits; :meth:`CocoJsonSource.image` gives back its split, json id and file.

Evaluation (the ``detection`` task uses it): :meth:`CocoJsonSource.ground_truth` is the
json's own ground truth of the evaluated images, and :meth:`CocoJsonSource.coco_results`
turns the model's detections (in letterboxed input pixels, contiguous labels) into COCO
results in the json's image ids, category ids and original image pixels.

Everything that can be checked is checked when the source is built, before anything
compiles, with errors naming the json, the annotation id and the image file: unknown image
or category ids, boxes outside the image (by more than ``BOX_TOLERANCE`` pixels; boxes
within it are clipped to the image), malformed segmentations or keypoints, missing image
files, more objects than ``data.max_boxes``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

from jaxvision.data import sources
from jaxvision.data import transforms
from jaxvision.data.transforms import Example

NAME = "coco_json"
# How far (pixels) a box may cross the image border before it is an error: annotation
# tools round coordinates; boxes within it are clipped to the image.
BOX_TOLERANCE = 1.0
# Missing image files named in one error before "and N more".
_MISSING_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class CocoImage:
  """One image of a split: where it comes from and its size in the json."""

  split: str
  json_id: int
  file_name: str
  path: str
  height: int
  width: int


def _read_json(path: str, what: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise ValueError(f"{what} = {path!r} does not exist; point it at the split's COCO json.")
  try:
    with open(path) as f:
      content = json.load(f)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} ({what}) is not valid json: {error}.") from error
  for key in ("images", "annotations", "categories"):
    if not isinstance(content.get(key), list):
      raise ValueError(f"{path} has no {key!r} list; a COCO json holds 'images', "
                       "'annotations' and 'categories'.")
  return content


def _checked_categories(json_path: str, categories: list[dict[str, Any]]
                        ) -> list[dict[str, Any]]:
  """The categories sorted by id (label = position), each with an int ``id`` and a name."""
  ids = []
  for category in categories:
    if not isinstance(category.get("id"), int) or "name" not in category:
      raise ValueError(f"{json_path}: category {category!r:.200} needs an integer 'id' and a "
                       "'name'.")
    ids.append(category["id"])
  duplicates = sorted({i for i in ids if ids.count(i) > 1})
  if duplicates:
    raise ValueError(f"{json_path}: category ids {duplicates} appear more than once.")
  if not categories:
    raise ValueError(f"{json_path} has no categories; a detection dataset needs at least one.")
  return sorted(categories, key=lambda category: category["id"])


def _keypoint_flip_permutation(permutation: np.ndarray, num_keypoints: int) -> np.ndarray:
  if num_keypoints != len(permutation):
    raise ValueError(f"The COCO json's categories name {len(permutation)} keypoints; examples "
                     f"have {num_keypoints}.")
  return permutation


def _flip_permutation(names: Sequence[str]) -> np.ndarray:
  """New keypoint k is old keypoint ``p[k]`` after a horizontal flip: "left_x" <-> "right_x"."""
  index = {name: i for i, name in enumerate(names)}

  def mirror(name: str) -> str:
    if "left" in name:
      return name.replace("left", "right")
    return name.replace("right", "left")
  return np.asarray([index.get(mirror(name), i) for i, name in enumerate(names)], np.int64)


def read_image(path: str, where: str) -> np.ndarray:
  """An image file as upright uint8 RGB [H, W, 3] (EXIF orientation applied, alpha dropped).

  Args:
    path: The file.
    where: What names it in errors (the json and image id).
  """
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grey: Pillow's convert("L") would clip at 255 instead of scaling.
        grey = np.asarray(image, np.float64) / 257.0
        image = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8))
      return np.array(image.convert("RGB"))
  except FileNotFoundError:
    raise ValueError(f"Image file {path} ({where}) does not exist; check data.image_root "
                     "and the json's file_name.") from None
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f"Image file {path} ({where}) cannot be decoded: {error}.") from error


@sources.register_source(NAME)
class CocoJsonSource(sources.DataSource):
  """COCO-format json files and their image folders, read directly (see the module doc)."""

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.name = data_config.name
    annotations = {split: path for split, path in dict(data_config.annotations).items()
                   if path}
    self._unset = sorted(set(data_config.annotations) - set(annotations))
    if not annotations:
      raise ValueError(
          "data.annotations sets no split; data.name='coco_json' reads one COCO json per "
          "split: set e.g. --config.data.annotations.train=ann/train.json and "
          "--config.data.image_root.train=images/train.")
    self.splits = tuple(sorted(annotations))
    image_roots = dict(data_config.image_root)
    max_boxes = data_config.get("max_boxes")

    self._records: dict[str, list[dict[str, Any]]] = {}
    self._json: dict[str, dict[str, Any]] = {}
    self._images: list[CocoImage] = []
    categories = None
    keypoint_names: tuple[str, ...] = ()
    num_keypoints = 0
    all_have_masks = True
    for split in self.splits:
      json_path = os.path.expanduser(annotations[split])
      if not image_roots.get(split):
        raise ValueError(f"data.image_root.{split} is not set; set it to the folder that the "
                         f"file_name values of {json_path} are relative to.")
      content = _read_json(json_path, f"data.annotations.{split}")
      split_categories = _checked_categories(json_path, content["categories"])
      if categories is None:
        categories, first_json = split_categories, json_path
      elif ([(c["id"], c["name"]) for c in split_categories]
            != [(c["id"], c["name"]) for c in categories]):
        raise ValueError(f"{json_path} and {first_json} have different categories (ids and "
                         "names); every split must share one category list.")
      for category in split_categories:
        names = tuple(category.get("keypoints") or ())
        if names and keypoint_names and names != keypoint_names:
          raise ValueError(f"{json_path}: categories name different keypoints ({names} and "
                           f"{keypoint_names}); examples hold one keypoint list.")
        keypoint_names = keypoint_names or names
      records, split_keypoints, split_masks = self._split_records_of(
          split, json_path, os.path.expanduser(image_roots[split]), content, categories,
          len(keypoint_names), max_boxes)
      num_keypoints = max(num_keypoints, split_keypoints, len(keypoint_names))
      all_have_masks &= split_masks
      self._records[split] = records
      self._json[split] = content
    if keypoint_names and num_keypoints != len(keypoint_names):
      raise ValueError(f"Annotations have {num_keypoints} keypoints but the categories name "
                       f"{len(keypoint_names)}: {keypoint_names}.")
    self._num_keypoints = num_keypoints
    self._categories = categories

    features = {"image", "boxes", "labels", "area", "is_crowd"}
    if all_have_masks:
      features.add("masks")
    if num_keypoints:
      features.add("keypoints")
    flip = (functools.partial(_keypoint_flip_permutation, _flip_permutation(keypoint_names))
            if keypoint_names else None)
    self.metadata = sources.SourceMetadata(
        class_names=tuple(str(c["name"]) for c in categories), channels=3,
        features=frozenset(features), keypoint_flip_permutation=flip,
        category_ids=tuple(c["id"] for c in categories))

  # --- building and checking ---------------------------------------------------------
  def _split_records_of(self, split: str, json_path: str, image_root: str,
                        content: dict[str, Any], categories: list[dict[str, Any]],
                        named_keypoints: int, max_boxes: int | None
                        ) -> tuple[list[dict[str, Any]], int, bool]:
    """The split's records (one per image, json order), its keypoint count, whether every
    annotation has a segmentation; raises on anything malformed."""
    label_of = {c["id"]: label for label, c in enumerate(categories)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    images = {}
    for image in content["images"]:
      for key in ("id", "file_name", "width", "height"):
        if key not in image:
          raise ValueError(f"{json_path}: image {image!r:.200} has no {key!r}; COCO images "
                           "need 'id', 'file_name', 'width' and 'height'.")
      if not isinstance(image["id"], int) or image["id"] in images:
        raise ValueError(f"{json_path}: image id {image['id']!r} ({image['file_name']}) is "
                         "not an integer or appears twice; give each image a unique integer id.")
      images[image["id"]] = image
      by_image[image["id"]] = []
    num_keypoints = named_keypoints
    all_have_masks = True
    for annotation in content["annotations"]:
      annotation_id = annotation.get("id")
      image = images.get(annotation.get("image_id"))
      if image is None:
        raise ValueError(f"{json_path}: annotation {annotation_id} refers to image id "
                         f"{annotation.get('image_id')!r}, which is not in its 'images'.")
      where = (f"{json_path}: annotation {annotation_id} of image {image['id']} "
               f"({image['file_name']})")
      if annotation.get("category_id") not in label_of:
        raise ValueError(f"{where} has category_id {annotation.get('category_id')!r}, which is "
                         f"not in the json's categories (ids {sorted(label_of)}).")
      self._check_box(annotation.get("bbox"), image, where)
      segmentation = annotation.get("segmentation")
      if segmentation:
        self._check_segmentation(segmentation, image, where)
      else:
        all_have_masks = False
      keypoints = annotation.get("keypoints")
      if keypoints:
        if len(keypoints) % 3 or (num_keypoints and len(keypoints) != 3 * num_keypoints):
          raise ValueError(f"{where} has {len(keypoints)} keypoint numbers; expected 3 (x, y, "
                           f"v) per keypoint, for {num_keypoints or 'any number of'} keypoints "
                           "(the categories' or the other annotations').")
        num_keypoints = len(keypoints) // 3
      by_image[image["id"]].append(annotation)

    records, missing = [], []
    first_index = len(self._images)
    for position, image in enumerate(content["images"]):
      path = os.path.join(image_root, image["file_name"])
      if not os.path.isfile(path):
        missing.append(path)
      self._images.append(CocoImage(split, image["id"], image["file_name"], path,
                                    int(image["height"]), int(image["width"])))
      kept = [a for a in by_image[image["id"]] if a["bbox"][2] > 0 and a["bbox"][3] > 0]
      if max_boxes is not None and len(kept) > max_boxes:
        raise ValueError(f"{json_path}: image {image['id']} ({image['file_name']}) has "
                         f"{len(kept)} objects but data.max_boxes={max_boxes}; raise "
                         f"data.max_boxes to at least {len(kept)}.")
      records.append(self._record(first_index + position, json_path, image, kept, label_of,
                                  num_keypoints))
    if missing:
      more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
      raise ValueError(f"{len(missing)} image file(s) of {json_path} do not exist: "
                       f"{missing[:_MISSING_SHOWN]}{more}; check data.image_root.{split} "
                       f"({image_root}) and the json's file_name values.")
    return records, num_keypoints, all_have_masks

  @staticmethod
  def _check_box(bbox: Any, image: Mapping[str, Any], where: str) -> None:
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
        or not all(isinstance(v, (int, float)) for v in bbox)
        or not np.all(np.isfinite(bbox))):
      raise ValueError(f"{where} has bbox {bbox!r}; COCO boxes are [x, y, width, height] "
                       "(four finite numbers, pixels).")
    x, y, w, h = bbox
    if w < 0 or h < 0:
      raise ValueError(f"{where} has bbox [x, y, w, h] = {list(bbox)} with a negative size.")
    width, height = image["width"], image["height"]
    if (x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE
        or y + h > height + BOX_TOLERANCE):
      raise ValueError(f"{where} has bbox [x, y, w, h] = {list(bbox)}, outside the "
                       f"{width} x {height} image (by more than {BOX_TOLERANCE} px); fix the "
                       "box or the image's width/height.")

  @staticmethod
  def _check_segmentation(segmentation: Any, image: Mapping[str, Any], where: str) -> None:
    if isinstance(segmentation, list):
      if not all(isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
                 for polygon in segmentation):
        raise ValueError(f"{where}: a polygon segmentation is a list of polygons, each "
                         "[x1, y1, x2, y2, ...] with at least 3 points.")
    elif isinstance(segmentation, dict) and "counts" in segmentation:
      if list(segmentation.get("size", ())) != [image["height"], image["width"]]:
        raise ValueError(f"{where}: RLE size {segmentation.get('size')} is not the image's "
                         f"[height, width] = [{image['height']}, {image['width']}].")
    else:
      raise ValueError(f"{where}: segmentation {segmentation!r:.100} is neither polygons nor "
                       "RLE ({'size': [h, w], 'counts': ...}).")

  def _record(self, index: int, json_path: str, image: Mapping[str, Any],
              annotations: list[dict[str, Any]], label_of: Mapping[int, int],
              num_keypoints: int) -> dict[str, Any]:
    width, height = image["width"], image["height"]
    xywh = np.asarray([a["bbox"] for a in annotations], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes = np.clip(boxes, 0, np.asarray([width, height, width, height], np.float32))
    keypoints = np.zeros((len(annotations), num_keypoints, 3), np.float32)
    for i, annotation in enumerate(annotations):
      if annotation.get("keypoints"):
        keypoints[i] = np.asarray(annotation["keypoints"], np.float32).reshape(-1, 3)
    return {
        "index": index,
        "where": f"{json_path}: image {image['id']} ({image['file_name']})",
        "height": height,
        "width": width,
        "boxes": boxes,
        "labels": np.asarray([label_of[a["category_id"]] for a in annotations], np.int32),
        "area": np.asarray([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in annotations],
                           np.float32),
        "is_crowd": np.asarray([bool(a.get("iscrowd", 0)) for a in annotations], bool),
        "keypoints": keypoints,
        "segmentations": [a.get("segmentation") for a in annotations],
    }

  # --- reading -------------------------------------------------------------------------
  def records(self, split: str) -> Sequence[Mapping[str, Any]]:
    if split in self._unset:
      raise ValueError(f"data.annotations.{split} is not set; set it (and "
                       f"data.image_root.{split}) to read split {split!r}.")
    return super().records(split)

  def _split_records(self, split: str) -> Sequence[Mapping[str, Any]]:
    return self._records[split]  # a list: random access as grain wants

  def to_example(self, record: Mapping[str, Any], wanted: frozenset[str]) -> Example:
    image_info = self._images[record["index"]]
    image = read_image(image_info.path, record["where"])
    if image.shape[:2] != (record["height"], record["width"]):
      raise ValueError(
          f"Image file {image_info.path} ({record['where']}) is {image.shape[0]} x "
          f"{image.shape[1]} (height x width, after its EXIF orientation) but the json says "
          f"{record['height']} x {record['width']}; the json's width/height must be those of "
          "the upright image.")
    example = {"image": image, "image_id": np.int32(record["index"])}
    for name in ("boxes", "labels", "area", "is_crowd"):
      example[name] = record[name].copy()
    if "keypoints" in wanted and self._num_keypoints:
      keypoints = record["keypoints"]
      if keypoints.shape[1] != self._num_keypoints:  # a split without keypoints: unlabeled
        keypoints = np.zeros((len(keypoints), self._num_keypoints, 3), np.float32)
      example["keypoints"] = keypoints.copy()
    if "masks" in wanted:
      example["masks"] = np.zeros((len(record["labels"]), record["height"], record["width"]),
                                  np.uint8)
      for i, segmentation in enumerate(record["segmentations"]):
        example["masks"][i] = decode_segmentation(segmentation, record["height"],
                                                  record["width"])
    return example

  # --- evaluation edge -----------------------------------------------------------------
  def image(self, image_id: int) -> CocoImage:
    """The json image behind an example's ``image_id``."""
    if not 0 <= image_id < len(self._images):
      raise ValueError(f"image_id {image_id} is not an image of data source {self.name!r} "
                       f"(it has {len(self._images)} images).")
    return self._images[image_id]

  def ground_truth(self, image_ids: Sequence[int]) -> dict[str, Any]:
    """The json's own COCO ground truth of these images (the examples' image_id values, one
    split): its image entries, all their annotations (``area`` defaulting to the box's) and
    its categories, in the json's ids and original image coordinates."""
    images = [self.image(int(image_id)) for image_id in image_ids]
    splits = sorted({image.split for image in images})
    if len(splits) > 1:
      raise ValueError(f"Evaluated images come from several splits {splits}; evaluate one "
                       "split at a time.")
    if not images:
      return {"images": [], "annotations": [], "categories": list(self._categories)}
    content = self._json[splits[0]]
    wanted = {image.json_id for image in images}
    annotations = []
    for annotation in content["annotations"]:
      if annotation["image_id"] in wanted:
        if "area" not in annotation:
          annotation = {**annotation, "area": annotation["bbox"][2] * annotation["bbox"][3]}
        annotations.append(annotation)
    return {"images": [image for image in content["images"] if image["id"] in wanted],
            "annotations": annotations, "categories": list(content["categories"])}

  def coco_results(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray],
                   image_size: int) -> list[dict[str, Any]]:
    """COCO results of a batch's detections, in the json's ids and original image pixels.

    Args:
      outputs: ``boxes`` [B, D, 4] (xyxy, pixels of the ``image_size`` letterboxed input),
        ``scores`` [B, D], ``classes`` [B, D] (labels 0..C-1), ``valid`` [B, D].
      batch: ``image_id`` [B] and ``example_mask`` [B] (rows without it are all real).
      image_size: ``data.image_size``, the letterbox the model saw.
    """
    category_ids = np.asarray(self.metadata.category_ids)
    image_ids = np.asarray(batch["image_id"])
    rows = np.flatnonzero(np.asarray(batch.get("example_mask", np.ones(len(image_ids), bool))))
    results = []
    for row in rows:
      image = self.image(int(image_ids[row]))
      valid = np.flatnonzero(np.asarray(outputs["valid"][row]))
      boxes = original_boxes(np.asarray(outputs["boxes"][row])[valid], image.height,
                             image.width, image_size)
      for box, score, label in zip(boxes, np.asarray(outputs["scores"][row])[valid],
                                   np.asarray(outputs["classes"][row])[valid]):
        results.append({"image_id": image.json_id,
                        "category_id": int(category_ids[int(label)]),
                        "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                 float(box[3] - box[1])],
                        "score": float(score)})
    return results


def original_boxes(boxes: np.ndarray, height: int, width: int, image_size: int
                   ) -> np.ndarray:
  """Boxes [N, 4] (xyxy) in the ``image_size`` letterbox of a ``height`` x ``width`` image
  (``transforms.resize_and_pad``) -> xyxy float64 pixels of that image, clipped to it."""
  new_height, new_width = transforms.letterbox_size(height, width, image_size)
  scale = np.asarray([new_width / width, new_height / height] * 2)
  return np.clip(np.asarray(boxes, np.float64).reshape(-1, 4) / scale, 0,
                 np.asarray([width, height, width, height], np.float64))


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
  """A COCO segmentation (polygons, uncompressed or compressed RLE) as uint8 [H, W] 0/1."""
  if isinstance(segmentation, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation["counts"], list):
    rle = mask_utils.frPyObjects(segmentation, height, width)
  else:
    rle = segmentation
  return mask_utils.decode(rle).astype(np.uint8)
