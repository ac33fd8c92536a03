{{/* acp.config.kube-reconciler is the kube-reconciler's environment (ConfigMap data). */}}
{{- define "acp.config.kube-reconciler" -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.apiConfig" . }}
{{ include "acp.groupConfig" . }}
KUBE_SESSION_SELECTOR: {{ .Values.kubeReconciler.sessionSelector | quote }}
NAMESPACE: {{ .Values.kubeReconciler.defaultNamespace | quote }}
ROLE_ALLOW_LIST: {{ join "," .Values.kubeReconciler.roleAllowList | quote }}
CONTROL_PLANE_INSTANCE: {{ printf "%s-%s" .Release.Namespace .Release.Name | trunc 63 | trimSuffix "-" | quote }}
RESYNC_INTERVAL: {{ .Values.kubeReconciler.resyncInterval | quote }}
ADOPT_UNLABELED_OBJECTS: {{ .Values.kubeReconciler.adoptUnlabeledObjects | quote }}
NAMESPACE_DENY_LIST: {{ append .Values.kubeReconciler.namespaceDenyList .Release.Namespace | uniq | join "," | quote }}
{{- end -}}
