"""R-CNN on selective search proposals, on the embedded shapes detection data.

  python -m jaxvision.train --config configs/rcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/rcnn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the comparison run of docs/RESULTS.md "Detection lineage"),
``quick`` (tests: a tiny model and dataset, a few steps).

The data and proposals are ``configs/fast_rcnn_shapes.py``'s (the same held-out split, the
same 5000 training images and the same cached selective search boxes, ``data_proposals``), so
R-CNN and Fast R-CNN differ only in how a region is classified: here every proposal,
dilated to have 2 pixels of context in a 32 x 32 warp (the paper's 16 at 227, scaled), is
cropped from the image and warped (``ops.warp_regions``), and a small ResNet (32 x 32 input,
C2 at stride 2, C5 2 x 2 x 128) + a 256-wide two-layer box head classifies it and regresses
its per-class box correction (``jaxvision.models.rcnn``). Training regions: 64 per image, a
quarter foreground at IoU >= 0.5 (the paper fine-tunes on 32 foreground + 96 background
windows per 128), matched and sampled by the Fast R-CNN head's own code. Inference: all 300
proposal slots of an image, 100 regions per CNN call.
"""

import ml_collections

from jaxvision import config_files
from jaxvision.data import CLASS_NAMES


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of rcnn_shapes; use 'quick' or none.")
  base = config_files.sibling(__file__, "fast_rcnn_shapes")
  config = base.get_config("quick" if arg == "quick" else None)
  config.task = "rcnn"
  config.total_steps = 3000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.model = ml_collections.ConfigDict(dict(
      num_classes=len(CLASS_NAMES),
      proposal_source="data",  # the data step's proposals (config.data_proposals)
      region_network="box_head",
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16, norm="batch")),
      warp_size=32,  # pixels of the warped region (227 in the paper)
      context_padding=2.0,  # warped pixels of context around the box (16 of 227 in the paper)
      warp_sampling_ratio=2,  # bilinear samples per warped pixel per axis
      box_head_hidden=256,
      roi_samples_per_image=64, roi_positive_fraction=0.25,
      smooth_l1_beta=1.0 / 9.0,
      max_detections=100, detection_candidates=1000,
      region_chunk=100,  # regions per image per CNN call at inference (memory)
      dtype="float32"))

  if arg == "quick":
    config.total_steps = 10
    config.eval_every = 10
    config.checkpoint_every = 5
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.warp_size = 16
    config.model.context_padding = 1.0
    config.model.box_head_hidden = 32
    config.model.roi_samples_per_image = 16
    config.model.detection_candidates = 200
    config.model.region_chunk = 24  # several chunks of the quick config's 64 proposals
    config.optimizer.learning_rate = 1e-2
  return config
