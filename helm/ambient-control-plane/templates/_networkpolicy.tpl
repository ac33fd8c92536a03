{{/*
acp.networkPolicy allows a component only the traffic it needs. Arguments (dict):
  context, component
  api     egress to the ambient-api-server gRPC port
  kube    egress to the Kubernetes API server
  ingress extra ingress rules (YAML list items, string)
  egress  extra egress rules (YAML list items, string)
Every component may resolve DNS (acp.dnsEgress), reach NATS on its ports
(acp.natsPorts), export telemetry to the ports of
global.otlpEndpoint, global.otlpTraces.endpoint and global.otlpMetrics.endpoint
when set (to networkPolicy.otlpTo, or anywhere),
and be scraped on the metrics port (from networkPolicy.metricsFrom and the
chart's `helm test` pod, or from anywhere). Kubelet probes are not subject
to NetworkPolicy.
*/}}
{{- define "acp.networkPolicy" -}}
{{- $ctx := .context -}}
{{- $np := $ctx.Values.networkPolicy -}}
{{- if $np.enabled -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "acp.componentName" . }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "acp.selectorLabels" . | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    - ports:
        - port: http-metrics
          protocol: TCP
      {{- with $np.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
        {{- if $ctx.Values.tests.enabled }}
        {{- /* `helm test` (templates/tests/readyz.yaml) GETs /readyz on this port. */}}
        - podSelector:
            matchLabels:
              {{- include "acp.selectorLabels" (dict "context" $ctx "component" "readyz-test") | nindent 14 }}
        {{- end }}
      {{- end }}
    {{- with .ingress }}
    {{- . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "acp.dnsEgress" $ctx | nindent 4 }}
    - ports:
        {{- range fromYamlArray (include "acp.natsPorts" $ctx) }}
        - port: {{ int . }}
          protocol: TCP
        {{- end }}
      {{- if $ctx.Values.nats.enabled }}
      to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: {{ include "acp.natsName" $ctx }}
              app.kubernetes.io/instance: {{ $ctx.Release.Name }}
      {{- else if $np.natsTo }}
      to:
        {{- toYaml $np.natsTo | nindent 8 }}
      {{- end }}
    {{- if .api }}
    - ports:
        - port: {{ include "acp.apiPort" $ctx }}
          protocol: TCP
      {{- with $np.apiTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- if .kube }}
    - ports:
        {{- range $np.kubeAPIServer.ports }}
        - port: {{ int . }}
          protocol: TCP
        {{- end }}
      {{- include "acp.checkNetworks" (dict "key" "networkPolicy.kubeAPIServer.cidrs" "networks" $np.kubeAPIServer.cidrs "ipBlock" true) }}
      {{- with $np.kubeAPIServer.cidrs }}
      to:
        {{- range . }}
        {{- /* An ipBlock takes CIDR notation only: a single address becomes its /32 or /128. */}}
        - ipBlock:
            cidr: {{ ternary . (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) (contains "/" .) | quote }}
        {{- end }}
      {{- end }}
    {{- end }}
    {{- /* Telemetry export on the port of each OTLP endpoint (general and per signal). */}}
    {{- $otlpPorts := list }}
    {{- range fromYamlArray (include "acp.otlpEndpoints" $ctx) }}
    {{- $otlpPorts = append $otlpPorts (include "acp.urlPort" (dict "key" (first .) "url" (last .)) | int) }}
    {{- end }}
    {{- with $otlpPorts | uniq | sortAlpha }}
    - ports:
        {{- range . }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $np.otlpTo }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with .egress }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end -}}
{{- end -}}

{{/*
acp.dnsEgress is the egress rule of name resolution, to anywhere: port 53 and
5353, over UDP and TCP. 5353: on OpenShift the DNS Service maps port 53 to the
DNS pods' 5353, and OVN-Kubernetes applies egress policy after that
translation, so a rule with 53 alone drops every lookup there.
*/}}
{{- define "acp.dnsEgress" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
    - {port: 5353, protocol: UDP}
    - {port: 5353, protocol: TCP}
{{- end -}}

{{/*
acp.natsClientPort is the bundled NATS's client port: nats.config.nats.port
of the nats chart, its server's port and its Service's (default 4222).
*/}}
{{- define "acp.natsClientPort" -}}
{{- $port := dig "nats" "port" 4222 (default dict .Values.nats.config) | int -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "nats.config.nats.port must be 1-65535, got %d" $port) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/*
acp.natsPorts are the TCP ports the services reach NATS on, a YAML list: the
bundled NATS's client port (acp.natsClientPort); for an external NATS the
port of every URL of externalNats.url, or the one nats.go dials when a URL
gives none (4222; 80 for ws://, 443 for wss://), unless natsPort overrides
them (a NATS behind a Service that maps its port to another on the NATS pods:
NetworkPolicy sees the pods' port). natsPort must not differ from the bundled
NATS's port, which it cannot change.
*/}}
{{- define "acp.natsPorts" -}}
{{- $override := .Values.natsPort -}}
{{- $ports := list -}}
{{- if .Values.nats.enabled -}}
{{- $port := include "acp.natsClientPort" . | int -}}
{{- if and (not (kindIs "invalid" $override)) (ne (int $override) $port) -}}
{{- fail (printf "natsPort (%d) differs from the bundled NATS's client port, nats.config.nats.port (%d): set nats.config.nats.port instead (natsPort overrides the egress port of an external NATS only)" (int $override) $port) -}}
{{- end -}}
{{- $ports = list $port -}}
{{- else if not (kindIs "invalid" $override) -}}
{{- $ports = list (int $override) -}}
{{- else -}}
{{- range splitList "," (include "acp.natsURL" .) -}}
{{- $u := urlParse (trim .) -}}
{{- $port := get (dict "ws" 80 "wss" 443) $u.scheme | default 4222 -}}
{{- with regexFind ":[0-9]+$" $u.host -}}
{{- $port = trimPrefix ":" . | int -}}
{{- end -}}
{{- if or (lt (int $port) 1) (gt (int $port) 65535) -}}
{{- fail (printf "externalNats.url: the port of %q must be 1-65535" (trim .)) -}}
{{- end -}}
{{- $ports = append $ports (int $port) -}}
{{- end -}}
{{- end -}}
{{- toYaml (uniq $ports) -}}
{{- end -}}

{{/* acp.apiPort is the port of api.grpcAddr (host:port). */}}
{{- define "acp.apiPort" -}}
{{- $parts := splitList ":" .Values.api.grpcAddr -}}
{{- if lt (len $parts) 2 -}}
{{- fail (printf "api.grpcAddr must be host:port, got %q" .Values.api.grpcAddr) -}}
{{- end -}}
{{- int (last $parts) -}}
{{- end -}}

{{/*
acp.urlPort is the TCP port of an http(s) URL, for an egress rule: its
explicit port, else its scheme's (443 for https, 80 for http).
(dict "key" "aguiProxy.auth.jwt.jwksURL" "url" "https://idp.example.com:8443/certs")
*/}}
{{- define "acp.urlPort" -}}
{{- $u := urlParse .url -}}
{{- $explicit := regexFind ":[0-9]+$" $u.host -}}
{{- $port := ternary 443 80 (eq $u.scheme "https") -}}
{{- if $explicit -}}
{{- $port = trimPrefix ":" $explicit | int -}}
{{- end -}}
{{- if or (lt $port 1) (gt $port 65535) -}}
{{- fail (printf "%s: the port of %q must be 1-65535" .key .url) -}}
{{- end -}}
{{- $port -}}
{{- end -}}

{{/* acp.runnerPorts is the NetworkPolicy port (with endPort) of runnerManager.portRange. */}}
{{- define "acp.runnerPorts" -}}
{{- include "acp.checkPortRange" . -}}
{{- $r := splitList "-" .Values.runnerManager.portRange -}}
- port: {{ atoi (first $r) }}
  endPort: {{ atoi (last $r) }}
  protocol: TCP
{{- end -}}

{{/*
acp.checkPortRange fails unless runnerManager.portRange is what runner-manager
takes as LOCAL_PORT_RANGE: LOW-HIGH with 1 <= LOW <= HIGH <= 65535.
*/}}
{{- define "acp.checkPortRange" -}}
{{- $v := toString .Values.runnerManager.portRange -}}
{{- $ok := regexMatch "^[0-9]{1,5}-[0-9]{1,5}$" $v -}}
{{- if $ok -}}
{{- $r := splitList "-" $v -}}
{{- $ok = and (ge (atoi (first $r)) 1) (le (atoi (first $r)) (atoi (last $r))) (le (atoi (last $r)) 65535) -}}
{{- end -}}
{{- if not $ok -}}
{{- fail (printf "runnerManager.portRange must be LOW-HIGH with 1 <= LOW <= HIGH <= 65535, got %q" $v) -}}
{{- end -}}
{{- end -}}
