#!/usr/bin/env bash
# Lists the decisions the approval gate holds, or approves one.
#
#   commands/examples/approve.sh            # one line per held decision: msg_id, action, preview
#   commands/examples/approve.sh MSG_ID     # dispatch that held decision now
#
# Approving is `fullsend dispatch` of the held decision. Its seen marker is the
# original message's id, so approving twice dispatches once.
set -eu -o pipefail
stream='fullsend:{approvals}:stream'
held() {
  redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" --raw XRANGE "$stream" - + \
    | grep '^{' | jq -c 'select(.type == "approval_needed")'
}
if [ $# -eq 0 ]; then
  held | jq -r '[.msg_id, .decision.action, (.decision.reasoning // "" | .[0:80])] | @tsv'
  exit 0
fi
decision=$(held | jq -c --arg id "$1" 'select(.msg_id == $id) | .decision')
if [ -z "$decision" ]; then
  echo "approve.sh: no held decision $1" >&2
  exit 2
fi
printf '%s\n' "$decision" | fullsend dispatch
