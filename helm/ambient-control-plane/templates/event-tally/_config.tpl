{{/* acp.config.event-tally is event-tally's environment (ConfigMap data). */}}
{{- define "acp.config.event-tally" -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.groupConfig" . }}
{{- end -}}
