{{/*
Name of the rollout controller's Deployment, ServiceAccount, Role, RoleBinding, PodMonitor.
*/}}
{{- define "mlops.rollout.controller.fullname" -}}
{{- printf "%s-rollout-controller" (include "mlops.fullname" .) }}
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
