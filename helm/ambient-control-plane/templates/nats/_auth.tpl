{{/*
NATS authentication of the bundled NATS (nats.ambientAuth): one user per
service with only the subjects it needs (files/nats-permissions.yaml).

Two charts meet here. This chart renders the auth.conf ConfigMap and the
passwords Secret (templates/nats/auth.yaml) and gives each pod its user and
its own password file. The nats chart runs the server; its values (the nats:
block of values.yaml) call the "acp.natsServer.*" templates below through its
$tplYaml hooks, which run in the nats chart's context: there .Values is the
nats: block (so nats.ambientAuth is .Values.ambientAuth) and .Files are the
nats chart's. Names both sides need are therefore built only from the
release name and nats.ambientAuth, which both contexts see.

Passwords reach the server as environment variables (the Secret's keys,
prefixed: ACP_NATS_PASSWORD_<key>) that auth.conf references as $VARIABLES,
so auth.conf holds no secret and an existing Secret works without lookup.
*/}}

{{/* acp.natsUsersEnabled is "true" when the bundled NATS requires the per-service users. */}}
{{- define "acp.natsUsersEnabled" -}}
{{- if and .Values.nats.enabled (dig "ambientAuth" "enabled" false .Values.nats) -}}true{{- end -}}
{{- end -}}

{{/*
acp.natsUser is the NATS user of a pod: (dict "component" "informer" "track"
"shadow"). The shadow informer has its own user, so a canary cannot write the
live stream; every other canary or shadow shares its service's user.
*/}}
{{- define "acp.natsUser" -}}
{{- if and (eq .component "informer") (eq (default "" .track) "shadow") -}}
informer-shadow
{{- else -}}
{{- .component -}}
{{- end -}}
{{- end -}}

{{/*
acp.natsPasswordKey is the passwords Secret's key of a user: "-" becomes "_",
so that the key, prefixed, is a valid environment variable and NATS variable
name on the server.
*/}}
{{- define "acp.natsPasswordKey" -}}
{{- replace "-" "_" . -}}
{{- end -}}

{{/* acp.natsPasswordEnvPrefix prefixes the Secret's keys in the NATS server's environment. */}}
{{- define "acp.natsPasswordEnvPrefix" -}}ACP_NATS_PASSWORD_{{- end -}}

{{/*
acp.natsPasswordsSecretName: (dict "release" .Release.Name "auth"
nats.ambientAuth). The existing Secret when set, else
"<release>-nats-passwords" (cut at 63 characters, the object name limit this
chart uses everywhere). Shared by both charts' contexts.
*/}}
{{- define "acp.natsPasswordsSecretName" -}}
{{- $existing := dig "existingSecret" "" (default dict .auth) -}}
{{- if $existing -}}
{{- $existing -}}
{{- else -}}
{{- printf "%s-nats-passwords" .release | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* acp.natsPasswordsSecret is acp.natsPasswordsSecretName in this chart's context. */}}
{{- define "acp.natsPasswordsSecret" -}}
{{- include "acp.natsPasswordsSecretName" (dict "release" .Release.Name "auth" .Values.nats.ambientAuth) -}}
{{- end -}}

{{/* acp.natsAuthConfigMapName: (release name). The ConfigMap holding auth.conf; shared by both charts' contexts. */}}
{{- define "acp.natsAuthConfigMapName" -}}
{{- printf "%s-nats-auth" . | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
acp.natsAuthDir / acp.natsAuthMount: where the NATS server container mounts auth.conf. The
nats chart keeps nats.conf in /etc/nats-config and resolves includes
relative to it; its config reloader watches mounts under /etc/, so a changed
permission set is applied without a restart.
*/}}
{{- define "acp.natsAuthDir" -}}nats-ambient-auth{{- end -}}
{{- define "acp.natsAuthMount" -}}/etc/{{ include "acp.natsAuthDir" . }}{{- end -}}

{{/*
acp.natsPermissions is files/nats-permissions.yaml with its placeholders
filled from the informer canary's values, as JSON: {"users": {name: {publish:
[...], subscribe: [...]}}}.
*/}}
{{- define "acp.natsPermissions" -}}
{{- $c := .Values.informer.canary -}}
{{- $suffix := printf "-%s" (lower (replace "_" "-" $c.eventsStream)) -}}
{{- $text := .Files.Get "files/nats-permissions.yaml" -}}
{{- $text = $text | replace "<shadow-prefix>" $c.subjectPrefix | replace "<shadow-stream>" $c.eventsStream | replace "<shadow-suffix>" $suffix -}}
{{- $perms := fromYaml $text -}}
{{- if or (not $perms.users) (hasKey $perms "Error") -}}
{{- fail "files/nats-permissions.yaml: no users (bad YAML?)" -}}
{{- end -}}
{{- toJson $perms -}}
{{- end -}}

{{/*
acp.natsAuthConf is the server's authorization block (nats.conf syntax): one
user per entry of files/nats-permissions.yaml, its password the environment
variable ACP_NATS_PASSWORD_<key>, and publish/subscribe allow-lists (whatever
is not listed is denied). Subjects are quoted: unquoted, a "$JS..." subject
would read as a variable.
*/}}
{{- define "acp.natsAuthConf" -}}
{{- $perms := include "acp.natsPermissions" . | fromJson -}}
# Rendered by the ambient-control-plane chart from files/nats-permissions.yaml.
# Passwords are environment variables of the server: ACP_NATS_PASSWORD_<user,
# "-" as "_">. Connections without a listed user are refused.
authorization {
  users: [
{{- range $user, $p := $perms.users }}
    {
      user: {{ $user | toJson }}
      password: ${{ include "acp.natsPasswordEnvPrefix" $ }}{{ include "acp.natsPasswordKey" $user }}
      permissions: {
        publish: {allow: [
          {{- include "acp.natsSubjects" $p.publish | nindent 10 }}
        ]}
        subscribe: {allow: [
          {{- include "acp.natsSubjects" $p.subscribe | nindent 10 }}
        ]}
      }
    }
{{- end }}
  ]
}
{{- end -}}

{{/* acp.natsSubjects: a list of subjects, one quoted subject a line, comma-separated. */}}
{{- define "acp.natsSubjects" -}}
{{- $q := list -}}
{{- range . }}{{ $q = append $q (printf "%q" .) }}{{ end -}}
{{- join ",\n" $q -}}
{{- end -}}

{{/* acp.natsUserNames lists the users of files/nats-permissions.yaml (sorted). */}}
{{- define "acp.natsUserNames" -}}
{{- $perms := include "acp.natsPermissions" . | fromJson -}}
{{- keys $perms.users | sortAlpha | toJson -}}
{{- end -}}

{{/*
The "acp.natsServer.*" templates run in the nats chart's context (see the
top of this file) from the $tplYaml hooks in values.yaml; each renders
nothing when nats.ambientAuth.enabled is false.
*/}}

{{- /*
Not dig: in the nats chart's context .Values is a chartutil.Values, which
dig does not take ("interface conversion"), failing the whole render.
*/ -}}
{{- define "acp.natsServer.enabled" -}}
{{- if (.Values.ambientAuth | default dict).enabled -}}true{{- end -}}
{{- end -}}

{{/* acp.natsServer.configMerge adds the include of auth.conf to nats.conf (the nats chart turns a "...$include" key into an include directive). */}}
{{- define "acp.natsServer.configMerge" -}}
{{- if include "acp.natsServer.enabled" . -}}
ambientAuth$include: {{ printf "../%s/auth.conf" (include "acp.natsAuthDir" .) | quote }}
{{- end -}}
{{- end -}}

{{/* acp.natsServer.containerMerge gives the server every password as ACP_NATS_PASSWORD_<key>. */}}
{{- define "acp.natsServer.containerMerge" -}}
{{- if include "acp.natsServer.enabled" . -}}
envFrom:
  - prefix: {{ include "acp.natsPasswordEnvPrefix" . }}
    secretRef:
      name: {{ include "acp.natsPasswordsSecretName" (dict "release" .Release.Name "auth" .Values.ambientAuth) | quote }}
{{- end -}}
{{- end -}}

{{/* acp.natsServer.containerPatch mounts auth.conf into the server container (JSON patch operations). */}}
{{- define "acp.natsServer.containerPatch" -}}
{{- if include "acp.natsServer.enabled" . -}}
- op: add
  path: /volumeMounts/-
  value:
    name: ambient-auth
    mountPath: {{ include "acp.natsAuthMount" . }}
    readOnly: true
{{- end -}}
{{- end -}}

{{/* acp.natsServer.podPatch adds the auth.conf ConfigMap volume to the NATS pods (JSON patch operations). */}}
{{- define "acp.natsServer.podPatch" -}}
{{- if include "acp.natsServer.enabled" . -}}
- op: add
  path: /spec/volumes/-
  value:
    name: ambient-auth
    configMap:
      name: {{ include "acp.natsAuthConfigMapName" .Release.Name | quote }}
{{- end -}}
{{- end -}}
