#!/usr/bin/env bash
# A pipeline stage that holds Builder dispatches until a person approves them.
# Every other decision is dispatched at once.
#
#   fullsend listen fullsend:to_orchestrator --group orchestrator \
#     --exec 'fullsend think | commands/examples/approval-gate.sh'
#
# A held decision becomes the message's one effect: an `approval_needed` message on
# fullsend:approvals, published and acknowledged in one fenced commit (`fullsend
# publish` under the delivery), so a redelivery holds nothing twice.
# `commands/examples/approve.sh` lists what is held and approves it.
set -eu -o pipefail
decision=$(cat)
# The decider failed and printed nothing: its exit code decides what happens next.
[ -n "$decision" ] || exit 0
if [ "$(printf '%s' "$decision" | jq -r '.action')" = dispatch_to_builder ]; then
  # The message's identity goes with it, so approving it twice dispatches it once.
  identity=$(printf '%s' "${FULLSEND_DELIVERY:-null}" | jq -r '.identity // empty')
  printf '%s' "$decision" \
    | jq -c --arg id "$identity" '.message.msg_id //= (if $id == "" then null else $id end)
        | {type: "approval_needed", source: "approval_gate", decision: .}' \
    | fullsend publish fullsend:approvals
else
  printf '%s' "$decision" | fullsend dispatch
fi
