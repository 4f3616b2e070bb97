#!/usr/bin/env bash
# Start N processes on this machine that form one JAX runtime and train together.
#
#   launch/local.sh N --config configs/X.py --workdir DIR [--config.field=value ...]
#
# Each process joins through jax.distributed (coordinator on 127.0.0.1, a free port or
# $JAXVISION_PORT), reads its own slice of every global batch and drives its own devices.
# On a CPU-only machine each process makes one device per core (jaxvision/cpu_devices.py);
# choose the count per process with JAXVISION_CPU_DEVICES=N or
#   XLA_FLAGS=--xla_force_host_platform_device_count=2 launch/local.sh 2 ...
# Only process 0 prints progress and writes metrics and pictures. If one process fails,
# the others are stopped and the exit status is the failure's.
set -euo pipefail
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES <jaxvision.train arguments>" >&2
  exit 2
fi
num_processes=$1
shift
port=${JAXVISION_PORT:-$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for ((i = 0; i < num_processes; i++)); do
  JAXVISION_COORDINATOR="127.0.0.1:${port}" JAXVISION_NUM_PROCESSES="${num_processes}" \
    JAXVISION_PROCESS_ID="${i}" python -m jaxvision.train "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  if ! wait "${pid}"; then
    status=$?
    [[ $status -eq 0 ]] && status=1
    cleanup
  fi
done
trap - EXIT
exit "${status}"
