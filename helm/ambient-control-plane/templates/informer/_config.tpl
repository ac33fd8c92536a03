{{/* acp.config.informer is the informer's environment (ConfigMap data). */}}
{{- define "acp.config.informer" -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.apiConfig" . }}
LEASE_TTL: {{ .Values.informer.leaseTTL | quote }}
RESYNC_PERIOD: {{ .Values.informer.resyncPeriod | quote }}
STREAM_REPLICAS: {{ .Values.informer.streamReplicas | quote }}
STREAM_MAX_AGE: {{ .Values.informer.streamMaxAge | quote }}
{{- end -}}
