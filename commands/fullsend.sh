#!/usr/bin/env bash
# The FULLSEND daemon: each message of fullsend:to_fullsend goes
#   design  (idea → Claude Code → validated spec)  →  save + announce
# (experiments:{id}, metrics_specs:{id}, schedules:{id}, experiment_ready, …),
# through the same code as `fullsend design`, with durable delivery
# (Redis stream + consumer group "fullsend").
set -eu -o pipefail
exec fullsend listen fullsend --concurrency "${FULLSEND_CONCURRENCY:-1}" "$@"
