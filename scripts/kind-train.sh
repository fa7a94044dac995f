#!/usr/bin/env bash
# `make train`: one more training run on the cluster, as a Job of its own. The chart's Job
# template is rendered with the release's own values and a unique `training.runSuffix`
# (the chart runs training only on install; `helm upgrade` never retrains).
# TRAIN_HELM_ARGS adds flags to that render, e.g. `-f my-values.yaml` for another dataset
# mounted from a ConfigMap (tests/e2e/flipped-values.yaml); split on spaces.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RELEASE:?}" "${NAMESPACE:?}" "${KUBE_CONTEXT:?}"
KUBECTL="${KUBECTL:-kubectl}"
HELM="${HELM:-helm}"
TIMEOUT_SECONDS="${TRAIN_TIMEOUT_SECONDS:-1800}"
K=("$KUBECTL" --context "$KUBE_CONTEXT" -n "$NAMESPACE")
read -r -a extra <<<"${TRAIN_HELM_ARGS:-}"  # (the expansion below is safe for an empty list on bash 3.2)

values="$(mktemp)"
trap 'rm -f "$values"' EXIT
"$HELM" --kube-context "$KUBE_CONTEXT" get values "$RELEASE" -n "$NAMESPACE" -o yaml >"$values"
suffix="$(date -u +%Y%m%d%H%M%S)"
# Client-only `helm template` checks the chart's `kubeVersion` against Helm's built-in
# default (the Kubernetes its client library was built for), not the cluster's: pass the
# cluster's own version so any Helm the docs allow renders what `helm install` would.
kube_version="$("${K[@]}" get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
if [ -z "$kube_version" ]; then
  echo "cannot read the cluster's Kubernetes version (kubectl get --raw /version)" >&2
  exit 1
fi
job="$("$HELM" template "$RELEASE" charts/mlops -n "$NAMESPACE" -f "$values" \
  --kube-version "$kube_version" \
  ${extra[@]+"${extra[@]}"} --set training.enabled=true --set-string training.runSuffix="$suffix" \
  --show-only templates/training-job.yaml | "${K[@]}" create -f - -o name)"
echo "started $job"

# Wait for either end: `kubectl wait` can watch only one condition.
deadline=$((SECONDS + TIMEOUT_SECONDS))
while ((SECONDS < deadline)); do
  state="$("${K[@]}" get "$job" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}')"
  case " $state " in
    *" Complete "*) result=0; break ;;
    *" Failed "*) result=1; break ;;
  esac
  sleep 5
done
"${K[@]}" logs "$job" --tail=1 || true
if [ -z "${result:-}" ]; then
  echo "$job did not finish within ${TIMEOUT_SECONDS}s" >&2
  exit 1
fi
if [ "$result" -ne 0 ]; then
  echo "$job failed (exit 3: the gates refused the model; see the JSON line above)" >&2
  exit 1
fi
cat <<NEXT
$job registered a new version (the JSON line above). Next:
  make canary          # roll it out behind a canary (python -m rollout), or
  helm upgrade $RELEASE charts/mlops -n $NAMESPACE --reset-then-reuse-values \\
    --set predictor.modelVersion=<version> --set predictor.canaryTrafficPercent=10
NEXT
