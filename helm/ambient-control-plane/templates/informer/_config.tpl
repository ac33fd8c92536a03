{{/* acp.config.informer is the informer's environment (ConfigMap data). */}}
{{- define "acp.config.informer" -}}
{{- include "acp.checkMinDuration" (dict "key" "informer.leaseTTL" "value" .Values.informer.leaseTTL "min" "1s") -}}
{{- /* NATS refuses a stream max age below 100ms. */ -}}
{{- include "acp.checkMinDuration" (dict "key" "informer.streamMaxAge" "value" .Values.informer.streamMaxAge "min" "100ms") -}}
{{- /* The informer takes 0 (no periodic resync) or at least 100ms. */ -}}
{{- include "acp.checkMinDuration" (dict "key" "informer.resyncPeriod" "value" .Values.informer.resyncPeriod "min" "100ms" "orZero" true) -}}
{{- /*
The informer takes 0 (off) or at least WATCH_BACKOFF_MAX (30s; the chart
does not set it): shorter, every reconnect at the backoff's cap would be a
step-down.
*/ -}}
{{- include "acp.checkMinDuration" (dict "key" "informer.leaderUnsyncedTimeout" "value" .Values.informer.leaderUnsyncedTimeout "min" "30s" "orZero" true) -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.apiConfig" . }}
LEASE_TTL: {{ .Values.informer.leaseTTL | quote }}
RESYNC_PERIOD: {{ .Values.informer.resyncPeriod | quote }}
STREAM_REPLICAS: {{ .Values.informer.streamReplicas | quote }}
STREAM_MAX_AGE: {{ .Values.informer.streamMaxAge | quote }}
LEADER_UNSYNCED_TIMEOUT: {{ .Values.informer.leaderUnsyncedTimeout | quote }}
{{- end -}}
