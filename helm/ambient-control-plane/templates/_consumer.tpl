{{/*
Consumer services (kube-reconciler, runner-manager, event-tally) join one
consumer group on the events stream. A stable pod's member identity
(MEMBER_ID) is its pod name. The canary is a single pod with a fixed member
identity that owns the partitions of its canary slice (GROUP_MEMBER_PARTITIONS)
out of GROUP_PARTITIONS: a fixed share of
objects goes to the new version and an object never moves between versions
while the canary exists. Deleting the canary hands its partitions back.
*/}}

{{/* acp.memberIdEnv is the stable pods' MEMBER_ID (their pod name). */}}
{{- define "acp.memberIdEnv" -}}
- name: MEMBER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/*
acp.consumerDeployments renders the stable and, when enabled, the canary
Deployment of a consumer service. Arguments (dict): context, component,
api (bool), automountToken (bool), env/volumes/volumeMounts/ports (strings)
shared by both tracks.
*/}}
{{- define "acp.consumerDeployments" -}}
{{- $ctx := .context -}}
{{- $key := include "acp.valuesKey" .component -}}
{{- $svc := get $ctx.Values $key -}}
{{- $c := dict "context" $ctx "component" .component -}}
{{- $env := printf "%s\n%s" (include "acp.memberIdEnv" $ctx) (default "" .env) | trim -}}
{{ include "acp.deployment" (dict "context" $ctx "component" .component "track" "stable" "name" (include "acp.componentName" $c) "replicas" $svc.replicas "api" .api "automountToken" .automountToken "env" $env "ports" .ports "volumes" .volumes "volumeMounts" .volumeMounts) }}
{{- if $svc.canary.enabled }}
{{- $_ := required (printf "%s.canary.image.tag is required when %s.canary.enabled is true" $key $key) $svc.canary.image.tag }}
{{- include "acp.checkPartitions" (dict "key" $key "value" $svc.canary.partitions "count" $ctx.Values.global.groupPartitions) }}
{{- $canaryEnv := list (dict "name" "MEMBER_ID" "value" $svc.canary.memberId) (dict "name" (include "acp.memberPartitionsEnv" .component) "value" (include "acp.expandPartitions" $svc.canary.partitions)) }}
---
{{ include "acp.deployment" (dict "context" $ctx "component" .component "track" "canary" "name" (include "acp.componentName" (dict "context" $ctx "component" (printf "%s-canary" .component))) "replicas" 1 "override" $svc.canary.image "api" .api "automountToken" .automountToken "env" (default "" .env | trim) "canaryEnv" (concat $canaryEnv $svc.canary.extraEnv) "ports" .ports "volumes" .volumes "volumeMounts" .volumeMounts) }}
{{- end }}
{{- end -}}
