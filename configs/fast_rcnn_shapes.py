"""Fast R-CNN on selective search proposals, on the embedded shapes detection data.

  python -m jaxvision.train --config configs/fast_rcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/fast_rcnn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run, see docs/RESULTS.md "Detection lineage"),
``quick`` (tests: a tiny model and dataset, a few steps), ``quality`` (OpenCV's quality
selective search: more and tighter proposals, ~5x the search time).

The detector of ``configs/faster_rcnn_shapes.py`` with the RPN taken out
(``model.proposal_source = "data"``): every image's proposals are OpenCV's selective search
boxes (``data_proposals.method = "selective_search"``, ``jaxvision.data.proposals``),
searched once per image in the input pipeline and cached under
``<data_dir>/proposals/`` (the first epoch pays ~0.06 s per 128 px image in fast mode,
later epochs and evaluations read the cache), letterboxed and flipped with the image. The
RoI head is trained on 128 sampled RoIs per image from those proposals plus the ground-truth
boxes (Fast R-CNN's recipe) and scores up to ``num_proposals`` of them at test time. On
the held-out shapes images fast selective search proposes ~130 boxes per image on average
and covers 92% of the objects at IoU 0.5 (docs/RESULTS.md), which bounds the recall
of the detector: the RoI head's box regression can move a proposal, not find a missed
object.

Same held-out split as Faster R-CNN (validation images depend only on the data seed and
their index); fewer training images (5000 instead of 20000) because each new image costs a
search, and the run sees every one ~6 times.
"""

import ml_collections

from jaxvision import config_files


def get_config(arg=None):
  if arg not in (None, "", "quick", "quality"):
    raise ValueError(f"Unknown variant {arg!r} of fast_rcnn_shapes; use 'quick', 'quality' "
                     "or none.")
  base = config_files.sibling(__file__, "faster_rcnn_shapes")
  config = base.get_config("quick" if arg == "quick" else None)
  config.model.proposal_source = "data"  # Fast R-CNN: the proposals come with the batch
  config.model.refine_proposals = False  # it refines an RPN's proposals; there is none
  config.data_proposals = ml_collections.ConfigDict(dict(
      method="selective_search",  # "selective_search" | "synthetic" (jittered ground truth)
      mode="fast",  # OpenCV's preset: "fast" | "quality"
      num_proposals=300,  # the first 300 in OpenCV's ranking (fast mode: ~130 on average)
      min_size=4,  # pixels: drops slivers of the over-segmentation
      cache=True,  # keep each image's boxes under <data_dir>/proposals/
      jittered_per_object=20, jitter=0.25))  # method="synthetic" only
  if arg == "quick":
    config.data_proposals.num_proposals = 64
  else:
    config.data.num_train = 5000
  if arg == "quality":
    config.data_proposals.mode = "quality"
    config.data_proposals.num_proposals = 500
  return config
