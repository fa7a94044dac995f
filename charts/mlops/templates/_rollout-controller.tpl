{{/*
Name of the rollout controller's Deployment, ServiceAccount, Role, RoleBinding, PodMonitor.
*/}}
{{- define "mlops.rollout.controller.fullname" -}}
{{- printf "%s-rollout-controller" (include "mlops.fullname" .) }}
{{- end }}

{{/*
True (non-empty) when the controller takes MLflow's webhook: the controller is on and
`rollout.controller.webhook.enabled`. Fails without the Secret it needs.
*/}}
{{- define "mlops.rollout.webhook.enabled" -}}
{{- $w := .Values.rollout.controller.webhook }}
{{- if and .Values.rollout.controller.enabled $w.enabled }}
{{- if not $w.existingSecret }}
{{- fail "rollout.controller.webhook.enabled needs rollout.controller.webhook.existingSecret: a Secret with the webhook's signing secret and MLflow's encryption key (docs/rollouts.md, \"Webhooks\")" }}
{{- end }}
{{- "true" }}
{{- end }}
{{- end }}

{{/*
The URL MLflow delivers to: the controller's Service, by its cluster DNS name.
*/}}
{{- define "mlops.rollout.webhook.url" -}}
{{- printf "http://%s.%s.svc:9090/webhook" (include "mlops.rollout.controller.fullname" .) .Release.Namespace }}
{{- end }}

{{/*
The predictor fields the rollout controller owns, as the live InferenceService has them:
a dict with `modelUri` (absent when there is no live object) and `canaryTrafficPercent`
(absent when the field is not set). With the controller on, the chart renders these from
the live object on every upgrade, so a `helm upgrade` neither resets a promoted
`MODEL_URI` nor drops a running canary's share (docs/rollouts.md, "One owner").
`lookup` finds nothing in `helm template` and client-side dry runs: those render as an
install.
*/}}
{{- define "mlops.predictor.live" -}}
{{- $found := dict }}
{{- if .Values.rollout.controller.enabled }}
{{- $found = lookup "serving.kserve.io/v1beta1" "InferenceService" .Release.Namespace .Values.modelName }}
{{- end }}
{{- include "mlops.predictor.ownedFields" $found }}
{{- end }}

{{/*
The controller's two fields of an InferenceService object (a dict; empty: none), as
JSON: `modelUri` from the first container's MODEL_URI, `canaryTrafficPercent` when set.
*/}}
{{- define "mlops.predictor.ownedFields" -}}
{{- $owned := dict }}
{{- $predictor := dig "spec" "predictor" (dict) . }}
{{- range (first (concat (get $predictor "containers" | default list) (list (dict))) | dig "env" list) }}
{{- if and (eq (get . "name") "MODEL_URI") (hasKey . "value") }}
{{- $_ := set $owned "modelUri" (get . "value") }}
{{- end }}
{{- end }}
{{- if hasKey $predictor "canaryTrafficPercent" }}
{{- $_ := set $owned "canaryTrafficPercent" (get $predictor "canaryTrafficPercent") }}
{{- end }}
{{- toJson $owned }}
{{- end }}
