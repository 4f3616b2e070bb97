"""Pictures: boxes, masks and labels on images, segmentation maps, panoptic maps, image
grids, PR curves, reliability diagrams.

All functions take host numpy arrays, draw with Pillow or matplotlib (Agg backend, no
display needed), write a PNG and return its path.
"""

from __future__ import annotations

import colorsys
import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUE_COLOUR = (40, 220, 60)
PREDICTED_COLOUR = (240, 40, 40)
# Pixels not scored (a segmentation map's ignore label): PASCAL VOC's cream.
IGNORE_COLOUR = (224, 224, 192)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str],
               colour: tuple[int, int, int], scale: int = 1) -> np.ndarray:
  """Draws ``(x1, y1, x2, y2)`` pixel boxes with captions on a uint8 ``[H, W, 3]`` image.

  ``scale`` enlarges the image first (nearest neighbour) so small images stay readable;
  boxes are given in the original image's pixels. A box with a non-finite coordinate (a
  diverging model's) is left out rather than failing the evaluation that draws it.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8))
  if scale != 1:
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(canvas)
  for box, caption in zip(np.asarray(boxes, np.float32) * scale, captions):
    if not np.all(np.isfinite(box)):
      continue
    draw.rectangle([float(v) for v in box], outline=colour, width=max(1, scale // 2))
    draw.text((float(box[0]) + 2, float(box[1]) + 1), caption, fill=colour)
  return np.asarray(canvas)


def save_image_grid(images: Sequence[np.ndarray], path: str, columns: int = 4,
                    padding: int = 2) -> str:
  """Tiles equally sized uint8 ``[H, W, 3]`` images into one PNG at ``path``."""
  if not len(images):
    raise ValueError("save_image_grid needs at least one image.")
  height, width = images[0].shape[:2]
  rows = -(-len(images) // columns)
  grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3),
                 255, np.uint8)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    top, left = padding + r * (height + padding), padding + c * (width + padding)
    grid[top:top + height, left:left + width] = image
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)
  return path


def plot_pr_curves(result_or_precision, category_names: Sequence[str] | None, path: str,
                   iou_threshold: float = 0.5) -> str:
  """Per-class precision-recall curves at one IoU threshold, one panel per class, as a PNG.

  Curves are for area range ``all`` and the largest ``maxDets``; each panel's title gives
  the class's AP at that threshold (the mean of its 101 interpolated precisions).

  Args:
    result_or_precision: a ``jaxvision.evaluation.coco.CocoResult``, or a precision array
      [T, R, K, A, M] computed with pycocotools' default thresholds (IoU 0.5:0.05:0.95,
      101 recall points).
    category_names: K class names (default: the result's category ids).
    path: where to write the PNG.
    iou_threshold: one of the T IoU thresholds.

  Returns:
    ``path``.
  """
  precision = np.asarray(getattr(result_or_precision, "precision", result_or_precision))
  params = getattr(result_or_precision, "params", None)
  iou_thresholds = np.linspace(.5, .95, 10) if params is None else params.iou_thresholds
  recall = np.linspace(0, 1, 101) if params is None else params.recall_thresholds
  if precision.ndim != 5 or precision.shape[:2] != (len(iou_thresholds), len(recall)):
    raise ValueError(f"Expected precision [T={len(iou_thresholds)}, R={len(recall)}, K, A, M] "
                     f"(pycocotools' eval['precision']), got shape {precision.shape}.")
  index = np.flatnonzero(np.isclose(iou_thresholds, iou_threshold))
  if not len(index):
    raise ValueError(f"iou_threshold {iou_threshold} is not one of the evaluated thresholds "
                     f"{np.round(iou_thresholds, 2).tolist()}.")
  curves = precision[index[0], :, :, 0, -1]  # [R, K]
  num_classes = curves.shape[1]
  if category_names is None:
    category_names = [str(c) for c in getattr(result_or_precision, "category_ids",
                                              range(num_classes))]
  if len(category_names) != num_classes:
    raise ValueError(f"{len(category_names)} category_names for {num_classes} categories.")
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  columns = int(np.ceil(np.sqrt(num_classes)))
  rows = int(np.ceil(num_classes / columns))
  width, height = 2.4 * columns + 0.7, 2.2 * rows + 1.2  # inches
  figure = Figure(figsize=(width, height))
  # Fixed margins in inches (a layout engine costs seconds for many panels).
  figure.subplots_adjust(left=0.7 / width, right=1 - 0.15 / width, bottom=0.7 / height,
                         top=1 - 0.8 / height, wspace=0.12, hspace=0.35)
  # Not sharex/sharey: with many panels, propagating limits between them is quadratic.
  axes = figure.subplots(rows, columns, squeeze=False)
  for k, axis in enumerate(axes.flat):
    if k >= num_classes:
      axis.set_axis_off()
      continue
    curve = curves[:, k]
    if (curve > -1).any():
      axis.plot(recall, curve, color="tab:blue")
      axis.fill_between(recall, curve, alpha=0.2, color="tab:blue")
      axis.set_title(f"{category_names[k]}: AP {curve.mean():.3f}", fontsize=9)
    else:
      axis.set_title(f"{category_names[k]}: no ground truth", fontsize=9)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xticks([0, 0.5, 1])  # few ticks: each costs a few ms to build
    axis.set_yticks([0, 0.5, 1])
    axis.label_outer()
  figure.supxlabel("recall", y=0.15 / height)
  figure.supylabel("precision", x=0.15 / width)
  figure.suptitle(f"Precision-recall at IoU {iou_threshold:g}", y=1 - 0.15 / height)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=100)
  return path


def plot_reliability_diagram(diagram, path: str, title: str = "Reliability diagram") -> str:
  """Accuracy vs confidence per bin (bars), the gap to the diagonal, and the ECE, as a PNG.

  Args:
    diagram: a ``jaxvision.evaluation.calibration.ReliabilityDiagram``.
    path: where to write the PNG.
    title: figure title (the ECE is appended).

  Returns:
    ``path``.
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

  left = diagram.bin_edges[:-1]
  width = np.diff(diagram.bin_edges)
  filled = diagram.count > 0
  accuracy = np.where(filled, diagram.accuracy, 0.0)
  confidence = np.where(filled, diagram.confidence, 0.0)
  figure = Figure(figsize=(4.5, 4.5))
  figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.92)
  axis = figure.subplots()
  axis.bar(left, accuracy, width=width, align="edge", edgecolor="black", color="tab:blue",
           label="accuracy")
  axis.bar(left, confidence - accuracy, bottom=accuracy, width=width, align="edge",
           edgecolor="tab:red", color="tab:red", alpha=0.3, hatch="//", label="gap to confidence")
  axis.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfectly calibrated")
  axis.set_xlim(0, 1)
  axis.set_ylim(0, 1)
  axis.set_xlabel("confidence")
  axis.set_ylabel("accuracy")
  axis.set_title(f"{title} (ECE {diagram.expected_calibration_error:.3f})")
  axis.legend(loc="upper left")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, dpi=100)
  return path


def class_palette(num_classes: int) -> np.ndarray:
  """uint8 ``[num_classes, 3]`` colours: the PASCAL VOC palette (class 0 black, then
  distinct colours from the bits of the class index)."""
  palette = np.zeros((num_classes, 3), np.uint8)
  for label in range(num_classes):
    code = label
    for bit in range(7, -1, -1):
      for channel in range(3):
        palette[label, channel] |= ((code >> channel) & 1) << bit
      code >>= 3
  return palette


def colour_segmentation(labels: np.ndarray, num_classes: int, ignore_label: int = 255
                        ) -> np.ndarray:
  """int ``[H, W]`` class map -> uint8 ``[H, W, 3]``: :func:`class_palette` colours,
  ``IGNORE_COLOUR`` for ``ignore_label`` and any label outside ``[0, num_classes)``."""
  labels = np.asarray(labels)
  known = (labels >= 0) & (labels < num_classes) & (labels != ignore_label)
  colours = class_palette(num_classes)[np.where(known, labels, 0)]
  colours[~known] = IGNORE_COLOUR
  return colours


def draw_segmentations(images: np.ndarray, truths: np.ndarray, predictions: np.ndarray,
                       class_names: Sequence[str], path: str, ignore_label: int = 255,
                       scale: int = 1, padding: int = 2) -> str:
  """One row per image, ``image | truth | prediction``, over a colour legend, as a PNG.

  Args:
    images: uint8 ``[N, H, W, 3]`` (or ``[N, H, W, 1]``, drawn grey).
    truths: int ``[N, H, W]`` true classes (``ignore_label`` where not scored).
    predictions: int ``[N, H, W]`` predicted classes.
    class_names: C names, index = class.
    path: where to write the PNG.
    ignore_label: drawn in ``IGNORE_COLOUR`` and listed as "ignored" in the legend.
    scale: integer enlargement (nearest neighbour) so small images stay readable.
    padding: pixels between panels.

  Returns:
    ``path``.
  """
  images, truths, predictions = (np.asarray(a) for a in (images, truths, predictions))
  if not len(images):
    raise ValueError("draw_segmentations needs at least one image.")
  if truths.shape != images.shape[:3] or predictions.shape != images.shape[:3]:
    raise ValueError(f"truths {truths.shape} and predictions {predictions.shape} must be "
                     f"[N, H, W] maps of the images {images.shape}.")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  num_classes = len(class_names)
  rows = []
  for image, truth, prediction in zip(images, truths, predictions):
    panels = [image, colour_segmentation(truth, num_classes, ignore_label),
              colour_segmentation(prediction, num_classes, ignore_label)]
    gap = np.full((image.shape[0], padding, 3), 255, np.uint8)
    rows.append(np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1))
  gap = np.full((padding, rows[0].shape[1], 3), 255, np.uint8)
  grid = np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)
  grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)

  # Column titles above the grid; below it a legend: a swatch and a name per class, wrapped.
  line, swatch = 14, 10
  entries = [(tuple(int(c) for c in colour), name)
             for colour, name in zip(class_palette(num_classes), class_names)]
  entries.append((IGNORE_COLOUR, "ignored"))
  width = grid.shape[1]
  positions, x, y = [], 0, 0
  for _, name in entries:
    entry_width = swatch + 4 + 6 * len(name) + 10  # Pillow's default font: ~6 px a character.
    if x and x + entry_width > width:
      x, y = 0, y + line
    positions.append((x, y))
    x += entry_width
  legend_top = line + grid.shape[0] + 4
  canvas = Image.new("RGB", (width, legend_top + y + line), (255, 255, 255))
  canvas.paste(Image.fromarray(grid), (0, line))
  draw = ImageDraw.Draw(canvas)
  panel_width = images.shape[2] * scale
  for column, title in enumerate(("image", "truth", "prediction")):
    draw.text((column * (panel_width + padding * scale) + 2, 1), title, fill=(0, 0, 0))
  for (colour, name), (x, y) in zip(entries, positions):
    y += legend_top
    draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=colour, outline=(0, 0, 0))
    draw.text((x + swatch + 4, y + 1), name, fill=(0, 0, 0))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)
  return path


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5,
                  colours: np.ndarray | None = None) -> np.ndarray:
  """Instance masks coloured over a uint8 ``[H, W, 3]`` image, one colour per instance.

  Args:
    image: uint8 ``[H, W, 3]``.
    masks: ``[K, H, W]`` bool (or 0/1) instance masks; where several overlap, the later
      instance's colour is on top.
    alpha: opacity of the colours.
    colours: uint8 ``[K, 3]``; default the :func:`class_palette` colours ``1..K``.

  Returns:
    uint8 ``[H, W, 3]``.
  """
  image, masks = np.asarray(image, np.uint8), np.asarray(masks).astype(bool)
  if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
    raise ValueError(f"masks {masks.shape} must be [K, H, W] masks of the image "
                     f"{image.shape}.")
  if colours is None:
    colours = class_palette(len(masks) + 1)[1:]
  canvas = image.astype(np.float32)
  for mask, colour in zip(masks, np.asarray(colours, np.float32)):
    canvas[mask] = (1.0 - alpha) * canvas[mask] + alpha * colour
  return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _instance_colours(count: int) -> np.ndarray:
  """uint8 ``[count, 3]`` saturated colours whose hues step by the golden angle, so any
  few consecutive ones are far apart."""
  hues = (np.arange(count) * 0.618033988749895 + 0.1) % 1.0
  colours = np.array([colorsys.hsv_to_rgb(hue, 0.85, 1.0) for hue in hues]).reshape(count, 3)
  return np.round(colours * 255).astype(np.uint8)


def draw_panoptic(image: np.ndarray, panoptic: np.ndarray, segments_info: Sequence[dict],
                  category_names: Sequence[str], scale: int = 1, alpha: float = 0.6
                  ) -> np.ndarray:
  """A panoptic map coloured over its image, with a legend of the categories shown.

  Things are coloured per instance, stuff per class; void pixels (id 0, or an id without
  a segment) keep the image's colours. Below the image, one legend entry per category
  present: its swatch (a stuff class's colour, or the colours of the category's instances
  side by side) and its name, with the instance count of things. The legend has room for
  every category, so all pictures of one dataset have the same size (they tile into grids).

  Args:
    image: uint8 ``[H, W, 3]`` (or ``[H, W, 1]``, drawn grey).
    panoptic: int ``[H, W]`` segment ids.
    segments_info: the segments, ``{"id", "category_id", "isthing"}`` each (panopticapi).
    category_names: names, index = ``category_id``.
    scale: integer enlargement (nearest neighbour) so small images stay readable.
    alpha: opacity of the segment colours.

  Returns:
    uint8 ``[H * scale + legend height, W * scale, 3]``.
  """
  image, panoptic = np.asarray(image, np.uint8), np.asarray(panoptic)
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if panoptic.shape != image.shape[:2]:
    raise ValueError(f"panoptic {panoptic.shape} must be the [H, W] id map of the image "
                     f"{image.shape}.")
  for segment in segments_info:
    if not 0 <= segment["category_id"] < len(category_names):
      raise ValueError(f"Segment {segment['id']} has category_id {segment['category_id']}, "
                       f"outside the {len(category_names)} category_names.")
  stuff_colours = class_palette(len(category_names) + 1)[1:]
  thing_colours = _instance_colours(sum(bool(s["isthing"]) for s in segments_info))
  masks, colours, swatches = [], [], {}  # swatches: category -> its segments' colours
  num_things = 0
  for segment in segments_info:
    category = int(segment["category_id"])
    if segment["isthing"]:
      colour, num_things = thing_colours[num_things], num_things + 1
    else:
      colour = stuff_colours[category]
    masks.append(panoptic == segment["id"])
    colours.append(colour)
    swatches.setdefault(category, []).append(colour)
  overlay = (overlay_masks(image, np.stack(masks), alpha, np.stack(colours)) if masks
             else image)
  overlay = np.repeat(np.repeat(overlay, scale, axis=0), scale, axis=1)

  line, swatch = 14, 10
  width = overlay.shape[1]
  entry_width = swatch + 4 + 6 * (max(map(len, category_names), default=0) + 3) + 8
  columns = max(1, width // entry_width)
  lines = -(-len(category_names) // columns)
  canvas = Image.new("RGB", (width, overlay.shape[0] + lines * line + 4), (255, 255, 255))
  canvas.paste(Image.fromarray(overlay), (0, 0))
  draw = ImageDraw.Draw(canvas)
  for slot, category in enumerate(sorted(swatches)):
    row, column = divmod(slot, columns)
    x, y = column * entry_width, overlay.shape[0] + 2 + row * line
    shades = swatches[category][:swatch]  # side by side, one per instance
    for i, colour in enumerate(shades):
      draw.rectangle([x + i * swatch // len(shades), y + 2,
                      x + (i + 1) * swatch // len(shades), y + 2 + swatch],
                     fill=tuple(int(c) for c in colour))
    draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], outline=(0, 0, 0))
    count = len(swatches[category])
    name = category_names[category] + (f" x{count}" if count > 1 else "")
    draw.text((x + swatch + 4, y + 1), name, fill=(0, 0, 0))
  return np.asarray(canvas)


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, visible: np.ndarray,
                   skeleton: Sequence[Sequence[int]], colour: tuple[int, int, int],
                   radius: float = 2.0) -> np.ndarray:
  """Draws each object's keypoints as dots joined by its skeleton on a uint8 ``[H, W, 3]`` image.

  Args:
    image: the canvas (already enlarged, if at all: no scaling here).
    keypoints: ``[N, K, 2+]`` ``(x, y, ...)`` in the canvas's pixels.
    visible: ``bool[N, K]``: the keypoints to draw (a skeleton edge needs both ends).
    skeleton: ``(a, b)`` pairs of 0-based keypoint indices to join.
    colour: RGB of dots and edges.
    radius: dot radius in pixels.

  Non-finite points are left out, as in :func:`draw_boxes`.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8))
  draw = ImageDraw.Draw(canvas)
  points = np.asarray(keypoints, np.float32)[..., :2].reshape(-1, np.shape(keypoints)[1], 2)
  shown = np.asarray(visible, bool).reshape(points.shape[:2]) & np.isfinite(points).all(-1)
  for xy, on in zip(points, shown):
    for a, b in skeleton:
      if on[a] and on[b]:
        draw.line([tuple(map(float, xy[a])), tuple(map(float, xy[b]))], fill=colour, width=1)
    for (x, y), dot in zip(xy, on):
      if dot:
        draw.ellipse([float(x) - radius, float(y) - radius, float(x) + radius,
                      float(y) + radius], fill=colour)
  return np.asarray(canvas)
