#!/usr/bin/env bash
# `make smoke`: one V2 request to the InferenceService through Kourier, Knative's ingress,
# over a port-forward; the answer is printed. Kourier routes by Host header: the
# predictor's own host name from the InferenceService's status.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NAMESPACE:?}" "${ISVC_NAME:?}" "${MODEL_NAME:?}" "${KUBE_CONTEXT:?}"
KUBECTL="${KUBECTL:-kubectl}"
PYTHON="${PYTHON:-python3}"
PORT="${INGRESS_PORT:-8088}"
K=("$KUBECTL" --context "$KUBE_CONTEXT")

url="$("${K[@]}" -n "$NAMESPACE" get inferenceservice "$ISVC_NAME" \
  -o jsonpath='{.status.components.predictor.url}')"
[ -n "$url" ] || url="$("${K[@]}" -n "$NAMESPACE" get inferenceservice "$ISVC_NAME" -o jsonpath='{.status.url}')"
[ -n "$url" ] || { echo "inferenceservice/$ISVC_NAME has no URL yet: is it Ready?" >&2; exit 1; }
host="${url#*://}"

"${K[@]}" -n kourier-system port-forward svc/kourier "$PORT:80" >/dev/null &
forward=$!
trap 'kill "$forward" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.2
done

echo "POST http://$host/v2/models/$MODEL_NAME/infer (through 127.0.0.1:$PORT)"
"$PYTHON" scripts/v2_request.py --url "http://127.0.0.1:$PORT" --host-header "$host" --model "$MODEL_NAME"
