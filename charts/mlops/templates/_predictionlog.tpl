{{/*
Name of the prediction log's objects (Deployment, Service, PodMonitor, NetworkPolicy).
*/}}
{{- define "mlops.predictionLog.fullname" -}}
{{- include "mlops.fullname" . }}-predictionlog
{{- end }}

{{/*
The URL KServe's logger posts to: `predictor.logger.url`, else the chart's sink by its
cluster DNS name (the agent runs in the predictor pods, in the release's namespace).
*/}}
{{- define "mlops.predictionLog.url" -}}
{{- if .Values.predictor.logger.url }}
{{- .Values.predictor.logger.url }}
{{- else if .Values.predictionLog.enabled }}
{{- printf "http://%s.%s.svc.cluster.local:%v/" (include "mlops.predictionLog.fullname" .) .Release.Namespace .Values.predictionLog.port }}
{{- else }}
{{- fail "predictor.logger.enabled needs somewhere to send the events: set predictionLog.enabled=true (the chart's prediction log) or predictor.logger.url" }}
{{- end }}
{{- end }}

{{/*
The Secret and key holding the sink's database URL: its own, else MLflow's PostgreSQL.
Renders `{"name": ..., "key": ...}` as JSON.
*/}}
{{- define "mlops.predictionLog.databaseSecret" -}}
{{- $db := .Values.predictionLog.database }}
{{- if $db.existingSecret }}
{{- dict "name" $db.existingSecret "key" (default "uri" $db.existingSecretKey) | toJson }}
{{- else if and (eq .Values.mlflow.backend.type "postgresql") .Values.mlflow.backend.existingSecret }}
{{- dict "name" .Values.mlflow.backend.existingSecret "key" (default .Values.mlflow.backend.existingSecretKey $db.existingSecretKey) | toJson }}
{{- else }}
{{- fail "predictionLog.enabled needs a PostgreSQL database: set predictionLog.database.existingSecret (a Secret with its URL), or use MLflow's (mlflow.backend.type=postgresql with mlflow.backend.existingSecret)" }}
{{- end }}
{{- end }}
