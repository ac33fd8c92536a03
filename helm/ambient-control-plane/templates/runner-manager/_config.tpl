{{/* acp.config.runner-manager is the runner-manager's environment (ConfigMap data). */}}
{{- define "acp.config.runner-manager" -}}
{{- $r := .Values.runnerManager -}}
{{- $k := .Values.kubeReconciler -}}
{{- if and .Values.runnerManager.enabled $k.enabled (eq $k.sessionSelector "all") (has "*" $r.projects) (not $r.sessionLabel) -}}
{{- fail "kubeReconciler.sessionSelector=all and runnerManager.projects=[\"*\"] would run every session twice (as an AgenticSession and as a local runner): narrow one of them or disable the runner-manager (README: Where sessions run)" -}}
{{- end -}}
{{- include "acp.checkPortRange" . -}}
{{- /*
A released port waits portReuseDelay before another runner gets it because
an agui-proxy cut off from NATS keeps routing by its last table for up to
routesStaleAfter plus its heartbeat (2 s): with a shorter wait that proxy
sends a released session's clients to the runner of another session, maybe
another tenant's, that took the port. "0" turns the wait off, which the
operator chose knowing that: not checked. The proxy of another release is
out of sight here (values.yaml says so).
*/ -}}
{{- $reuse := include "acp.durationMillis" (dict "key" "runnerManager.portReuseDelay" "value" $r.portReuseDelay) | int64 -}}
{{- if and .Values.aguiProxy.enabled (gt $reuse 0) -}}
{{- $bound := include "acp.durationMillis" (dict "key" "aguiProxy.routesStaleAfter" "value" .Values.aguiProxy.routesStaleAfter) | int64 | add 2000 -}}
{{- if le $reuse $bound -}}
{{- $boundText := ternary (printf "%ds" (div $bound 1000)) (printf "%dms" $bound) (eq (mod $bound 1000) 0) -}}
{{- fail (printf "runnerManager.portReuseDelay (%s) must be greater than aguiProxy.routesStaleAfter (%s) plus 2s, the proxy's heartbeat (%s in all): an agui-proxy cut off from NATS keeps routing by its last table that long, and would send a released session's clients to the runner of another session that took its port. Raise runnerManager.portReuseDelay above %s or lower aguiProxy.routesStaleAfter; \"0\" turns the delay off, and this check with it (services/runner-manager/README.md, Runner ports)" (toString $r.portReuseDelay) (toString .Values.aguiProxy.routesStaleAfter) $boundText $boundText) -}}
{{- end -}}
{{- end -}}
{{ include "acp.commonConfig" . }}
{{ include "acp.apiConfig" . }}
{{ include "acp.groupConfig" . }}
{{- /* The runner buckets live next to the events stream: same replication. */}}
BUCKET_REPLICAS: {{ .Values.informer.streamReplicas | quote }}
RUNNER_PROJECTS: {{ join "," $r.projects | quote }}
{{- with $r.sessionLabel }}
RUNNER_SESSION_LABEL: {{ . | quote }}
{{- end }}
LOCAL_RUNNER_COMMAND: {{ $r.runnerCommand | quote }}
LOCAL_PORT_RANGE: {{ $r.portRange | quote }}
PORT_REUSE_DELAY: {{ $r.portReuseDelay | quote }}
LOCAL_MAX_SESSIONS: {{ $r.maxSessions | quote }}
LOCAL_MAX_SESSIONS_PER_PROJECT: {{ $r.maxSessionsPerProject | quote }}
LOCAL_WORKSPACE_ROOT: {{ $r.workspaceRoot | quote }}
{{- with $r.bossURL }}
BOSS_URL: {{ . | quote }}
{{- end }}
BOSS_SPACE: {{ $r.bossSpace | quote }}
{{- with include "acp.runnerManager.backendURL" . }}
RUNNER_BACKEND_API_URL: {{ . | quote }}
{{- end }}
{{- with $r.runnerEnv }}
RUNNER_ENV_ALLOW: {{ keys . | sortAlpha | join "," | quote }}
{{- range $k, $v := . }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
acp.runnerManager.env: the host agui-proxy dials to reach this pod's runners
(registered in KV ambient-runners) is the pod IP.
*/}}
{{- define "acp.runnerManager.env" -}}
- name: RUNNER_ADVERTISE_HOST
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- with .Values.runnerManager.botTokenSecret.name }}
{{- /* A variable, never a file: runners run as the pod's user (acp.secretsInEnv). */}}
- name: RUNNER_BOT_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.runnerManager.botTokenSecret.key | quote }}}
{{- end }}
{{- end -}}

{{/*
acp.runnerManager.backendURL is RUNNER_BACKEND_API_URL, where runners send
their first prompt (the platform's runner POSTs INITIAL_PROMPT to
<url>/projects/<project>/agentic-sessions/<id>/agui/run, which agui-proxy
hands to the runner's own POST /): runnerManager.backendApiUrl, else this
release's agui-proxy Service when it is deployed, else "" (unset).
*/}}
{{- define "acp.runnerManager.backendURL" -}}
{{- if .Values.runnerManager.backendApiUrl -}}
{{- .Values.runnerManager.backendApiUrl -}}
{{- else if .Values.aguiProxy.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "acp.componentName" (dict "context" . "component" "agui-proxy")) .Release.Namespace (int .Values.aguiProxy.service.port) -}}
{{- end -}}
{{- end -}}
