#!/usr/bin/env bash
# Runs `python -m metatalk_jax.train` on every worker of a Cloud TPU VM pod slice.
#
# Every worker runs the same command; `--distributed auto` makes the trainer call
# jax.distributed.initialize() with no arguments, which finds the coordinator, the number of
# processes and this worker's index from the TPU VM metadata.
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b launch/tpu_pod.sh [options] -- <train arguments>
#
#   launch/tpu_pod.sh --setup -- --config configs/renderer.py:tpu_pod --workdir gs://bucket/run1
#
# Options:
#   --setup          first install the checkout, gcsfs and jax[tpu] on every worker
#                    (pip install -e '.[gcs]' 'jax[tpu]');
#                    clones $REPO_URL into the checkout directory where it is missing
#   --repo_dir DIR   the checkout on the workers, relative to the login home (default metatalk_jax)
#   --dry_run        print the gcloud commands instead of running them
#   -h, --help       this text
# Environment: TPU_NAME and ZONE (required), PROJECT (optional gcloud project), REPO_URL
# (optional, for --setup), PYTHON (python on the workers, default python3).
#
# The work dir should be a gs:// path: the workers share no disk, and every worker writes its
# part of each checkpoint to the same place; config.json, metrics.jsonl, TensorBoard events and
# previews go there too. The subject may be a gs:// path as well
# (--config.data.subject=gs://bucket/subjects/me, uploaded once with
# `python -m metatalk_jax.train.staging subjects/me gs://bucket/subjects/me`): every worker then
# copies it into its own cache before training, also after a preempted pod comes back on new VMs.
#
# Before a long run, check that the config fits the slice's HBM on any machine (no TPU needed):
#   python -m metatalk_jax.train --config renderer:tpu_pod --compile-only --topology v5e:4x4
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
  echo "tpu_pod.sh: $*" >&2
  exit 2
}

setup=0
dry_run=0
repo_dir="metatalk_jax"
while (($# > 0)); do
  case "$1" in
    --setup) setup=1; shift ;;
    --dry_run) dry_run=1; shift ;;
    --repo_dir)
      (($# >= 2)) || die "--repo_dir needs a value"
      repo_dir="$2"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown option $1 (train arguments go after --)" ;;
  esac
done
(($# > 0)) || { usage >&2; die "no train arguments given after --"; }
: "${TPU_NAME:?set TPU_NAME to the TPU VM name}"
: "${ZONE:?set ZONE to the TPU VM zone}"
python="${PYTHON:-python3}"

# Warn (not fail) on a local work dir: fine for a one-host slice, wrong for a pod.
workdir=""
previous=""
for arg in "$@"; do
  case "$arg" in
    --workdir=*) workdir="${arg#--workdir=}" ;;
  esac
  if [[ "$previous" == "--workdir" ]]; then
    workdir="$arg"
  fi
  previous="$arg"
done
if [[ "$workdir" != gs://* ]]; then
  echo "tpu_pod.sh: warning: --workdir '${workdir}' is not a gs:// path; workers share no disk" >&2
fi

# One string for the remote shell; printf %q quotes every argument so spaces and shell
# characters in train arguments arrive unchanged.
quoted_repo_dir="$(printf '%q' "$repo_dir")"
quoted_python="$(printf '%q' "$python")"
quoted_train_args="$(printf ' %q' "$@")"
train_command="cd ${quoted_repo_dir} && ${quoted_python} -m metatalk_jax.train --distributed auto${quoted_train_args}"

setup_command="set -e"
if [[ -n "${REPO_URL:-}" ]]; then
  setup_command+="; [ -d ${quoted_repo_dir} ] || git clone $(printf '%q' "$REPO_URL") ${quoted_repo_dir}"
fi
setup_command+="; cd ${quoted_repo_dir}"
setup_command+="; ${quoted_python} -m pip install --upgrade pip"
# libtpu comes from PyPI with recent jax; the -f index serves older versions.
setup_command+="; ${quoted_python} -m pip install -e '.[gcs]' 'jax[tpu]'"
setup_command+=" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"

gcloud_ssh=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_ssh+=(--project "$PROJECT")
fi

on_all_workers() {
  if ((dry_run)); then
    printf '%q ' "${gcloud_ssh[@]}" --command "$1"
    echo
  else
    "${gcloud_ssh[@]}" --command "$1"
  fi
}

if ((setup)); then
  on_all_workers "$setup_command"
fi
on_all_workers "$train_command"
