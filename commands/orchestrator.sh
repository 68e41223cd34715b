#!/usr/bin/env bash
# The Orchestrator daemon: each message of fullsend:to_orchestrator goes
#   think  (context + model → decision)  →  dispatch  (decision → effects)
# inside one process, through the same code as `fullsend think | fullsend dispatch`,
# with durable delivery (Redis stream + consumer group "orchestrator").
# Configured only through the environment (see README, Configuration).
set -eu -o pipefail
exec fullsend listen orchestrator --concurrency "${FULLSEND_CONCURRENCY:-4}" "$@"
