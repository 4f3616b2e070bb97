#!/usr/bin/env bash
# Train on every host of a Cloud TPU VM pod slice (v4/v5e/v5p), the same command on all workers.
#
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh \
#     --config configs/faster_rcnn_coco.py --workdir gs://BUCKET/runs/frcnn
#
# Needs: the repository checked out at ~/jaxvision on every worker (or set REPO), a GCS
# workdir (all hosts write their checkpoint shards there) and TFDS data on GCS
# (--config.data.data_dir=gs://BUCKET/tensorflow_datasets). JAXVISION_DISTRIBUTED=1 makes
# jaxvision.parallel.initialize() call jax.distributed.initialize(), which finds the pod's
# coordinator and process ids itself.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO=${REPO:-'~/jaxvision'}
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --zone "${ZONE}" --worker=all --command \
  "cd ${REPO} && pip install -q -e '.[tpu]' && JAXVISION_DISTRIBUTED=1 python -m jaxvision.train${args}"
