{{/*
Security contexts of the bundled NATS (the nats-io chart, which sets none of
its own).

The nats chart's values (the nats: block of values.yaml) call the
"acp.nats.*Security*" templates below through $tplYamlSpread hooks in the
patch lists it applies to its pod templates and containers. They run in the
nats chart's context, where .Values is the nats: block with global.* copied
in by Helm: the NATS pods get global.podSecurityContext and
global.containerSecurityContext like the chart's own (the restricted Pod
Security profile with UID and GID 65532 by default), with
nats.podSecurityContext and nats.containerSecurityContext merged over them
key by key as a service's own are. (Not dig on .Values: there it is a
chartutil.Values, which dig refuses.)

Helm copies into a subchart's global the parent chart's defaults with the
user's values set over them, but not the user's nulls: with
global.podSecurityContext.runAsUser null (OpenShift) the nats chart still
sees 65532. So a global key set to null must be set to null for NATS too,
in nats.podSecurityContext (nats.containerSecurityContext);
acp.nats.checkGlobalNulls refuses the values otherwise, rather than let the
NATS pods run with a UID the platform refuses.

The hooks are JSON patch "add" operations, applied after the nats chart's
merges: they replace a securityContext set through nats.*.merge, so set
NATS's own in nats.podSecurityContext and nats.containerSecurityContext.
*/}}

{{/* acp.nats.podSecurityContext is the NATS pods' security context (YAML). */}}
{{- define "acp.nats.podSecurityContext" -}}
{{- include "acp.mergeSecurityContext" (dict "global" (.Values.global | default dict).podSecurityContext "own" .Values.podSecurityContext) -}}
{{- end -}}

{{/* acp.nats.containerSecurityContext is the NATS containers' security context (YAML). */}}
{{- define "acp.nats.containerSecurityContext" -}}
{{- include "acp.mergeSecurityContext" (dict "global" (.Values.global | default dict).containerSecurityContext "own" .Values.containerSecurityContext) -}}
{{- end -}}

{{/* acp.nats.podSecurityPatch sets a pod template's securityContext (StatefulSet, nats-box). */}}
{{- define "acp.nats.podSecurityPatch" -}}
- op: add
  path: /spec/securityContext
  value:
    {{- include "acp.nats.podSecurityContext" . | nindent 4 }}
{{- end -}}

{{/* acp.nats.containerSecurityPatch sets a container's securityContext (reloader, promExporter, nats-box). */}}
{{- define "acp.nats.containerSecurityPatch" -}}
- op: add
  path: /securityContext
  value:
    {{- include "acp.nats.containerSecurityContext" . | nindent 4 }}
{{- end -}}

{{/*
acp.nats.serverSecurityPatch sets the nats server container's
securityContext. nats-server writes its PID file (and exits when it cannot):
with the reloader (nats.reloader.enabled, the nats chart's default) to
/var/run/nats, an emptyDir the two share; without it to /var/run on the root
file system, which then cannot be read-only.
*/}}
{{- define "acp.nats.serverSecurityPatch" -}}
{{- $sc := include "acp.nats.containerSecurityContext" . | fromYaml -}}
{{- $reloader := .Values.reloader | default dict -}}
{{- if and (hasKey $sc "readOnlyRootFilesystem") (hasKey $reloader "enabled") (not $reloader.enabled) -}}
{{- $_ := set $sc "readOnlyRootFilesystem" false -}}
{{- end -}}
- op: add
  path: /securityContext
  value:
    {{- toYaml $sc | nindent 4 }}
{{- end -}}

{{/*
acp.nats.checkGlobalNulls (this chart's context) fails when a key of
global.podSecurityContext or global.containerSecurityContext is set to null
but the nats chart still sees it in its global (see the top of this file)
and nats.podSecurityContext (nats.containerSecurityContext) does not set it
(to null or a value). .Subcharts.nats is the nats chart's context; without
the nats chart (nats.enabled false, or not fetched) nothing is checked.
*/}}
{{- define "acp.nats.checkGlobalNulls" -}}
{{- $nats := get (.Subcharts | default dict) "nats" -}}
{{- if and .Values.nats.enabled $nats -}}
{{- range $key := list "podSecurityContext" "containerSecurityContext" -}}
{{- $seen := get ($nats.Values.global | default dict) $key | default dict -}}
{{- $global := get $.Values.global $key | default dict -}}
{{- $own := get $.Values.nats $key | default dict -}}
{{- range $k, $v := $seen -}}
{{- if not (or (hasKey $global $k) (hasKey $own $k)) -}}
{{- fail (printf "global.%s.%s is null, but Helm gives the nats chart its globals without the keys set to null: the NATS pods would still get %s %v. Set nats.%s.%s to null too (or to the value NATS should run with), e.g. --set nats.%s.%s=null" $key $k $k (toJson $v) $key $k $key $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
