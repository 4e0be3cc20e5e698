#!/bin/sh
# ferry-relay alert command: one mail per alert through the local sendmail.
#   [alerts] command = "/usr/lib/ferry/alert-mail.sh admin@example.com"
# What the alert is about arrives only in the environment (FERRY_CLIENT,
# FERRY_SET, FERRY_LAST_SUCCESS, FERRY_REASON, FERRY_MESSAGE), never in the
# command line, and is only ever expanded inside double quotes here.
# SENDMAIL names another sendmail-compatible program.
set -eu
to=${1:?usage: alert-mail.sh ADDRESS}
{
  printf 'To: %s\n' "$to"
  printf 'Subject: ferry: %s %s%s\n' "$FERRY_REASON" "$FERRY_CLIENT" "${FERRY_SET:+/$FERRY_SET}"
  printf 'Content-Type: text/plain; charset=utf-8\n\n'
  printf '%s\n\n' "$FERRY_MESSAGE"
  printf 'client:       %s\n' "$FERRY_CLIENT"
  printf 'set:          %s\n' "${FERRY_SET:-(all)}"
  printf 'last success: %s\n' "$FERRY_LAST_SUCCESS"
  printf 'reason:       %s\n' "$FERRY_REASON"
} | "${SENDMAIL:-/usr/sbin/sendmail}" -t
