{{/* acp.config.agui-proxy is the agui-proxy's environment (ConfigMap data). */}}
{{- define "acp.config.agui-proxy" -}}
{{- $p := .Values.aguiProxy -}}
{{- /* LOCAL_PROXY_ADDR and METRICS_ADDR are two listeners of one process: one port cannot serve both. */ -}}
{{- if eq (int $p.port) (int .Values.global.metricsPort) -}}
{{- fail (printf "aguiProxy.port (%d) must differ from global.metricsPort: the proxy and its metrics server listen on separate ports, and the second listen would fail at start-up" (int $p.port)) -}}
{{- end -}}
{{- /*
After SIGTERM the proxy first keeps accepting new connections for
shutdownDelaySeconds (SHUTDOWN_DELAY: the pod is leaving the Service's
endpoints, and kube-proxy and load balancers still send it connections for a
moment); then open streams get the rest of the grace period less 10 s (the
stream drain of 2 s, the NATS drain and the telemetry flush follow) and end
cleanly, before the kubelet's SIGKILL.
*/ -}}
{{- $grace := int $p.terminationGracePeriodSeconds -}}
{{- $delay := int $p.shutdownDelaySeconds -}}
{{- if lt $grace (add $delay 11) -}}
{{- fail (printf "aguiProxy.terminationGracePeriodSeconds must be at least aguiProxy.shutdownDelaySeconds + 11 (%d), got %d: open streams get it less the delay and 10 s (SHUTDOWN_TIMEOUT), which the stream drain, the NATS drain and the telemetry flush need after them" (add $delay 11) $grace) -}}
{{- end -}}
{{- /* The proxy refuses less at start-up. */ -}}
{{- include "acp.checkMinDuration" (dict "key" "aguiProxy.routesStaleAfter" "value" $p.routesStaleAfter "min" "1s") -}}
{{ include "acp.commonConfig" . }}
SHUTDOWN_DELAY: {{ printf "%ds" $delay | quote }}
SHUTDOWN_TIMEOUT: {{ printf "%ds" (sub (sub $grace 10) $delay) | quote }}
LOCAL_PROXY_ADDR: {{ printf ":%d" (int $p.port) | quote }}
ROUTES_STALE_AFTER: {{ $p.routesStaleAfter | quote }}
CORS_ALLOWED_ORIGIN: {{ $p.corsAllowedOrigin | quote }}
AGUI_AUTH: {{ $p.auth.mode | quote }}
{{- if eq $p.auth.mode "token" }}
{{- $_ := required "aguiProxy.auth.tokensSecret.name is required when aguiProxy.auth.mode is token" $p.auth.tokensSecret.name }}
AGUI_TOKENS_FILE: {{ printf "%s/%s" (include "acp.aguiTokensDir" .) $p.auth.tokensSecret.key | quote }}
{{- else if eq $p.auth.mode "jwt" }}
AGUI_JWKS_URL: {{ required "aguiProxy.auth.jwt.jwksURL is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.jwksURL | quote }}
AGUI_JWT_ISSUER: {{ required "aguiProxy.auth.jwt.issuer is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.issuer | quote }}
AGUI_JWT_AUDIENCE: {{ required "aguiProxy.auth.jwt.audience is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.audience | quote }}
AGUI_JWT_USERNAME_CLAIM: {{ $p.auth.jwt.usernameClaim | quote }}
AGUI_JWT_GROUPS_CLAIM: {{ $p.auth.jwt.groupsClaim | quote }}
{{- else }}
{{- fail (printf "aguiProxy.auth.mode must be token or jwt in a cluster, got %q" $p.auth.mode) }}
{{- end }}
AGUI_AUTHZ: {{ $p.authz.mode | quote }}
{{- if eq $p.authz.mode "api" }}
AMBIENT_API_SERVER_URL: {{ required "aguiProxy.authz.apiURL is required when aguiProxy.authz.mode is api" $p.authz.apiURL | quote }}
{{- else if eq $p.authz.mode "kube" }}
{{- if ne $p.auth.mode "jwt" }}
{{- fail "aguiProxy.authz.mode kube needs aguiProxy.auth.mode jwt (a user and groups to review)" }}
{{- end }}
NAMESPACE: {{ .Values.kubeReconciler.defaultNamespace | quote }}
{{- /* kube-reconciler's value: the proxy asks only in this installation's project namespaces. */}}
CONTROL_PLANE_INSTANCE: {{ include "acp.instance" . | quote }}
{{- else }}
{{- fail (printf "aguiProxy.authz.mode must be api or kube in a cluster, got %q" $p.authz.mode) }}
{{- end }}
AGUI_AUTHZ_CACHE_TTL: {{ $p.authz.cacheTTL | quote }}
{{- include "acp.checkNetworks" (dict "key" "aguiProxy.runnerAllowedNetworks" "networks" $p.runnerAllowedNetworks) }}
RUNNER_ALLOWED_NETWORKS: {{ join "," (concat (list "127.0.0.0/8" "::1/128") $p.runnerAllowedNetworks) | quote }}
{{- end -}}

{{/* acp.aguiProxy.args are the Deployment arguments both tracks share. */}}
{{- define "acp.aguiProxy.ports" -}}
- name: http
  containerPort: {{ int .Values.aguiProxy.port }}
  protocol: TCP
{{- end -}}
{{- define "acp.aguiProxy.volumes" -}}
{{- if eq .Values.aguiProxy.auth.mode "token" -}}
- name: agui-tokens
  secret:
    secretName: {{ .Values.aguiProxy.auth.tokensSecret.name | quote }}
    defaultMode: {{ include "acp.secretFileMode" (dict "context" . "component" "agui-proxy") }}
    items:
      - key: {{ .Values.aguiProxy.auth.tokensSecret.key | quote }}
        path: {{ .Values.aguiProxy.auth.tokensSecret.key | quote }}
{{- end -}}
{{- end -}}
{{- define "acp.aguiProxy.volumeMounts" -}}
{{- if eq .Values.aguiProxy.auth.mode "token" -}}
- name: agui-tokens
  mountPath: {{ include "acp.aguiTokensDir" . }}
  readOnly: true
{{- end -}}
{{- end -}}
