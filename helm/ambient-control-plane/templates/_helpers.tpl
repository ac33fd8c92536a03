{{/*
Names, labels and images. Every template builds names and labels through these
helpers; no template pastes its own label block.
*/}}

{{/* acp.name is the chart name, or nameOverride. */}}
{{- define "acp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
acp.fullname prefixes every resource name: the release name, plus the chart
name unless the release name already contains it. Cut at 63 characters: the
limit of a DNS label (RFC 1123), which Service names must be.
*/}}
{{- define "acp.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
acp.componentName is the name of a component's objects: (dict "context" $
"component" "kube-reconciler"). Cut at 63 characters, the DNS label limit of
Service names and of label values (a pod's app.kubernetes.io/name and the
names of canary objects derive from it), with a trailing "-" removed.
*/}}
{{- define "acp.componentName" -}}
{{- printf "%s-%s" (include "acp.fullname" .context) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
acp.clusterUniqueName names a component's object that must be unique in the
cluster, not only in the release's namespace: its ClusterRole and
ClusterRoleBinding, the dashboard ConfigMap (metrics.dashboard.namespace may
gather several releases' in one namespace). It is "<release
namespace>.<acp.componentName>": a namespace has no ".", so two releases never
get one name, even where "-" would join namespace a-b and release c like
namespace a and release b-c. At most 63 + 1 + 63 characters, a valid
ClusterRole name and DNS subdomain. (dict "context" $ "component" "kube-reconciler")
*/}}
{{- define "acp.clusterUniqueName" -}}
{{- printf "%s.%s" .context.Release.Namespace (include "acp.componentName" .) -}}
{{- end -}}

{{/* acp.chart is the chart label value. */}}
{{- define "acp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
acp.selectorLabels: (dict "context" $ "component" "informer"). Never contains a
version: selectors are immutable, so a label that changes on upgrade would make
the upgrade fail.
*/}}
{{- define "acp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "acp.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/*
acp.labels: (dict "context" $ "component" "informer" ["track" "canary"]).
Selector labels plus the chart, version and managed-by labels and, for
workloads, the track (stable, canary or shadow).
*/}}
{{- define "acp.labels" -}}
{{ include "acp.selectorLabels" . }}
{{- if .track }}
ambient-code.io/track: {{ .track }}
{{- end }}
helm.sh/chart: {{ include "acp.chart" .context }}
app.kubernetes.io/part-of: ambient-control-plane
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
{{- with .context.Values.global.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* acp.valuesKey maps a component to its values key. */}}
{{- define "acp.valuesKey" -}}
{{- $keys := dict "informer" "informer" "kube-reconciler" "kubeReconciler" "runner-manager" "runnerManager" "agui-proxy" "aguiProxy" "event-tally" "eventTally" -}}
{{- required (printf "unknown component %q" .) (get $keys .) -}}
{{- end -}}

{{/*
acp.image: (dict "context" $ "image" .Values.informer.image ["override" .Values.informer.canary.image]).
The tag falls back from the override to the service, to global.image.tag, to
the chart's appVersion; a digest wins over any tag.
*/}}
{{- define "acp.image" -}}
{{- $g := .context.Values.global.image -}}
{{- $o := default dict .override -}}
{{- $registry := default $g.registry .image.registry -}}
{{- $repo := default .image.repository $o.repository -}}
{{- $tag := default (default (default .context.Chart.AppVersion $g.tag) .image.tag) $o.tag -}}
{{- if eq (toString $tag) "latest" -}}
{{- fail "image tags must be pinned: \"latest\" is not allowed (global.image.tag, <service>.image.tag, <service>.canary.image.tag)" -}}
{{- end -}}
{{- $ref := $repo -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" $registry $repo -}}{{- end -}}
{{- if and .image.digest (not $o.tag) -}}
{{- printf "%s@%s" $ref .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $ref (toString $tag) -}}
{{- end -}}
{{- end -}}

{{/* acp.serviceAccountName: (dict "context" $ "component" "informer"). */}}
{{- define "acp.serviceAccountName" -}}
{{- $svc := get .context.Values (include "acp.valuesKey" .component) -}}
{{- if $svc.serviceAccount.create -}}
{{- default (include "acp.componentName" .) $svc.serviceAccount.name -}}
{{- else -}}
{{- default "default" $svc.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* acp.configName is the ConfigMap holding a component's environment. */}}
{{- define "acp.configName" -}}
{{- include "acp.componentName" (dict "context" .context "component" (printf "%s-env" .component)) -}}
{{- end -}}

{{/*
acp.natsFullname is the bundled nats chart's fullname (its Service and
StatefulSet name), computed as that chart's nats.fullname does from the
values under nats:.
*/}}
{{- define "acp.natsFullname" -}}
{{- if .Values.nats.fullnameOverride -}}
{{- .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "nats" .Values.nats.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
acp.natsName is the bundled nats chart's name, its pods'
app.kubernetes.io/name label, computed as that chart's nats.name does.
*/}}
{{- define "acp.natsName" -}}
{{- default "nats" .Values.nats.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
acp.natsURL is NATS_URL: the bundled NATS Service on its client port
(acp.natsClientPort) or externalNats.url.
*/}}
{{- define "acp.natsURL" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s.%s.svc:%d" (include "acp.natsFullname" .) .Release.Namespace (include "acp.natsClientPort" . | int) -}}
{{- else -}}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/*
acp.checkStreamReplicas fails when the bundled NATS cannot place
informer.streamReplicas replicas (the informer's STREAM_REPLICAS, the
runner-manager's BUCKET_REPLICAS): the nats chart runs
nats.config.cluster.replicas servers with nats.config.cluster.enabled, else
one, and NATS refuses a stream with more replicas than servers for good, so
the informer and the runner-manager would exit 1 at every start after the
install succeeded. The servers of an external NATS are not known here.
*/}}
{{- define "acp.checkStreamReplicas" -}}
{{- if and .Values.nats.enabled (or .Values.informer.enabled .Values.runnerManager.enabled) -}}
{{- $cluster := dig "cluster" dict (default dict .Values.nats.config) -}}
{{- $clustered := dig "enabled" false $cluster -}}
{{- $servers := 1 -}}
{{- if $clustered -}}
{{- $servers = dig "replicas" 3 $cluster | int -}}
{{- end -}}
{{- $want := int .Values.informer.streamReplicas -}}
{{- if gt $want $servers -}}
{{- if $clustered -}}
{{- fail (printf "informer.streamReplicas is %d, more than the %d servers of the bundled NATS (nats.config.cluster.replicas): NATS refuses such a stream, and the informer and runner-manager would exit at start-up. Set informer.streamReplicas to at most %d, or nats.config.cluster.replicas to at least %d" $want $servers $servers $want) -}}
{{- else -}}
{{- fail (printf "informer.streamReplicas is %d, more than the 1 server of the bundled NATS (nats.config.cluster.enabled is false): NATS refuses such a stream, and the informer and runner-manager would exit at start-up. Set informer.streamReplicas to 1, or nats.config.cluster.enabled=true with nats.config.cluster.replicas of at least %d" $want $want) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* acp.natsCredsDir is where the NATS .creds Secret is mounted. */}}
{{- define "acp.natsCredsDir" -}}/etc/ambient/nats{{- end -}}

{{/* acp.natsPasswordDir is where a component's NATS password (bundled NATS) is mounted. */}}
{{- define "acp.natsPasswordDir" -}}/etc/ambient/nats-password{{- end -}}

{{/*
acp.secretsDir is where a component's secrets from existing Secrets (the
API token, an external NATS's password or token) are mounted as files
(acp.secretsVolume).
*/}}
{{- define "acp.secretsDir" -}}/etc/ambient/secrets{{- end -}}

{{/* acp.aguiTokensDir is where the agui-proxy tokens Secret is mounted. */}}
{{- define "acp.aguiTokensDir" -}}/etc/ambient/agui-tokens{{- end -}}

{{/*
acp.natsAuth validates externalNats.auth and returns how services
authenticate: "users" (the bundled NATS with one user per service, see
templates/nats/), "none", or externalNats.auth.type.
*/}}
{{- define "acp.natsAuth" -}}
{{- $a := .Values.externalNats.auth -}}
{{- if .Values.nats.enabled -}}
{{- ternary "users" "none" (include "acp.natsUsersEnabled" . | eq "true") -}}
{{- else -}}
{{- if ne $a.type "none" -}}
{{- $_ := required (printf "externalNats.auth.secretName is required when externalNats.auth.type is %s" $a.type) $a.secretName -}}
{{- end -}}
{{- $a.type -}}
{{- end -}}
{{- end -}}

{{/* acp.commonConfig is the ConfigMap data every service shares. */}}
{{- define "acp.commonConfig" -}}
LOG_LEVEL: {{ .Values.global.logLevel | quote }}
METRICS_ADDR: {{ printf ":%d" (int .Values.global.metricsPort) | quote }}
NATS_URL: {{ include "acp.natsURL" . | quote }}
{{- if eq (include "acp.natsAuth" .) "creds" }}
NATS_CREDS_FILE: {{ printf "%s/%s" (include "acp.natsCredsDir" .) .Values.externalNats.auth.credsKey | quote }}
{{- end }}
{{- with .Values.global.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ $.Values.global.otlpProtocol | quote }}
{{- end }}
{{- /*
A signal's own endpoint comes with its protocol spelled out: left to the
SDK, an unset per-signal protocol would fall back to the SDK's default
(http/protobuf) whenever otlpEndpoint is empty, not to otlpProtocol. A
signal's protocol without its endpoint is the protocol the SDK uses for that
signal towards otlpEndpoint; without otlpEndpoint either, nothing of the
signal is exported and the protocol would be ignored: refused.
*/}}
{{- range $signal, $s := dict "TRACES" .Values.global.otlpTraces "METRICS" .Values.global.otlpMetrics }}
{{- if $s.endpoint }}
OTEL_EXPORTER_OTLP_{{ $signal }}_ENDPOINT: {{ $s.endpoint | quote }}
OTEL_EXPORTER_OTLP_{{ $signal }}_PROTOCOL: {{ default $.Values.global.otlpProtocol $s.protocol | quote }}
{{- else if $s.protocol }}
{{- $key := printf "global.otlp%s" (title (lower $signal)) }}
{{- if not $.Values.global.otlpEndpoint }}
{{- fail (printf "%s.protocol is set but neither %s.endpoint nor global.otlpEndpoint: no %s would be exported" $key $key (lower $signal)) }}
{{- end }}
OTEL_EXPORTER_OTLP_{{ $signal }}_PROTOCOL: {{ $s.protocol | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
acp.otlpHeaders: the OTLP headers (credentials, as a rule) from existing
Secrets, never in values or the ConfigMap, as a YAML list of [variable,
Secret, file in acp.secretsDir] (the variable's _FILE variant points at the
file). (the root context)
*/}}
{{- define "acp.otlpHeaders" -}}
{{- $g := .Values.global -}}
{{- $out := list -}}
{{- range $h := list (list "OTEL_EXPORTER_OTLP_HEADERS" $g.otlpHeadersSecret "otlp-headers") (list "OTEL_EXPORTER_OTLP_TRACES_HEADERS" $g.otlpTraces.headersSecret "otlp-traces-headers") (list "OTEL_EXPORTER_OTLP_METRICS_HEADERS" $g.otlpMetrics.headersSecret "otlp-metrics-headers") -}}
{{- if (index $h 1).name -}}
{{- $out = append $out $h -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
acp.otlpHeadersEnv: the OTLP headers (acp.otlpHeaders) as files of
acp.secretsVolume (OTEL_EXPORTER_OTLP_HEADERS_FILE and the per-signal
ones), or, in runner-manager (acp.secretsInEnv), as secretKeyRef
variables. (dict "context" $ "component" "informer")
*/}}
{{- define "acp.otlpHeadersEnv" -}}
{{- $dir := include "acp.secretsDir" .context -}}
{{- $inEnv := include "acp.secretsInEnv" . -}}
{{- range $h := include "acp.otlpHeaders" .context | fromYamlArray }}
{{- $s := index $h 1 }}
{{- if $inEnv }}
- name: {{ index $h 0 }}
  valueFrom:
    secretKeyRef: {name: {{ $s.name | quote }}, key: {{ $s.key | quote }}}
{{- else }}
- name: {{ printf "%s_FILE" (index $h 0) }}
  value: {{ printf "%s/%s" $dir (index $h 2) | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
acp.otlpEndpoints are the OTLP endpoints the services export to (general
and per signal), as a YAML list of [values key, URL] pairs.
*/}}
{{- define "acp.otlpEndpoints" -}}
{{- $g := .Values.global -}}
{{- $out := list -}}
{{- range $key, $url := dict "global.otlpEndpoint" $g.otlpEndpoint "global.otlpTraces.endpoint" $g.otlpTraces.endpoint "global.otlpMetrics.endpoint" $g.otlpMetrics.endpoint -}}
{{- if $url -}}
{{- $out = append $out (list $key $url) -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
acp.otelPodEnv: the pod's name, namespace and node from the Downward API,
under the names the OpenTelemetry Operator uses, for
acp.otelResourceAttributes to reference ($(NAME), which the kubelet expands).
*/}}
{{- define "acp.otelPodEnv" -}}
- name: OTEL_RESOURCE_ATTRIBUTES_POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
- name: OTEL_RESOURCE_ATTRIBUTES_NAMESPACE
  valueFrom:
    fieldRef: {fieldPath: metadata.namespace}
- name: OTEL_RESOURCE_ATTRIBUTES_NODE_NAME
  valueFrom:
    fieldRef: {fieldPath: spec.nodeName}
{{- end -}}

{{/*
acp.otelResourceAttributes is OTEL_RESOURCE_ATTRIBUTES: the pod's k8s.*
attributes and service.instance.id (the pod's name, unique per pod), then
global.otelResourceAttributes (values URL-encoded, as the SDK decodes them:
a space is %20, not "+"), then .user (extraEnv values, as written). Of two
entries with one key the SDK keeps the later. (dict "context" $ "user" list)
*/}}
{{- define "acp.otelResourceAttributes" -}}
{{- $attrs := list "k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" "k8s.namespace.name=$(OTEL_RESOURCE_ATTRIBUTES_NAMESPACE)" "k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME)" "service.instance.id=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)" -}}
{{- range $k, $v := .context.Values.global.otelResourceAttributes -}}
{{- if not (regexMatch "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$" $k) -}}
{{- fail (printf "global.otelResourceAttributes: key %q must be an HTTP token (letters, digits and !#$%%&'*+-.^_`|~; no '=', ',' or space): the SDK drops any other" $k) -}}
{{- end -}}
{{- $attrs = append $attrs (printf "%s=%s" $k (urlquery (toString $v) | replace "+" "%20")) -}}
{{- end -}}
{{- join "," (concat $attrs .user) -}}
{{- end -}}

{{/* acp.apiConfig is the ConfigMap data of services that call the ambient API. */}}
{{- define "acp.apiConfig" -}}
AMBIENT_GRPC_SERVER_ADDR: {{ .Values.api.grpcAddr | quote }}
AMBIENT_GRPC_USE_TLS: {{ .Values.api.useTLS | quote }}
{{- end -}}

{{/*
acp.secretEnv: the NATS user and where the pod's secrets are (NATS
credentials, API token, OTLP headers). The secrets themselves are files
(acp.secretsVolume, the bundled NATS's acp.natsVolume), never variables:
a variable shows in /proc/<pid>/environ and keeps its value when the
Secret is rotated, while the kubelet updates a mounted Secret in place,
which the services follow (the API token at the next call, a NATS password
or token at the next reconnect; the OTLP headers are read at start).
Except in runner-manager (acp.secretsInEnv).
(dict "context" $ "component" "informer" "track" "stable" "api" true)
*/}}
{{- define "acp.secretEnv" -}}
{{- $ctx := .context -}}
{{- $auth := include "acp.natsAuth" $ctx -}}
{{- $a := $ctx.Values.externalNats.auth -}}
{{- $dir := include "acp.secretsDir" $ctx -}}
{{- if include "acp.secretsInEnv" . }}
{{- include "acp.secretEnvVars" . }}
{{- else if eq $auth "users" }}
- name: NATS_USER
  value: {{ include "acp.natsUser" . | quote }}
- name: NATS_PASSWORD_FILE
  value: {{ printf "%s/password" (include "acp.natsPasswordDir" $ctx) | quote }}
{{- else if eq $auth "userPassword" }}
- name: NATS_USER
  valueFrom:
    secretKeyRef: {name: {{ $a.secretName | quote }}, key: {{ $a.userKey | quote }}}
- name: NATS_PASSWORD_FILE
  value: {{ printf "%s/nats-password" $dir | quote }}
{{- else if eq $auth "token" }}
- name: NATS_TOKEN_FILE
  value: {{ printf "%s/nats-token" $dir | quote }}
{{- end }}
{{- include "acp.otlpHeadersEnv" . }}
{{- if and .api (not (include "acp.secretsInEnv" .)) }}
- name: AMBIENT_API_TOKEN_FILE
  value: {{ printf "%s/api-token" $dir | quote }}
{{- end }}
{{- end -}}

{{/*
acp.secretsInEnv is "true" for runner-manager, whose secrets from existing
Secrets (the API token, an external NATS's password or token: one identity
for every service; the OTLP headers) are variables from secretKeyRef,
never files. Its local
runners run as its user: a file of the pod's user they could read, while
runner-manager makes itself non-dumpable before any runner starts, so its
environment is out of their reach (TestHostileRunner). The price: a
rotated Secret reaches runner-manager only with a restart
(docs/operations.md, "Rotating secrets"). The bundled NATS's password of
runner-manager's own NATS user, which may do only what runner-manager
does, stays a file (acp.natsVolume) that follows a rotation.
*/}}
{{- define "acp.secretsInEnv" -}}
{{- if eq .component "runner-manager" }}true{{ end -}}
{{- end -}}

{{/* acp.secretEnvVars: acp.secretEnv's secrets as variables (acp.secretsInEnv). */}}
{{- define "acp.secretEnvVars" -}}
{{- $ctx := .context -}}
{{- $auth := include "acp.natsAuth" $ctx -}}
{{- $a := $ctx.Values.externalNats.auth -}}
{{- if eq $auth "users" }}
- name: NATS_USER
  value: {{ include "acp.natsUser" . | quote }}
- name: NATS_PASSWORD_FILE
  value: {{ printf "%s/password" (include "acp.natsPasswordDir" $ctx) | quote }}
{{- else if eq $auth "userPassword" }}
- name: NATS_USER
  valueFrom:
    secretKeyRef: {name: {{ $a.secretName | quote }}, key: {{ $a.userKey | quote }}}
- name: NATS_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $a.secretName | quote }}, key: {{ $a.passwordKey | quote }}}
{{- else if eq $auth "token" }}
- name: NATS_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ $a.secretName | quote }}, key: {{ $a.tokenKey | quote }}}
{{- end }}
{{- if .api }}
- name: AMBIENT_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "api.tokenSecret.name is required (an existing Secret with the ambient API token)" $ctx.Values.api.tokenSecret.name | quote }}
      key: {{ $ctx.Values.api.tokenSecret.key | quote }}
{{- end }}
{{- end -}}

{{/*
acp.secretFileMode is the mode of the files of a component's Secret
volumes (acp.secretsVolume, acp.natsVolume): readable by the pod's user
only through its group when the pod has an fsGroup, which the kubelet
gives the files (0440); without one they stay root's, and only a mode
readable by all (0444) lets a non-root user read them (no other pod sees
the volume). (dict "context" $ "component" "informer")
*/}}
{{- define "acp.secretFileMode" -}}
{{- $sc := include "acp.podSecurityContext" (dict "context" .context "component" .component) | fromYaml -}}
{{- ternary "0440" "0444" (hasKey $sc "fsGroup") -}}
{{- end -}}

{{/*
acp.secretsVolume / acp.secretsVolumeMount: one projected volume of the
secrets a component reads from existing Secrets, each key as a file in
acp.secretsDir: the API token (api-token) when the component calls the
API, an external NATS's password (nats-password) or token (nats-token),
the OTLP headers (acp.otlpHeaders). Nothing when there is none.
Read-only, mode acp.secretFileMode.
(dict "context" $ "component" "informer" "api" true)
*/}}
{{- define "acp.secretsVolume" -}}
{{- if not (include "acp.secretsInEnv" .) -}}
{{- $ctx := .context -}}
{{- $auth := include "acp.natsAuth" $ctx -}}
{{- $a := $ctx.Values.externalNats.auth -}}
{{- $sources := list -}}
{{- if eq $auth "userPassword" -}}
{{- $sources = append $sources (dict "secret" (dict "name" $a.secretName "items" (list (dict "key" $a.passwordKey "path" "nats-password")))) -}}
{{- else if eq $auth "token" -}}
{{- $sources = append $sources (dict "secret" (dict "name" $a.secretName "items" (list (dict "key" $a.tokenKey "path" "nats-token")))) -}}
{{- end -}}
{{- if .api -}}
{{- $name := required "api.tokenSecret.name is required (an existing Secret with the ambient API token)" $ctx.Values.api.tokenSecret.name -}}
{{- $sources = append $sources (dict "secret" (dict "name" $name "items" (list (dict "key" $ctx.Values.api.tokenSecret.key "path" "api-token")))) -}}
{{- end -}}
{{- range $h := include "acp.otlpHeaders" $ctx | fromYamlArray -}}
{{- $s := index $h 1 -}}
{{- $sources = append $sources (dict "secret" (dict "name" $s.name "items" (list (dict "key" $s.key "path" (index $h 2))))) -}}
{{- end -}}
{{- if $sources }}
- name: acp-secrets
  projected:
    defaultMode: {{ include "acp.secretFileMode" . }}
    sources:
      {{- toYaml $sources | nindent 6 }}
{{- end }}
{{- end -}}
{{- end -}}
{{- define "acp.secretsVolumeMount" -}}
{{- if include "acp.secretsVolume" . }}
- name: acp-secrets
  mountPath: {{ include "acp.secretsDir" .context }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
acp.natsVolume / acp.natsVolumeMount mount a component's NATS credentials:
the .creds Secret of an external NATS, or, with the bundled NATS, only the
component's own key of the passwords Secret (a pod never sees another
service's password). Read-only, mode acp.secretFileMode.
(dict "context" $ "component" "informer" "track" "stable")
*/}}
{{- define "acp.natsVolume" -}}
{{- $ctx := .context -}}
{{- $auth := include "acp.natsAuth" $ctx -}}
{{- if eq $auth "creds" }}
- name: nats-creds
  secret:
    secretName: {{ $ctx.Values.externalNats.auth.secretName | quote }}
    defaultMode: {{ include "acp.secretFileMode" . }}
    items:
      - key: {{ $ctx.Values.externalNats.auth.credsKey | quote }}
        path: {{ $ctx.Values.externalNats.auth.credsKey | quote }}
{{- else if eq $auth "users" }}
- name: nats-password
  secret:
    secretName: {{ include "acp.natsPasswordsSecret" $ctx | quote }}
    defaultMode: {{ include "acp.secretFileMode" . }}
    items:
      - key: {{ include "acp.natsPasswordKey" (include "acp.natsUser" .) | quote }}
        path: password
{{- end }}
{{- end -}}
{{- define "acp.natsVolumeMount" -}}
{{- $ctx := .context -}}
{{- $auth := include "acp.natsAuth" $ctx -}}
{{- if eq $auth "creds" }}
- name: nats-creds
  mountPath: {{ include "acp.natsCredsDir" $ctx }}
  readOnly: true
{{- else if eq $auth "users" }}
- name: nats-password
  mountPath: {{ include "acp.natsPasswordDir" $ctx }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
acp.podSecurityContext / acp.containerSecurityContext: global.podSecurityContext
(global.containerSecurityContext) with a service's own merged over it key by
key, a key set to null there removing the global one (a whole key is
replaced: seccompProfile, capabilities). The defaults in values.yaml are the
restricted Pod Security profile with UID and GID 65532 and a read-only root;
a key set to null under global is dropped by Helm itself (runAsUser: null
for OpenShift). (dict "context" $ ["component" "informer"]; no component:
the global ones, for the `helm test` pod)
*/}}
{{- define "acp.podSecurityContext" -}}
{{- include "acp.securityContext" (merge (dict "key" "podSecurityContext") .) -}}
{{- end -}}
{{- define "acp.containerSecurityContext" -}}
{{- include "acp.securityContext" (merge (dict "key" "containerSecurityContext") .) -}}
{{- end -}}
{{- define "acp.securityContext" -}}
{{- $own := dict -}}
{{- if .component -}}
{{- $own = get (get .context.Values (include "acp.valuesKey" .component)) .key | default dict -}}
{{- end -}}
{{- include "acp.mergeSecurityContext" (dict "global" (get .context.Values.global .key) "own" $own) -}}
{{- end -}}

{{/*
acp.mergeSecurityContext is .own merged over .global key by key (either may
be unset), a key set to null in either removing it, as YAML ({} when
empty). Shared by the chart's own pods and the NATS pods
(templates/nats/_security.tpl), whose hooks run in the nats chart's context.
*/}}
{{- define "acp.mergeSecurityContext" -}}
{{- $sc := deepCopy (.global | default dict) -}}
{{- range $k, $v := (.own | default dict) -}}
{{- if kindIs "invalid" $v -}}
{{- $_ := unset $sc $k -}}
{{- else -}}
{{- $_ := set $sc $k $v -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := $sc -}}
{{- if kindIs "invalid" $v -}}
{{- $_ := unset $sc $k -}}
{{- end -}}
{{- end -}}
{{- if $sc -}}
{{- toYaml $sc -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/*
acp.topologySpread is a Deployment's topologySpreadConstraints: the service's
list as it is, except that an entry without a labelSelector gets the
Deployment's own selector (component and track) and matchLabelKeys
[pod-template-hash], so it counts only the pods of the same ReplicaSet (a
rollout's new pods are not pushed away by the old ones). (dict "context" $
"component" "informer" "track" "stable")
*/}}
{{- define "acp.topologySpread" -}}
{{- $svc := get .context.Values (include "acp.valuesKey" .component) -}}
{{- $out := list -}}
{{- range $svc.topologySpreadConstraints -}}
{{- $c := deepCopy . -}}
{{- if not $c.labelSelector -}}
{{- $sel := fromYaml (include "acp.selectorLabels" (dict "context" $.context "component" $.component)) -}}
{{- $_ := set $sel "ambient-code.io/track" $.track -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $sel) -}}
{{- if not (hasKey $c "matchLabelKeys") -}}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") -}}
{{- end -}}
{{- end -}}
{{- $out = append $out $c -}}
{{- end -}}
{{- with $out -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/*
acp.memberPartitionsEnv is the name of the canary-slice variable of a
consumer service.
*/}}
{{- define "acp.memberPartitionsEnv" -}}
GROUP_MEMBER_PARTITIONS
{{- end -}}

{{/*
acp.checkPartitions fails on a malformed canary slice of GROUP_PARTITIONS:
not a list of numbers and ranges, a partition not below .count, or a range
that runs backwards ("3-1" names no partition, and a canary given none would
become an ordinary member taking any). (dict "key" "kubeReconciler" "value" "0-3" "count" 16)
*/}}
{{- define "acp.checkPartitions" -}}
{{- if not (regexMatch "^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$" (toString .value)) -}}
{{- fail (printf "%s.canary.partitions must look like \"0-3\" or \"0,2,5\", got %q" .key (toString .value)) -}}
{{- end -}}
{{- range splitList "," (toString .value) -}}
{{- $r := splitList "-" . -}}
{{- if gt (atoi (first $r)) (atoi (last $r)) -}}
{{- fail (printf "%s.canary.partitions: range %q runs backwards (write it low-high, %s-%s): it names no partition, and a canary with none would take any" $.key . (last $r) (first $r)) -}}
{{- end -}}
{{- end -}}
{{- range regexSplit "[,-]" (toString .value) -1 -}}
{{- if ge (atoi .) (int $.count) -}}
{{- fail (printf "%s.canary.partitions: partition %s is not below global.groupPartitions (%d)" $.key . (int $.count)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
acp.expandPartitions turns a slice like "0-2,5" into "0,1,2,5": every
service's loader accepts a comma-separated list, not all accept ranges.
*/}}
{{- define "acp.expandPartitions" -}}
{{- $out := list -}}
{{- range splitList "," (toString .) -}}
{{- $r := splitList "-" . -}}
{{- range untilStep (atoi (first $r)) (add1 (atoi (last $r)) | int) 1 -}}
{{- $out = append $out (toString .) -}}
{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* acp.groupConfig is the ConfigMap data of consumer-group members. */}}
{{- define "acp.groupConfig" -}}
GROUP_PARTITIONS: {{ .Values.global.groupPartitions | quote }}
{{- end -}}

{{/*
acp.checkMinDuration fails unless the Go duration .value is at least .min
(100ms, or whole seconds from 1s to 59s), the smallest value the service (or
NATS) takes. Sprig has no function that turns a duration into a number, but
durationRound parses with time.ParseDuration and answers "0s" exactly when
the duration is at most 1s: so a value is at least 1s when value+1ns rounds
to more than "0s", and at least 100ms when ten times the value (Go adds up
"50ms50ms...") does. Between 1s (excluded) and 1m (included) it answers the
whole seconds ("29s" for 29.9s), so a value is at least Ns (N from 2 to 59)
when it rounds to neither "0s" nor fewer than N seconds.
An unset value (the service's default) passes; with "orZero" true, so does a
zero duration (every number in it 0: "0", "0s", "0m0.0s"), which the
service takes as "off".
(dict "key" "informer.leaseTTL" "value" "15s" "min" "1s" ["orZero" true])
*/}}
{{- define "acp.checkMinDuration" -}}
{{- $zero := regexMatch "^0$|^(0+(\\.0+)?(ns|us|µs|ms|s|m|h))+$" (toString .value) -}}
{{- $times := get (dict "1s" 1 "100ms" 10) .min -}}
{{- $secs := 0 -}}
{{- if and (not $times) (regexMatch "^[0-9]+s$" .min) -}}
{{- $secs = atoi (trimSuffix "s" .min) -}}
{{- end -}}
{{- if not (or $times (and (ge $secs 2) (le $secs 59))) -}}
{{- fail (printf "acp.checkMinDuration: unsupported min %q" .min) -}}
{{- end -}}
{{- if and .value (not (and .orZero $zero)) -}}
{{- $short := false -}}
{{- if $times -}}
{{- $short = and (eq (durationRound .value) "0s") (eq (durationRound (printf "%s1ns" (repeat (int $times) .value))) "0s") -}}
{{- else -}}
{{- $r := durationRound .value -}}
{{- $short = or (eq $r "0s") (and (regexMatch "^[0-9]+s$" $r) (lt (atoi (trimSuffix "s" $r)) $secs)) -}}
{{- end -}}
{{- if $short -}}
{{- fail (printf "%s must be %sat least %s, got %q" .key (ternary "0 (off) or " "" (.orZero | default false)) .min .value) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
acp.durationMillis is the Go duration .value in whole milliseconds, for
comparing two durations (acp.checkMinDuration only compares one with a
fixed minimum). Sprig cannot parse a duration into a number, so it reads
the forms the schema lets through for such values: "0", or whole numbers
each followed by h, m, s or ms ("10s", "1m30s", "500ms"). No fractions and
no us or ns: milliseconds are then always whole. Anything else, or more than
Go's largest duration (about 2562047h, which the service would refuse),
fails naming .key: a value the check did not understand must not pass it.
(dict "key" "aguiProxy.routesStaleAfter" "value" "10s")
*/}}
{{- define "acp.durationMillis" -}}
{{- $v := toString .value -}}
{{- if not (regexMatch "^0$|^([0-9]+(h|m|s|ms))+$" $v) -}}
{{- fail (printf "%s must be a Go duration of whole numbers with units h, m, s or ms (\"10s\", \"1m30s\", \"500ms\"), got %q" .key $v) -}}
{{- end -}}
{{- /* Go's largest duration, 1<<63-1 ns, in whole ms. */ -}}
{{- $max := 9223372036854 -}}
{{- $unit := dict "h" 3600000 "m" 60000 "s" 1000 "ms" 1 -}}
{{- $ms := 0 -}}
{{- /* "ms" before "m": the first alternative that matches wins. */ -}}
{{- range regexFindAll "[0-9]+(ms|h|m|s)" $v -1 -}}
{{- $digits := regexReplaceAll "^0*([0-9]*)[a-z]+$" . "${1}" -}}
{{- $per := get $unit (regexReplaceAll "^[0-9]+" . "") -}}
{{- /* Checked before atoi, which answers 0 past int64, and before mul, which would overflow. */ -}}
{{- if or (gt (len $digits) 16) (gt (atoi $digits) (div $max $per)) -}}
{{- fail (printf "%s %q is longer than Go's largest duration (about 2562047h)" $.key $v) -}}
{{- end -}}
{{- $ms = add $ms (mul (atoi $digits) $per) -}}
{{- if gt $ms $max -}}
{{- fail (printf "%s %q is longer than Go's largest duration (about 2562047h)" $.key $v) -}}
{{- end -}}
{{- end -}}
{{- $ms -}}
{{- end -}}

{{/*
acp.checkNetworks fails on an entry of a list of networks (the schema's
ipNetwork: a CIDR or a single address) that its consumer would refuse or
take as another network, naming the entry:
- bits set beyond the prefix length (10.96.0.1/8: the network or the single
  address?): agui-proxy refuses them in RUNNER_ALLOWED_NETWORKS, and the
  kube-apiserver refuses such an ipBlock ("must not have bits set beyond
  the prefix length");
- an IPv4-mapped IPv6 address (::ffff:10.96.0.1), which the kube-apiserver
  refuses in an ipBlock ("ipBlock" true) and agui-proxy in
  RUNNER_ALLOWED_NETWORKS (it compares runner addresses as IPv4, so the
  entry would match nothing).
A single address has no host bits. The message suggests the network the
prefix length makes of the address, and the address's /32 or /128.
(dict "key" "networkPolicy.kubeAPIServer.cidrs" "networks" $list ["ipBlock" true])
*/}}
{{- define "acp.checkNetworks" -}}
{{- $key := .key -}}
{{- range $i, $n := .networks -}}
{{- $n = toString $n -}}
{{- $addr := first (splitList "/" $n) -}}
{{- $v6 := contains ":" $addr -}}
{{- $nib := include "acp.addrNibbles" $addr -}}
{{- if and $v6 (hasPrefix "00000000000000000000ffff" $nib) -}}
{{- $why := "which agui-proxy refuses: it compares runner addresses as IPv4, so the entry would match nothing" -}}
{{- if $.ipBlock -}}
{{- $why = "which the kube-apiserver refuses in a NetworkPolicy ipBlock" -}}
{{- end -}}
{{- fail (printf "%s[%d] %q is an IPv4-mapped IPv6 address, %s: write the IPv4 network itself" $key $i $n $why) -}}
{{- end -}}
{{- if contains "/" $n -}}
{{- $bits := atoi (last (splitList "/" $n)) -}}
{{- $net := include "acp.maskNibbles" (dict "nibbles" $nib "bits" $bits) -}}
{{- if ne $net $nib -}}
{{- $masked := printf "%s/%d" (include "acp.nibblesAddr" $net) $bits -}}
{{- $why := "agui-proxy refuses it (the network or the single address?)" -}}
{{- if $.ipBlock -}}
{{- $why = "the kube-apiserver refuses it in a NetworkPolicy ipBlock (\"must not have bits set beyond the prefix length\")" -}}
{{- end -}}
{{- fail (printf "%s[%d] %q has bits set beyond its /%d prefix: %s; write the network, %s, or the single address, %s/%d" $key $i $n $bits $why $masked $addr (ternary 128 32 $v6)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
acp.addrNibbles is an address of the schema's ipNetwork form as hex digits,
most significant first: 8 for IPv4 (two per octet), 32 for IPv6 ("::"
expanded, a trailing dotted IPv4 part as two groups).
*/}}
{{- define "acp.addrNibbles" -}}
{{- $a := lower . -}}
{{- if not (contains ":" $a) -}}
{{- range splitList "." $a }}{{ printf "%02x" (atoi .) }}{{ end -}}
{{- else -}}
{{- $halves := list -}}
{{- range splitList "::" $a -}}
{{- $groups := list -}}
{{- if . -}}
{{- range splitList ":" . -}}
{{- if contains "." . -}}
{{- $o := splitList "." . -}}
{{- $groups = append $groups (printf "%02x%02x" (atoi (index $o 0)) (atoi (index $o 1))) -}}
{{- $groups = append $groups (printf "%02x%02x" (atoi (index $o 2)) (atoi (index $o 3))) -}}
{{- else -}}
{{- $groups = append $groups (printf "%4s" . | replace " " "0") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $halves = append $halves (join "" $groups) -}}
{{- end -}}
{{- join (repeat (int (div (sub 32 (len (join "" $halves))) 4)) "0000") $halves -}}
{{- end -}}
{{- end -}}

{{/*
acp.maskNibbles is .nibbles (acp.addrNibbles) with every bit past the first
.bits cleared.
*/}}
{{- define "acp.maskNibbles" -}}
{{- $keep := div .bits 4 -}}
{{- $out := substr 0 (int $keep) .nibbles -}}
{{- if lt (len $out) (len .nibbles) -}}
{{- $partial := mod .bits 4 -}}
{{- $rest := len .nibbles | int -}}
{{- if $partial -}}
{{- $d := index (dict "0" 0 "1" 1 "2" 2 "3" 3 "4" 4 "5" 5 "6" 6 "7" 7 "8" 8 "9" 9 "a" 10 "b" 11 "c" 12 "d" 13 "e" 14 "f" 15) (substr (int $keep) (int (add $keep 1)) .nibbles) -}}
{{- $unit := index (list 16 8 4 2) (int $partial) -}}
{{- $out = printf "%s%x" $out (sub $d (mod $d $unit)) -}}
{{- end -}}
{{- $out = printf "%s%s" $out (repeat (int (sub $rest (len $out))) "0") -}}
{{- end -}}
{{- $out -}}
{{- end -}}

{{/*
acp.nibblesAddr is the address of acp.addrNibbles' hex digits in its usual
text form, as Go's netip prints it: dotted decimal for 8 digits, else RFC
5952 IPv6 (lower case, no leading zeros, the longest run of two or more
zero groups, the first of equals, as "::"; an IPv4-mapped address as
::ffff:a.b.c.d).
*/}}
{{- define "acp.nibblesAddr" -}}
{{- $hex := dict "0" 0 "1" 1 "2" 2 "3" 3 "4" 4 "5" 5 "6" 6 "7" 7 "8" 8 "9" 9 "a" 10 "b" 11 "c" 12 "d" 13 "e" 14 "f" 15 -}}
{{- if eq (len .) 8 -}}
{{- $octets := list -}}
{{- range $i := until 4 -}}
{{- $hi := index $hex (substr (int (mul $i 2)) (int (add (mul $i 2) 1)) $) -}}
{{- $lo := index $hex (substr (int (add (mul $i 2) 1)) (int (add (mul $i 2) 2)) $) -}}
{{- $octets = append $octets (add (mul 16 $hi) $lo) -}}
{{- end -}}
{{- join "." $octets -}}
{{- else if hasPrefix "00000000000000000000ffff" . -}}
{{- printf "::ffff:%s" (include "acp.nibblesAddr" (substr 24 32 .)) -}}
{{- else -}}
{{- $groups := list -}}
{{- range $i := until 8 -}}
{{- $g := trimPrefix "0" (trimPrefix "0" (trimPrefix "0" (substr (int (mul $i 4)) (int (add (mul $i 4) 4)) $))) -}}
{{- $groups = append $groups $g -}}
{{- end -}}
{{- /* The longest run of zero groups (at least two), the first of equals. */ -}}
{{- $best := 0 -}}{{- $bestAt := -1 -}}{{- $run := 0 -}}
{{- range $i, $g := $groups -}}
{{- if eq $g "0" -}}
{{- $run = add $run 1 -}}
{{- if gt $run $best -}}{{- $best = $run -}}{{- $bestAt = sub (add $i 1) $run -}}{{- end -}}
{{- else -}}
{{- $run = 0 -}}
{{- end -}}
{{- end -}}
{{- if lt $best 2 -}}
{{- join ":" $groups -}}
{{- else -}}
{{- printf "%s::%s" (join ":" (slice $groups 0 (int $bestAt))) (join ":" (slice $groups (int (add $bestAt $best)))) -}}
{{- end -}}
{{- end -}}
{{- end -}}
