{{/*
Objects every service has, written once and called from templates/<service>/.
*/}}

{{/*
acp.deployment renders one Deployment of a component. Arguments (dict):
  context   the root context ($)
  component "kube-reconciler", ...
  track     stable | canary | shadow (a selector label: one Deployment per track)
  name      object name
  replicas  replica count; omitted when the stable track has an HPA
  override  canary image override (dict repository tag) or nil
  api       true when the service calls the ambient API (mounts the token, AMBIENT_API_TOKEN_FILE)
  automountToken  true for the kube-reconciler, and the agui-proxy in authz mode kube
  env, ports, volumes, volumeMounts  extra YAML list items (strings)
  canaryEnv extra env of this track only (list of EnvVar)

Every track of a component also gets global.extraVolumes and
global.extraVolumeMounts, then the component's own extraVolumes and
extraVolumeMounts (mounted into its one container), after the chart's
volumes; acp.checkVolumes refuses what the API server would refuse.

A Deployment whose MEMBER_ID is a literal (a consumer canary's
canary.memberId) is replaced with the Recreate strategy: a rolling update
would start the new pod beside the old one under the same member id, and two
live members must never share one (runner-manager would take the other's
session claims for its own, find no local runner and start the sessions
again, and the old pod's shutdown would release the new pod's records). With
Recreate a rollout deletes the old pod and waits until it has terminated
before it creates the new one. Pods whose member id is their pod name keep
rolling updates.
*/}}
{{- define "acp.deployment" -}}
{{- $ctx := .context -}}
{{- $svc := get $ctx.Values (include "acp.valuesKey" .component) -}}
{{- $labelArgs := dict "context" $ctx "component" .component "track" .track -}}
{{- $mp := int $ctx.Values.global.metricsPort -}}
{{- $natsArgs := dict "context" $ctx "component" .component "track" .track -}}
{{- $secretArgs := dict "context" $ctx "component" .component "api" .api -}}
{{- $extraVolumes := concat (default list $ctx.Values.global.extraVolumes) (default list $svc.extraVolumes) -}}
{{- $extraVolumeMounts := concat (default list $ctx.Values.global.extraVolumeMounts) (default list $svc.extraVolumeMounts) -}}
{{- include "acp.checkVolumes" (dict "key" (include "acp.valuesKey" .component) "volumes" (concat (list (dict "name" "tmp")) (fromYamlArray (include "acp.natsVolume" $natsArgs)) (fromYamlArray (include "acp.secretsVolume" $secretArgs)) (fromYamlArray (default "" .volumes)) $extraVolumes) "mounts" (concat (list (dict "name" "tmp" "mountPath" "/tmp")) (fromYamlArray (include "acp.natsVolumeMount" $natsArgs)) (fromYamlArray (include "acp.secretsVolumeMount" $secretArgs)) (fromYamlArray (default "" .volumeMounts)) $extraVolumeMounts)) -}}
{{- /*
OTEL_RESOURCE_ATTRIBUTES of an extraEnv (the service's, then the track's) is
merged into the chart's one variable (acp.otelResourceAttributes), not set a
second time.
*/ -}}
{{- $key := include "acp.valuesKey" .component -}}
{{- $userAttrs := list -}}
{{- $extraEnv := list -}}
{{- $trackEnv := list -}}
{{- range $where, $src := dict "1" (list (printf "%s.extraEnv" $key) $svc.extraEnv) "2" (list (printf "%s.canary.extraEnv" $key) .canaryEnv) -}}
{{- range (last $src | default list) -}}
{{- if eq (toString .name) "OTEL_RESOURCE_ATTRIBUTES" -}}
{{- if or (not (hasKey . "value")) (hasKey . "valueFrom") -}}
{{- fail (printf "%s: OTEL_RESOURCE_ATTRIBUTES must have a literal value, which the chart merges with its own (the pod's k8s.* attributes); put attributes of every service in global.otelResourceAttributes" (first $src)) -}}
{{- end -}}
{{- with trim (toString .value) -}}
{{- $userAttrs = append $userAttrs . -}}
{{- end -}}
{{- else if eq $where "1" -}}
{{- $extraEnv = append $extraEnv . -}}
{{- else -}}
{{- $trackEnv = append $trackEnv . -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $fixedMember := false -}}
{{- range concat (default list .canaryEnv) (default list $svc.extraEnv) -}}
{{- if and (eq (toString .name) "MEMBER_ID") (hasKey . "value") -}}
{{- $fixedMember = true -}}
{{- end -}}
{{- end -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "acp.labels" $labelArgs | nindent 4 }}
spec:
  {{- if not (and (eq .track "stable") $svc.hpa.enabled) }}
  replicas: {{ int .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- if $fixedMember }}
  strategy:
    type: Recreate
  {{- end }}
  selector:
    matchLabels:
      {{- include "acp.selectorLabels" $labelArgs | nindent 6 }}
      ambient-code.io/track: {{ .track }}
  template:
    metadata:
      labels:
        {{- include "acp.labels" $labelArgs | nindent 8 }}
      annotations:
        checksum/config: {{ include (printf "acp.config.%s" .component) $ctx | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "acp.serviceAccountName" (dict "context" $ctx "component" .component) }}
      automountServiceAccountToken: {{ .automountToken | default false }}
      enableServiceLinks: false
      securityContext:
        {{- include "acp.podSecurityContext" (dict "context" $ctx "component" .component) | nindent 8 }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . | quote }}
      {{- end }}
      {{- with $ctx.Values.global.imagePullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . | quote }}
        {{- end }}
      {{- end }}
      terminationGracePeriodSeconds: {{ int $svc.terminationGracePeriodSeconds }}
      containers:
        - name: {{ .component }}
          image: {{ include "acp.image" (dict "context" $ctx "image" $svc.image "override" .override) | quote }}
          imagePullPolicy: {{ default $ctx.Values.global.image.pullPolicy $svc.image.pullPolicy }}
          ports:
            - name: http-metrics
              containerPort: {{ $mp }}
              protocol: TCP
            {{- with .ports }}
            {{- . | nindent 12 }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "acp.configName" (dict "context" $ctx "component" .component) }}
          env:
            {{- include "acp.otelPodEnv" $ctx | nindent 12 }}
            {{- include "acp.secretEnv" (dict "context" $ctx "component" .component "track" .track "api" .api) | nindent 12 }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $trackEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- /* Last: the kubelet expands $(NAME) only to variables defined before. */}}
            - name: OTEL_RESOURCE_ATTRIBUTES
              value: {{ include "acp.otelResourceAttributes" (dict "context" $ctx "user" $userAttrs) | quote }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http-metrics
            {{- toYaml $svc.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http-metrics
            {{- toYaml $svc.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- include "acp.containerSecurityContext" (dict "context" $ctx "component" .component) | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- include "acp.natsVolumeMount" $natsArgs | nindent 12 }}
            {{- include "acp.secretsVolumeMount" $secretArgs | nindent 12 }}
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- include "acp.natsVolume" $natsArgs | nindent 8 }}
        {{- include "acp.secretsVolume" $secretArgs | nindent 8 }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "acp.topologySpread" (dict "context" $ctx "component" .component "track" .track) }}
      topologySpreadConstraints:
        {{- . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/*
acp.checkVolumes fails on the pod volumes the API server would refuse, naming
the values that caused it: two volumes of one name, two mounts at one path,
a mount of a volume the pod does not have. The chart's own volumes (tmp, the
NATS credentials, acp-secrets, the runner workspaces, the agui-proxy tokens)
come first,
so an extra volume or mount that takes one of their names or paths fails
here. (dict "key" "informer" "volumes" (list of Volume) "mounts" (list of VolumeMount))
*/}}
{{- define "acp.checkVolumes" -}}
{{- $where := printf "global.extraVolumes/extraVolumeMounts or %s.extraVolumes/extraVolumeMounts" .key -}}
{{- $names := dict -}}
{{- range .volumes -}}
{{- $n := toString .name -}}
{{- if hasKey $names $n -}}
{{- fail (printf "%s: two volumes are named %q (the chart's own volumes are tmp, nats-password or nats-creds, acp-secrets, workspaces and agui-tokens)" $where $n) -}}
{{- end -}}
{{- $_ := set $names $n true -}}
{{- end -}}
{{- $paths := dict -}}
{{- range .mounts -}}
{{- $p := trimSuffix "/" (toString .mountPath) -}}
{{- if hasKey $paths $p -}}
{{- fail (printf "%s: two volumes are mounted at %q (the chart's own mounts include /tmp)" $where (toString .mountPath)) -}}
{{- end -}}
{{- $_ := set $paths $p true -}}
{{- if not (hasKey $names (toString .name)) -}}
{{- fail (printf "%s: the mount at %q names volume %q, which the pod does not have (add it to extraVolumes)" $where (toString .mountPath) (toString .name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* acp.configmap renders a component's environment ConfigMap. (dict "context" $ "component" "informer") */}}
{{- define "acp.configmap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "acp.configName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
data:
  {{- include (printf "acp.config.%s" .component) .context | nindent 2 }}
{{- end -}}

{{/* acp.serviceaccount renders a component's ServiceAccount when serviceAccount.create is true. */}}
{{- define "acp.serviceaccount" -}}
{{- $svc := get .context.Values (include "acp.valuesKey" .component) -}}
{{- if $svc.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "acp.serviceAccountName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
  {{- with $svc.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# Pods mount no token unless they talk to Kubernetes: the kube-reconciler,
# and the agui-proxy with aguiProxy.authz.mode=kube (SubjectAccessReviews).
automountServiceAccountToken: {{ or (eq .component "kube-reconciler") (and (eq .component "agui-proxy") (eq .context.Values.aguiProxy.authz.mode "kube")) }}
{{- end -}}
{{- end -}}

{{/* acp.pdb renders the stable track's PodDisruptionBudget. */}}
{{- define "acp.pdb" -}}
{{- $svc := get .context.Values (include "acp.valuesKey" .component) -}}
{{- if $svc.pdb.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "acp.componentName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.pdb.maxUnavailable }}
  {{- /*
  Readiness depends on systems outside the pod (the API, NATS, the CRD): with
  the default policy (IfHealthyBudget) a release whose pods are all unready
  would block every eviction, and a node drain would hang. An unready pod
  serves nothing; let it go. Beta (on by default) since Kubernetes 1.27, GA
  in 1.31; the chart needs 1.29.
  */}}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "acp.selectorLabels" . | nindent 6 }}
      ambient-code.io/track: stable
{{- end -}}
{{- end -}}

{{/* acp.hpa renders the stable track's HorizontalPodAutoscaler. */}}
{{- define "acp.hpa" -}}
{{- $svc := get .context.Values (include "acp.valuesKey" .component) -}}
{{- if $svc.hpa.enabled -}}
{{- if gt (int $svc.hpa.minReplicas) (int $svc.hpa.maxReplicas) -}}
{{- fail (printf "%s.hpa.minReplicas must not exceed maxReplicas" (include "acp.valuesKey" .component)) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "acp.componentName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "acp.componentName" . }}
  minReplicas: {{ int $svc.hpa.minReplicas }}
  maxReplicas: {{ int $svc.hpa.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int $svc.hpa.targetCPUUtilizationPercentage }}
{{- end -}}
{{- end -}}

{{/*
acp.metricsService renders the Service in front of every pod of a component
(all tracks, the shadow included) on the metrics port: the ServiceMonitor and
`helm test` use it.
*/}}
{{- define "acp.metricsService" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "acp.componentName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "acp.selectorLabels" . | nindent 4 }}
  ports:
    - name: http-metrics
      port: {{ int .context.Values.global.metricsPort }}
      targetPort: http-metrics
      protocol: TCP
{{- end -}}

{{/*
acp.serviceMonitor renders a Prometheus Operator ServiceMonitor for a
component. It scrapes every track and labels each target track=<the pod's
ambient-code.io/track> (stable, canary or shadow): the alert rules and the
dashboard (files/monitoring/) leave the shadow track out.
*/}}
{{- define "acp.serviceMonitor" -}}
{{- $m := .context.Values.metrics.serviceMonitor -}}
{{- if $m.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "acp.componentName" . }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "acp.labels" . | nindent 4 }}
    {{- with $m.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "acp.selectorLabels" . | nindent 6 }}
  namespaceSelector:
    matchNames:
      - {{ .context.Release.Namespace }}
  endpoints:
    - port: http-metrics
      path: /metrics
      interval: {{ $m.interval }}
      scrapeTimeout: {{ $m.scrapeTimeout }}
      relabelings:
        - sourceLabels: [__meta_kubernetes_pod_label_ambient_code_io_track]
          targetLabel: track
          action: replace
{{- end -}}
{{- end -}}
