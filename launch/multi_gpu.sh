#!/usr/bin/env bash
# Runs `python -m metatalk_jax.train` as one process per node, each using all of its node's GPUs
# (JAX sees every visible GPU of its process). Start it once on every node:
#
#   launch/multi_gpu.sh COORDINATOR_HOST:PORT NUM_NODES NODE_RANK <train arguments>
#       node 0:  launch/multi_gpu.sh node0:8476 2 0 --config configs/renderer.py:gpu --workdir /shared/run1
#       node 1:  launch/multi_gpu.sh node0:8476 2 1 --config configs/renderer.py:gpu --workdir /shared/run1
#
# or under SLURM, one task per node, without the first three arguments:
#
#   srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 \
#       launch/multi_gpu.sh --config configs/renderer.py:gpu --workdir /shared/run1
#
# where the rank is $SLURM_PROCID, the node count $SLURM_NTASKS and the coordinator the first
# host of $SLURM_JOB_NODELIST, port $COORDINATOR_PORT (default 8476). Rank 0 hosts the
# coordinator, so its address must be reachable from every node. The work dir must be on a
# file system all nodes share. Environment: PYTHON (default python3).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "multi_gpu.sh: $*" >&2
  exit 2
}

# "node[07-09,12],gpu3" -> node07: enough of SLURM's host list syntax for its first host, for
# machines where scontrol is not on the PATH of the compute nodes.
first_slurm_host() {
  local list="$1"
  if command -v scontrol >/dev/null 2>&1; then
    scontrol show hostnames "$list" | head -n 1
    return
  fi
  local first="${list%%,*}"
  if [[ "$list" =~ ^([^,\[]*)\[([^]]*)\] ]]; then
    local range="${BASH_REMATCH[2]%%,*}"
    first="${BASH_REMATCH[1]}${range%%-*}"
  fi
  echo "$first"
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac

if (($# >= 3)) && [[ "$1" == *:* && "$1" != -* ]]; then
  coordinator="$1"
  num_nodes="$2"
  node_rank="$3"
  shift 3
elif [[ -n "${SLURM_PROCID:-}" ]]; then
  : "${SLURM_NTASKS:?SLURM_NTASKS is not set}"
  : "${SLURM_JOB_NODELIST:?SLURM_JOB_NODELIST is not set}"
  if [[ -n "${SLURM_JOB_NUM_NODES:-}" && "$SLURM_JOB_NUM_NODES" != "$SLURM_NTASKS" ]]; then
    die "run one task per node (srun --ntasks-per-node=1): ${SLURM_NTASKS} tasks on ${SLURM_JOB_NUM_NODES} nodes"
  fi
  coordinator="$(first_slurm_host "$SLURM_JOB_NODELIST"):${COORDINATOR_PORT:-8476}"
  num_nodes="$SLURM_NTASKS"
  node_rank="$SLURM_PROCID"
else
  usage >&2
  die "give COORDINATOR_HOST:PORT NUM_NODES NODE_RANK, or run under srun"
fi

[[ "$num_nodes" =~ ^[1-9][0-9]*$ ]] || die "NUM_NODES must be a positive integer, got '$num_nodes'"
if [[ ! "$node_rank" =~ ^[0-9]+$ ]] || ((node_rank >= num_nodes)); then
  die "NODE_RANK must be in [0, $num_nodes), got '$node_rank'"
fi
(($# > 0)) || die "no train arguments given"

exec "${PYTHON:-python3}" -m metatalk_jax.train "$@" \
  --coordinator "$coordinator" --num_processes "$num_nodes" --process_id "$node_rank"
