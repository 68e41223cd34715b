#!/usr/bin/env bash
# The FULLSEND daemon, as the pipeline it is: each message of fullsend:to_fullsend
# (and what the Executor and the Builder report) goes, on stdin, to
#   fullsend design   (experiment_request → Claude Code → validated spec → saved
#                      and announced; tool_built and reports acted on), committed
#                      fenced: acknowledges the entry
# with durable delivery (Redis stream + consumer group "fullsend"). Change the
# pipeline with FULLSEND_PIPELINE. Exit codes of a stage: 0 done, 2 bad input
# (dead-lettered), 3 transient (retried), 4 a limit (waits). The in-process form
# of the same stage is `fullsend listen fullsend`.
set -eu -o pipefail
# Defaults through the environment, so flags given to this script still win.
export FULLSEND_CONCURRENCY="${FULLSEND_CONCURRENCY:-1}"
export FULLSEND_EXEC_TIMEOUT="${FULLSEND_EXEC_TIMEOUT:-3600}"
exec fullsend listen fullsend:to_fullsend --group fullsend \
  --exec "${FULLSEND_PIPELINE:-fullsend design}" "$@"
