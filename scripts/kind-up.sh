#!/usr/bin/env bash
# `make kind-up`: a kind cluster with everything the chart needs, at pinned versions:
# cert-manager, Knative Serving with Kourier, KServe (Knative mode), kube-prometheus-stack.
# Every step checks or waits for readiness and is safe to re-run; the Makefile passes
# the versions (docs/kubernetes.md).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CLUSTER_NAME:?}" "${KIND_NODE_IMAGE:?}" "${CERT_MANAGER_VERSION:?}" "${KNATIVE_VERSION:?}"
: "${KOURIER_VERSION:?}" "${KSERVE_VERSION:?}" "${KUBE_PROMETHEUS_STACK_VERSION:?}"
KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
HELM="${HELM:-helm}"
WAIT="${WAIT_TIMEOUT:-600s}"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
# A webhook that has just turned Available may still refuse a call for a few seconds.
retry() {
  local attempt
  for attempt in 1 2 3; do
    "$@" && return 0
    echo "attempt $attempt failed; retrying in 15s" >&2
    sleep 15
  done
  return 1
}
need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]} (docs/kubernetes.md lists the versions)" >&2
    exit 1
  fi
}
need "$KIND" "$KUBECTL" "$HELM" docker

step "kind cluster '$CLUSTER_NAME' ($KIND_NODE_IMAGE)"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  echo "exists: reusing it"
else
  "$KIND" create cluster --name "$CLUSTER_NAME" --config kind-config.yaml \
    --image "$KIND_NODE_IMAGE" --wait 180s
fi
"$KUBECTL" config use-context "kind-$CLUSTER_NAME" >/dev/null
K=("$KUBECTL" --context "kind-$CLUSTER_NAME")
H=("$HELM" --kube-context "kind-$CLUSTER_NAME")

step "cert-manager $CERT_MANAGER_VERSION"
"${K[@]}" apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
"${K[@]}" -n cert-manager wait deployment --all --for=condition=Available --timeout="$WAIT"

step "Knative Serving $KNATIVE_VERSION with Kourier $KOURIER_VERSION"
"${K[@]}" apply -f "https://github.com/knative/serving/releases/download/knative-$KNATIVE_VERSION/serving-crds.yaml"
"${K[@]}" wait crd/services.serving.knative.dev --for=condition=Established --timeout="$WAIT"
"${K[@]}" apply -f "https://github.com/knative/serving/releases/download/knative-$KNATIVE_VERSION/serving-core.yaml"
"${K[@]}" apply -f "https://github.com/knative-extensions/net-kourier/releases/download/knative-$KOURIER_VERSION/kourier.yaml"
# Knative's validating webhook (failurePolicy: Fail) admits its ConfigMaps: on a first run
# its image may still be pulling, so wait for it before applying ours.
"${K[@]}" -n knative-serving wait deployment/webhook --for=condition=Available --timeout="$WAIT"
# Only the keys of manifests/cluster/ change; Knative's own keys stay as installed.
retry "${K[@]}" apply --server-side --force-conflicts --field-manager=mlops-kind-up -f manifests/cluster/
"${K[@]}" -n knative-serving wait deployment --all --for=condition=Available --timeout="$WAIT"
"${K[@]}" -n kourier-system wait deployment --all --for=condition=Available --timeout="$WAIT"

step "KServe $KSERVE_VERSION (Knative deployment mode)"
"${H[@]}" upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "$KSERVE_VERSION" --namespace kserve --create-namespace --wait --timeout "$WAIT"
# No Istio here: KServe's own VirtualService is off, Knative's Kourier routes.
retry "${H[@]}" upgrade --install kserve-resources oci://ghcr.io/kserve/charts/kserve-resources \
  --version "$KSERVE_VERSION" --namespace kserve \
  --set kserve.version="$KSERVE_VERSION" \
  --set kserve.controller.deploymentMode=Knative \
  --set kserve.controller.gateway.disableIstioVirtualHost=true \
  --wait --timeout "$WAIT"
"${K[@]}" -n kserve wait deployment/kserve-controller-manager --for=condition=Available --timeout="$WAIT"

step "kube-prometheus-stack $KUBE_PROMETHEUS_STACK_VERSION (Prometheus Operator, Prometheus, Grafana)"
"${H[@]}" upgrade --install kube-prometheus-stack \
  oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring --create-namespace \
  --values scripts/kind/kube-prometheus-stack-values.yaml --wait --timeout "$WAIT"
"${K[@]}" -n monitoring wait deployment --all --for=condition=Available --timeout="$WAIT"

cat <<NEXT

kind cluster '$CLUSTER_NAME' is ready: cert-manager $CERT_MANAGER_VERSION, Knative $KNATIVE_VERSION
+ Kourier $KOURIER_VERSION, KServe $KSERVE_VERSION (Knative mode), kube-prometheus-stack
$KUBE_PROMETHEUS_STACK_VERSION.

Next:
  make images    # build the image and kind-load it
  make deploy    # helm upgrade --install the chart (trains the first model)
  make smoke     # one V2 request through Kourier
Grafana: kubectl -n monitoring port-forward svc/kube-prometheus-stack-grafana 3000:80
         (user admin, password: kubectl -n monitoring get secret kube-prometheus-stack-grafana -o jsonpath='{.data.admin-password}' | base64 -d)
NEXT
