{{/*
The spec of a training Job: the post-install Job (training-job.yaml) and every run of the
schedule (training-cronjob.yaml) share it, so a scheduled run trains exactly as the first.
Call with the root context.
*/}}
{{- define "mlops.training.jobSpec" -}}
backoffLimit: {{ .Values.training.backoffLimit }}
activeDeadlineSeconds: {{ .Values.training.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ .Values.training.ttlSecondsAfterFinished }}
# Exit 2 (bad configuration) and 3 (gates failed) are verdicts, not accidents: no retry.
podFailurePolicy:
  rules:
    - action: FailJob
      onExitCodes:
        containerName: training
        operator: In
        values: [2, 3]
template:
  metadata:
    labels:
      {{- include "mlops.podLabels" (dict "ctx" $ "component" "training" "extra" .Values.training.podLabels) | nindent 6 }}
    {{- with .Values.training.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "mlops.serviceAccountName" . }}
    automountServiceAccountToken: false
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    {{- with include "mlops.scheduling" .Values.training }}
    {{- . | nindent 4 }}
    {{- end }}
    containers:
      - name: training
        image: {{ include "mlops.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: ["python", "-m", "training"]
        env:
          - name: MLFLOW_TRACKING_URI
            value: {{ include "mlops.mlflow.trackingUri" . | quote }}
          {{- include "mlops.mlflow.telemetryEnv" . | nindent 10 }}
          {{- if .Values.mlflow.auth.enabled }}
          # Training registers versions and moves aliases: it logs in as the admin.
          {{- include "mlops.mlflow.credentialsEnv" (dict "prefix" "MLFLOW_TRACKING" "secret" .Values.mlflow.auth.existingSecret "auth" .Values.mlflow.auth) | nindent 10 }}
          {{- end }}
          - name: MODEL_NAME
            value: {{ .Values.modelName | quote }}
          # Shared by every retry of this Job (backoffLimit), and by no other Job: a
          # retry finishes its earlier attempt's version instead of registering another.
          - name: TRAINING_JOB_UID
            valueFrom:
              fieldRef:
                fieldPath: metadata.labels['batch.kubernetes.io/controller-uid']
          {{- include "mlops.training.settingsEnv" . | nindent 10 }}
          - name: HOME
            value: /tmp
          # matplotlib writes its font cache here; the root file system is read-only.
          - name: MPLCONFIGDIR
            value: /tmp/matplotlib
          {{- with .Values.training.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        resources:
          {{- toYaml .Values.training.resources | nindent 10 }}
        securityContext:
          {{- toYaml .Values.containerSecurityContext | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- with .Values.training.extraVolumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      {{- include "mlops.tmpVolume" . | nindent 6 }}
      {{- with .Values.training.extraVolumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}
