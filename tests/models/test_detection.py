"""The FasterRCNN detector: its stages composed, its settings checked, its parameter tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import ops
from jaxvision.models import detection, roi_heads, rpn

TINY_MODEL = dict(num_classes=3, backbone="resnet_tiny", fpn_channels=8,
                  anchor_sizes=(8.0, 16.0, 32.0, 64.0, 128.0), rpn_post_nms_top_n_train=20,
                  rpn_post_nms_top_n_test=20, roi_samples_per_image=16, box_head_hidden=16)


@pytest.fixture(scope="module")
def refiner_variables():
  """The initial variables of TINY_MODEL with ``refine_proposals``, compiled once for the
  module. Flax draws each submodule's parameters from its own path, so without
  ``proposal_refiner`` they are exactly TINY_MODEL's initial variables (``_without_refiner``)."""
  model = detection.FasterRCNN(**{**TINY_MODEL, "refine_proposals": True})
  return jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                    train=False))()


def _without_refiner(variables):
  params = variables["params"]
  return {**variables, "params": {
      name: value for name, value in params.items() if name != "proposal_refiner"}}


def test_faster_rcnn_rejects_box_voting_iou_outside_unit_interval():
  model = detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_voting_iou": 1.5})
  with pytest.raises(ValueError, match="rpn_box_voting_iou"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


def test_faster_rcnn_rejects_backbone_without_stride_four_features():
  model = detection.FasterRCNN(**{**TINY_MODEL, "backbone_kwargs": {"stem": "small"}})
  with pytest.raises(ValueError, match="stem='imagenet'"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


def test_fast_rcnn_mode_requires_proposals_and_has_no_rpn():
  model = detection.FasterRCNN(**{**TINY_MODEL, "proposal_source": "data"})
  images = jnp.zeros((1, 64, 64, 3))
  with pytest.raises(ValueError, match="proposal_valid"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  proposals = jnp.array([[[4.0, 4.0, 30.0, 30.0]] * 20])
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), images, train=False, proposals=proposals,
      proposal_valid=jnp.ones((1, 20), bool)))
  assert "rpn_head" not in variables["params"]


def test_roi_samples_beyond_candidates_is_an_error():
  model = detection.FasterRCNN(**{**TINY_MODEL, "roi_samples_per_image": 64})
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  with pytest.raises(ValueError, match="roi_samples_per_image=64"):
    jax.eval_shape(lambda v: model.apply(
        v, images, train=True, gt_boxes=jnp.zeros((1, 2, 4)),
        gt_labels=jnp.zeros((1, 2), jnp.int32), gt_valid=jnp.zeros((1, 2), bool),
        rngs={"sampling": jax.random.key(0)}, mutable=["batch_stats"]), variables)


def test_anchor_scales_give_every_scale_at_every_location_in_head_order():
  scales = (1.0, 2.0)
  levels = rpn.level_anchors([(4, 4), (2, 2)], [4, 8], (8.0, 16.0), (0.5, 1.0, 2.0),
                             scales)
  assert [len(a) for a in levels] == [4 * 4 * 6, 2 * 2 * 6]
  for anchors, size in zip(levels, (8.0, 16.0)):
    cell = np.asarray(anchors[:6])  # the templates of location (0, 0), ratio-major
    sides = np.sqrt((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1]))
    np.testing.assert_allclose(sides, [size, 2 * size] * 3, rtol=0.1)  # rounded corners
  # The head predicts one objectness and one delta per (scale, ratio) at every location,
  # so a model with two scales has as many outputs as anchors, level by level.
  model = detection.FasterRCNN(**{**TINY_MODEL, "anchor_scales": scales, "rpn_head_convs": 2})
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
  head = variables["params"]["rpn_head"]
  assert sorted(head) == ["box_deltas", "conv", "conv2", "objectness"]
  assert head["objectness"]["kernel"].shape[-1] == 6
  assert head["box_deltas"]["kernel"].shape[-1] == 24
  outputs = jax.eval_shape(lambda v: model.apply(
      v, images, train=True, gt_boxes=jnp.zeros((1, 2, 4)),
      gt_labels=jnp.zeros((1, 2), jnp.int32), gt_valid=jnp.zeros((1, 2), bool),
      rngs={"sampling": jax.random.key(0)}, mutable=["batch_stats"]), variables)
  assert set(outputs[0]["losses"]) >= {"rpn_objectness", "rpn_box"}


def test_rpn_box_loss_weight_scales_only_the_rpn_box_loss(refiner_variables):
  images = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
  truth = dict(gt_boxes=jnp.array([[[8.0, 8.0, 30.0, 28.0], [30.0, 34.0, 60.0, 60.0]]]),
               gt_labels=jnp.array([[0, 2]]), gt_valid=jnp.array([[True, True]]))
  variables = _without_refiner(refiner_variables)

  def losses(weight):
    model = detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_loss_weight": weight})
    outputs, _ = model.apply(variables, images, train=True, **truth,
                             rngs={"sampling": jax.random.key(2)}, mutable=["batch_stats"])
    return outputs["losses"]

  # One program for both weights: XLA shares the identical forward passes.
  plain, tripled = jax.device_get(jax.jit(lambda: (losses(1.0), losses(3.0)))())
  assert plain["rpn_box"] > 0
  np.testing.assert_allclose(tripled["rpn_box"], 3 * plain["rpn_box"], rtol=1e-5)
  for name in ("rpn_objectness", "roi_classifier", "roi_box"):
    np.testing.assert_allclose(tripled[name], plain[name], rtol=1e-5)
  with pytest.raises(ValueError, match="Unknown rpn_box_loss 'l2'"):
    jax.eval_shape(lambda: detection.FasterRCNN(**{**TINY_MODEL, "rpn_box_loss": "l2"}).init(
        jax.random.key(0), images, train=False))


def test_refined_proposals_are_the_rpn_proposals_regressed_by_the_refiner(refiner_variables):
  images = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
  # The refiner pools with its own sampling ratio (1), the RoI head with 2.
  refining = detection.FasterRCNN(**{**TINY_MODEL, "refine_proposals": True,
                                     "refine_sampling_ratio": 1})
  plain = detection.FasterRCNN(**TINY_MODEL)

  def regress(model, proposals):
    pyramid = model.fpn(model.backbone_module(images, False))
    _, deltas = model.proposal_refiner(
        roi_heads.pool_rois(pyramid, proposals, model.roi_pool_size, 1))
    return ops.clip_boxes(ops.decode_boxes(deltas[:, :, 1], proposals, model.box_weights),
                          images.shape[1:3])

  @jax.jit
  def run(variables):
    # The refiner starts near the identity (deltas ~ 0); larger deltas make it move boxes.
    params = variables["params"]
    head = params["proposal_refiner"]["box_deltas"]
    params = {**params, "proposal_refiner": {**params["proposal_refiner"], "box_deltas": {
        **head, "kernel": head["kernel"] * 3000.0}}}
    variables = {**variables, "params": params}
    unrefined = plain.apply(_without_refiner(variables), images, train=False)
    return (unrefined, refining.apply(variables, images, train=False),
            refining.apply(variables, unrefined["proposal_boxes"], method=regress))

  unrefined, refined, want = jax.device_get(run(refiner_variables))
  # Scores, order and valid mask are the RPN's; only the boxes change.
  np.testing.assert_array_equal(refined["proposal_scores"], unrefined["proposal_scores"])
  np.testing.assert_array_equal(refined["proposal_valid"], unrefined["proposal_valid"])
  valid = unrefined["proposal_valid"]
  got = refined["proposal_boxes"]
  np.testing.assert_allclose(got[valid], want[valid], rtol=1e-5, atol=1e-4)
  assert np.all(got[~valid] == 0)
  moved = np.abs(got - unrefined["proposal_boxes"]).max(-1)[valid]
  assert np.mean(moved > 0.5) > 0.5


def test_proposal_refiner_trains_with_its_own_losses_and_needs_the_rpn(refiner_variables):
  images = jax.random.uniform(jax.random.key(1), (1, 64, 64, 3))
  truth = dict(gt_boxes=jnp.array([[[8.0, 8.0, 30.0, 28.0], [30.0, 34.0, 60.0, 60.0]]]),
               gt_labels=jnp.array([[0, 2]]), gt_valid=jnp.array([[True, True]]))
  model = detection.FasterRCNN(**{**TINY_MODEL, "refine_proposals": True})

  @jax.jit
  def run(variables):
    def refine_loss(params):
      outputs, _ = model.apply({**variables, "params": params}, images, train=True, **truth,
                               rngs={"sampling": jax.random.key(2)}, mutable=["batch_stats"])
      return outputs["losses"]["refine_objectness"] + outputs["losses"]["refine_box"], outputs

    return jax.value_and_grad(refine_loss, has_aux=True)(variables["params"])

  (loss, outputs), grads = run(refiner_variables)
  assert set(outputs["losses"]) == {"rpn_objectness", "rpn_box", "refine_objectness",
                                    "refine_box", "roi_classifier", "roi_box"}
  assert np.isfinite(loss) and outputs["losses"]["refine_box"] > 0
  assert 0 <= outputs["metrics"]["refine_accuracy"] <= 1
  # The refiner's losses train the refiner and the features it pools, not the RPN whose
  # proposals it refines, not the RoI head that receives them.
  norm = lambda tree: sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(tree))
  for name in ("proposal_refiner", "backbone", "fpn"):
    assert norm(grads[name]) > 0, name
  for name in ("rpn_head", "box_head"):
    assert norm(grads[name]) == 0, name
  with pytest.raises(ValueError, match="refine_proposals=True"):
    jax.eval_shape(lambda: detection.FasterRCNN(
        **{**TINY_MODEL, "refine_proposals": True, "proposal_source": "data"}).init(
            jax.random.key(0), images, train=False, proposals=jnp.zeros((1, 20, 4)),
            proposal_valid=jnp.ones((1, 20), bool)))
