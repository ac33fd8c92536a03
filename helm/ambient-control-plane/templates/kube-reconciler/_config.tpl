{{/*
acp.instance names this release on the objects kube-reconciler writes
(label ambient-code.io/instance): "<namespace>-<release>", or, past a label
value's 63 characters, its first 54 and 8 hex digits of its hash, so that two
long names that share their first 63 characters stay apart.
*/}}
{{- define "acp.instance" -}}
{{- $name := printf "%s-%s" .Release.Namespace .Release.Name -}}
{{- if le (len $name) 63 -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%s" ($name | trunc 54 | trimSuffix "-") ($name | sha256sum | trunc 8) -}}
{{- end -}}
{{- end -}}

{{/* acp.config.kube-reconciler is the kube-reconciler's environment (ConfigMap data). */}}
{{- define "acp.config.kube-reconciler" -}}
{{- include "acp.checkMinDuration" (dict "key" "kubeReconciler.resyncInterval" "value" .Values.kubeReconciler.resyncInterval "min" "1s") -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.apiConfig" . }}
{{ include "acp.groupConfig" . }}
KUBE_SESSION_SELECTOR: {{ .Values.kubeReconciler.sessionSelector | quote }}
NAMESPACE: {{ .Values.kubeReconciler.defaultNamespace | quote }}
ROLE_ALLOW_LIST: {{ join "," .Values.kubeReconciler.roleAllowList | quote }}
CONTROL_PLANE_INSTANCE: {{ include "acp.instance" . | quote }}
RESYNC_INTERVAL: {{ .Values.kubeReconciler.resyncInterval | quote }}
ADOPT_UNLABELED_OBJECTS: {{ .Values.kubeReconciler.adoptUnlabeledObjects | quote }}
NAMESPACE_DENY_LIST: {{ append .Values.kubeReconciler.namespaceDenyList .Release.Namespace | uniq | join "," | quote }}
{{- end -}}
