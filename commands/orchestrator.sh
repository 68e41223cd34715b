#!/usr/bin/env bash
# The Orchestrator daemon, as the pipeline it is: each message of
# fullsend:to_orchestrator goes, on stdin,
#   fullsend think     (context + model → decision, memoised per delivery)
#   fullsend dispatch  (decision → effects, committed fenced: acknowledges the entry)
# with durable delivery (Redis stream + consumer group "orchestrator"). Change the
# pipeline with FULLSEND_PIPELINE, e.g. add a filter stage between the two:
#   FULLSEND_PIPELINE="fullsend think | jq -c 'select(.action != \"no_action\")' | fullsend dispatch"
# Exit codes of a stage: 0 done, 2 bad input (dead-lettered), 3 transient
# (retried), 4 a limit (waits); the first failing stage decides. The in-process
# form of the same stages is `fullsend listen orchestrator`.
# Configured only through the environment (see README, Configuration).
set -eu -o pipefail
# Defaults through the environment, so flags given to this script still win.
export FULLSEND_CONCURRENCY="${FULLSEND_CONCURRENCY:-4}"
exec fullsend listen fullsend:to_orchestrator --group orchestrator \
  --exec "${FULLSEND_PIPELINE:-fullsend think | fullsend dispatch}" "$@"
