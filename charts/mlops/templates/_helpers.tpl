{{/*
The chart name, or nameOverride; used in the `app.kubernetes.io/name` label.
*/}}
{{- define "mlops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: `<release>-<chart>`, or the release name alone when it
already contains the chart name, or fullnameOverride. Cut to leave room for suffixes.
*/}}
{{- define "mlops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
`<chart>-<version>` for the helm.sh/chart label.
*/}}
{{- define "mlops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Call with (dict "ctx" $ "component" "mlflow").
*/}}
{{- define "mlops.labels" -}}
helm.sh/chart: {{ include "mlops.chart" .ctx }}
{{ include "mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: mlops
{{- end }}

{{/*
The stable subset used in selectors: name, instance and component only.
*/}}
{{- define "mlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The image reference. Refuses `latest`: a mutable tag defeats `kind load` and rollbacks.
*/}}
{{- define "mlops.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag must not be 'latest': pin a version (the chart's appVersion when empty)" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
The ServiceAccount every pod runs as.
*/}}
{{- define "mlops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount (and Role, RoleBinding) of `python -m rollout` in a pod.
*/}}
{{- define "mlops.rollout.serviceAccountName" -}}
{{- default (printf "%s-rollout" (include "mlops.fullname" .)) .Values.rollout.serviceAccountName }}
{{- end }}

{{/*
Name of the MLflow Deployment, Service and volume claim.
*/}}
{{- define "mlops.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "mlops.fullname" .) }}
{{- end }}

{{/*
The tracking URI the training Job and the predictor use: the chart's own server through its
Service (a name MLflow's allowed-hosts list accepts), or an external one.
*/}}
{{- define "mlops.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s:%v" (include "mlops.mlflow.fullname" .) .Values.mlflow.port }}
{{- else if .Values.mlflow.externalTrackingUri }}
{{- .Values.mlflow.externalTrackingUri }}
{{- else }}
{{- fail "mlflow.externalTrackingUri is required when mlflow.enabled is false" }}
{{- end }}
{{- end }}

{{/*
Host headers MLflow accepts: its Service names (any port, any cluster domain), localhost for
port-forwards, private IPs for probes and Prometheus, the Ingress's hosts, and the user's
extras.
*/}}
{{- define "mlops.mlflow.allowedHosts" -}}
{{- $svc := include "mlops.mlflow.fullname" . }}
{{- $hosts := list $svc (printf "%s:*" $svc) (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s:*" $svc .Release.Namespace) (printf "%s.%s.svc*" $svc .Release.Namespace) }}
{{- $hosts = concat $hosts (list "localhost" "localhost:*" "127.0.0.1" "127.0.0.1:*" "10.*" "192.168.*") }}
{{- range $i := until 16 }}
{{- $hosts = append $hosts (printf "172.%d.*" (add 16 $i)) }}
{{- end }}
{{- if .Values.mlflow.ingress.enabled }}
{{- $hosts = concat $hosts .Values.mlflow.ingress.hosts }}
{{- end }}
{{- concat $hosts .Values.mlflow.extraAllowedHosts | join "," }}
{{- end }}

{{/*
The registry URI the predictor loads: a pinned version wins over an explicit URI, which wins
over the `@champion` alias.
*/}}
{{- define "mlops.predictor.modelUri" -}}
{{- if .Values.predictor.modelVersion }}
{{- printf "models:/%s/%v" .Values.modelName .Values.predictor.modelVersion }}
{{- else if .Values.predictor.modelUri }}
{{- .Values.predictor.modelUri }}
{{- else }}
{{- printf "models:/%s@champion" .Values.modelName }}
{{- end }}
{{- end }}

{{/*
Name of the PodMonitor that scrapes the predictor; Prometheus labels its targets with the
job `<namespace>/<this name>`, which the alert rules select on.
*/}}
{{- define "mlops.predictor.podMonitorName" -}}
{{- printf "%s-predictor" (include "mlops.fullname" .) }}
{{- end }}

{{/*
The `/tmp` volume every pod mounts over its read-only root file system.
*/}}
{{- define "mlops.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/*
A value as an environment variable's string. Helm reads YAML numbers as floats, which print
as `1.048576e+06`; whole numbers are printed as integers instead.
*/}}
{{- define "mlops.envValue" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Name of the InferenceService (its Knative Service is `<name>-predictor`). `predictor.name`
wins; `predictor.nameFromRelease` gives `<release>-<modelName>` (the release alone when it
already holds the model's name), so two releases in one namespace never collide; otherwise
the model's name, as in every earlier chart version.
*/}}
{{- define "mlops.isvcName" -}}
{{- if .Values.predictor.name }}
{{- .Values.predictor.name }}
{{- else if .Values.predictor.nameFromRelease }}
{{- if contains .Values.modelName .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Values.modelName | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- else }}
{{- .Values.modelName }}
{{- end }}
{{- end }}

{{/*
A pod's labels: the chart's (which selectors and the NetworkPolicy rely on, so they win)
plus the workload's `podLabels`. Call with (dict "ctx" $ "component" "mlflow" "extra" .podLabels).
*/}}
{{- define "mlops.podLabels" -}}
{{- $labels := include "mlops.labels" (dict "ctx" .ctx "component" .component) | fromYaml }}
{{- toYaml (merge $labels (deepCopy (.extra | default dict))) }}
{{- end }}

{{/*
Where a workload's pods may run: its `nodeSelector`, `affinity` and `tolerations`, each
only when set. Call with the workload's values (.Values.mlflow, .Values.training, ...).
*/}}
{{- define "mlops.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The training package's settings as environment variables: a camelCase key of
`training.settings` becomes its UPPER_SNAKE name (`maxRegression` -> MAX_REGRESSION). An
UPPER_SNAKE key is the form of earlier chart versions, read for one more version: it wins
over its camelCase twin, since only a user sets it (the defaults are camelCase).
*/}}
{{- define "mlops.training.settingsEnv" -}}
{{- $env := dict }}
{{- range $key, $value := .Values.training.settings }}
{{- if not (regexMatch "^[A-Z][A-Z0-9_]*$" $key) }}
{{- $_ := set $env (snakecase $key | upper) $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .Values.training.settings }}
{{- if regexMatch "^[A-Z][A-Z0-9_]*$" $key }}
{{- $_ := set $env $key $value }}
{{- end }}
{{- end }}
{{- range $name, $value := $env }}
- name: {{ $name }}
  value: {{ include "mlops.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/*
The UPPER_SNAKE keys of `training.settings` a user still sets (deprecated), comma-separated
as `OLD -> newKey`, for NOTES.txt.
*/}}
{{- define "mlops.training.legacySettings" -}}
{{- $found := list }}
{{- range $key, $_ := .Values.training.settings }}
{{- if regexMatch "^[A-Z][A-Z0-9_]*$" $key }}
{{- $found = append $found (printf "%s -> %s" $key (lower $key | camelcase | untitle)) }}
{{- end }}
{{- end }}
{{- join ", " $found }}
{{- end }}

{{/*
`<prefix>_USERNAME` and `<prefix>_PASSWORD` from a Secret of MLflow's basic-auth users.
Call with (dict "prefix" "MLFLOW_TRACKING" "secret" NAME "auth" .Values.mlflow.auth).
*/}}
{{- define "mlops.mlflow.credentialsEnv" -}}
{{- if not .secret }}
{{- fail "mlflow.auth.existingSecret is required with mlflow.auth.enabled: credentials are read from a Secret, never from values" }}
{{- end }}
- name: {{ .prefix }}_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .auth.usernameKey }}
- name: {{ .prefix }}_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .auth.passwordKey }}
{{- end }}

{{/*
MLflow's usage telemetry off (`mlflow.telemetry: false`, the default), for every container
that runs MLflow code. An env list item, or nothing.
*/}}
{{- define "mlops.mlflow.telemetryEnv" -}}
{{- if not .Values.mlflow.telemetry }}
- name: MLFLOW_DISABLE_TELEMETRY
  value: "true"
{{- end }}
{{- end }}
