#!/usr/bin/env bash
# A staging Orchestrator: the real decider, but a jq stage drops every Discord
# reply, so nothing reaches people while you watch what it would do. A dropped
# message is acknowledged with a warning; everything else is dispatched.
set -eu -o pipefail
exec fullsend listen fullsend:to_orchestrator --group orchestrator "$@" \
  --exec "fullsend think | jq -c 'select(.action != \"respond_to_discord\")' | fullsend dispatch"
