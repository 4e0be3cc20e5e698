#!/bin/sh
# ferry-relay alert command: POSTs each alert as JSON to a webhook (Slack,
# Mattermost, ntfy, a chat bridge...).
#   [alerts] command = ["/usr/lib/ferry/alert-webhook.sh", "https://hooks.example.com/ferry"]
# The JSON is built by python3's json module from the environment, so no
# name a client chose can break out of its string.
set -eu
url=${1:?usage: alert-webhook.sh URL}
python3 -c 'import json, os
keys = ("FERRY_CLIENT", "FERRY_SET", "FERRY_LAST_SUCCESS", "FERRY_REASON", "FERRY_MESSAGE")
body = {k.lower().removeprefix("ferry_"): os.environ.get(k, "") for k in keys}
body["text"] = "ferry: " + body["message"]
print(json.dumps(body))' |
  curl --silent --show-error --fail --max-time 20 \
    -H 'Content-Type: application/json' --data-binary @- "$url"
