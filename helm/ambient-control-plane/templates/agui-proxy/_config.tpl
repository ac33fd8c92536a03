{{/* acp.config.agui-proxy is the agui-proxy's environment (ConfigMap data). */}}
{{- define "acp.config.agui-proxy" -}}
{{- $p := .Values.aguiProxy -}}
{{ include "acp.commonConfig" . }}
LOCAL_PROXY_ADDR: {{ printf ":%d" (int $p.port) | quote }}
CORS_ALLOWED_ORIGIN: {{ $p.corsAllowedOrigin | quote }}
AGUI_AUTH: {{ $p.auth.mode | quote }}
{{- if eq $p.auth.mode "token" }}
{{- $_ := required "aguiProxy.auth.tokensSecret.name is required when aguiProxy.auth.mode is token" $p.auth.tokensSecret.name }}
AGUI_TOKENS_FILE: {{ printf "%s/%s" (include "acp.aguiTokensDir" .) $p.auth.tokensSecret.key | quote }}
{{- else if eq $p.auth.mode "jwt" }}
AGUI_JWKS_URL: {{ required "aguiProxy.auth.jwt.jwksURL is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.jwksURL | quote }}
AGUI_JWT_ISSUER: {{ required "aguiProxy.auth.jwt.issuer is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.issuer | quote }}
AGUI_JWT_AUDIENCE: {{ required "aguiProxy.auth.jwt.audience is required when aguiProxy.auth.mode is jwt" $p.auth.jwt.audience | quote }}
{{- else }}
{{- fail (printf "aguiProxy.auth.mode must be token or jwt in a cluster, got %q" $p.auth.mode) }}
{{- end }}
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
    defaultMode: 0440
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
