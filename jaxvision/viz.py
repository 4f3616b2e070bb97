"""Pictures: boxes, masks and labels on images, image grids, PR curves, reliability diagrams.

All functions take host numpy arrays, draw with Pillow or matplotlib (Agg backend, no
display needed), write a PNG and return its path.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

TRUE_COLOUR = (40, 220, 60)
PREDICTED_COLOUR = (240, 40, 40)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str],
               colour: tuple[int, int, int], scale: int = 1) -> np.ndarray:
  """Draws ``(x1, y1, x2, y2)`` pixel boxes with captions on a uint8 ``[H, W, 3]`` image.

  ``scale`` enlarges the image first (nearest neighbour) so small images stay readable;
  boxes are given in the original image's pixels.
  """
  canvas = Image.fromarray(np.asarray(image, np.uint8))
  if scale != 1:
    canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(canvas)
  for box, caption in zip(np.asarray(boxes, np.float32) * scale, captions):
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
