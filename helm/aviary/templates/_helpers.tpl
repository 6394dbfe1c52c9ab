{{/*
Names, labels and the pieces shared by the edge Deployment and the session
StatefulSet: the rendered aviary.toml and the pod template.
*/}}

{{- define "aviary.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of every resource. Truncated so that "<fullname>-session-NN"
pod names and "<fullname>-edge-metrics" stay within 63 characters.
*/}}
{{- define "aviary.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aviary.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "aviary.labels" -}}
helm.sh/chart: {{ include "aviary.chart" . }}
{{ include "aviary.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aviary
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aviary.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aviary.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: (dict "root" $ "component" "edge"|"session"). */}}
{{- define "aviary.componentLabels" -}}
{{ include "aviary.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aviary.componentSelectorLabels" -}}
{{ include "aviary.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "aviary.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aviary.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aviary.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* "host:port" for a listener, with IPv6 hosts in brackets: (list $ port). */}}
{{- define "aviary.listen" -}}
{{- $host := (index . 0).Values.listenAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int (index . 1)) }}
{{- else }}
{{- printf "%s:%d" $host (int (index . 1)) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the client TLS certificate, or "". */}}
{{- define "aviary.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "aviary.fullname" .) }}
{{- end }}
{{- end }}

{{/*
terminationGracePeriodSeconds of a component: preStop sleep + shutdown grace +
margin, or the explicit override (refused if shorter than the drain needs).
*/}}
{{- define "aviary.terminationGrace" -}}
{{- $d := .drain }}
{{- $need := add (int $d.preStopSleepSeconds) (int $d.shutdownGraceSeconds) (int $d.marginSeconds) }}
{{- if kindIs "invalid" $d.terminationGracePeriodSeconds }}
{{- $need }}
{{- else if lt (int $d.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "%s.drain.terminationGracePeriodSeconds (%d) is shorter than preStopSleepSeconds + shutdownGraceSeconds + marginSeconds (%d): the kubelet would kill the process mid-drain" .component (int $d.terminationGracePeriodSeconds) (int $need)) }}
{{- else }}
{{- int $d.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Checks that span several values (the schema checks each value alone). */}}
{{- define "aviary.validate" -}}
{{- if and .Values.tls.existingSecret .Values.tls.certManager.enabled }}
{{- fail "tls.existingSecret and tls.certManager.enabled are exclusive: choose one source for the certificate" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name (an Issuer or ClusterIssuer)" }}
{{- end }}
{{- if and .Values.scylla.username (not .Values.scylla.existingSecret) }}
{{- fail "scylla.username needs scylla.existingSecret (Aviary takes the CQL user name and password together)" }}
{{- end }}
{{- if and .Values.scylla.existingSecret (not .Values.scylla.username) }}
{{- fail "scylla.existingSecret needs scylla.username (Aviary takes the CQL user name and password together)" }}
{{- end }}
{{- if contains ";" .Values.scylla.replication }}
{{- fail "scylla.replication must not contain ';'" }}
{{- end }}
{{- end }}

{{/*
aviary.toml for one role: (dict "root" $ "role" "edge"|"session").
Numbers go through `int` (values arrive as floats); strings through toJson,
whose escapes are valid in TOML basic strings.
*/}}
{{- define "aviary.config" -}}
{{- $v := .root.Values }}
{{- $c := $v.config }}
{{- $comp := index $v .role }}
{{- $edge := eq .role "edge" -}}
# aviary.toml for {{ .role }} nodes, rendered by the aviary Helm chart from its values.
# Set per pod through the environment (AVIARY__SECTION__KEY): server.node_id (the
# pod name){{ if not $edge }}, cluster.grpc_advertise (how peers reach the pod){{ end }}{{ if $v.redis.existingSecret }},
# cluster.redis_url (the URL below with the password from a Secret){{ end }}.
# `aviary config dump` in a pod prints the effective configuration.

[server]
domains = {{ $c.server.domains | toJson }}
data_dir = "/var/lib/aviary"
workers = {{ int $c.server.workers }}
max_resources_per_account = {{ int $c.server.maxResourcesPerAccount }}
shutdown_grace = "{{ int $comp.drain.shutdownGraceSeconds }}s"

[admin]
listen = {{ include "aviary.listen" (list .root $v.admin.port) | quote }}
{{- if $edge }}

[c2s]
listen = [{{ include "aviary.listen" (list .root 5222) | quote }}]
listen_tls = [{{ include "aviary.listen" (list .root 5223) | quote }}]
require_tls = {{ $c.c2s.requireTls }}
negotiation_timeout = {{ $c.c2s.negotiationTimeout | toJson }}
idle_timeout = {{ $c.c2s.idleTimeout | toJson }}
keepalive_interval = {{ $c.c2s.keepaliveInterval | toJson }}
max_stanza_size = {{ int $c.c2s.maxStanzaSize }}
max_stanza_size_pre_auth = {{ int $c.c2s.maxStanzaSizePreAuth }}
write_high_watermark = {{ int $c.c2s.writeHighWatermark }}
write_timeout = {{ $c.c2s.writeTimeout | toJson }}
{{- if include "aviary.tlsSecretName" .root }}

[tls]
certificate = "/etc/aviary/tls/tls.crt"
key = "/etc/aviary/tls/tls.key"
{{- end }}
{{- end }}

[auth]
scram_iterations = {{ int $c.auth.scramIterations }}
max_failures_per_connection = {{ int $c.auth.maxFailuresPerConnection }}
max_failures_per_account = {{ int $c.auth.maxFailuresPerAccount }}
failure_window = {{ $c.auth.failureWindow | toJson }}

[registration]
enabled = {{ $c.registration.enabled }}
per_ip = {{ int $c.registration.perIp }}
window = {{ $c.registration.window | toJson }}

[version]
enabled = {{ $c.version.enabled }}
show_os = {{ $c.version.showOs }}

[im]
presence = {{ $c.im.presence }}
messages = {{ $c.im.messages }}
offline_max = {{ int $c.im.offlineMax }}
roster_max_items = {{ int $c.im.rosterMaxItems }}

[store]
backend = "cql"
cql_contact_points = {{ $v.scylla.contactPoints | toJson }}
cql_keyspace = {{ $v.scylla.keyspace | toJson }}
cql_replication = {{ $v.scylla.replication | toJson }}
cql_consistency = {{ $v.scylla.consistency | toJson }}
cql_timeout = {{ $v.scylla.timeout | toJson }}
{{- if $v.scylla.existingSecret }}
cql_username = {{ $v.scylla.username | toJson }}
cql_password_file = "/etc/aviary/cql/password"
{{- end }}
offline_ttl = {{ $v.scylla.offlineTtl | toJson }}
{{- with $v.scylla.keyspaceOptions }}
# Keyspace options (scylla.keyspaceOptions) are not read by this Aviary release:
# create the keyspace beforehand with
#   CREATE KEYSPACE IF NOT EXISTS {{ $v.scylla.keyspace }} WITH replication = {{ $v.scylla.replication }} AND {{ . }};
{{- end }}

[cluster]
role = {{ .role | quote }}
{{- if not $edge }}
grpc_listen = {{ include "aviary.listen" (list .root $v.session.grpcPort) | quote }}
{{- end }}
redis_url = {{ $v.redis.url | toJson }}
redis_prefix = {{ $c.cluster.redisPrefix | toJson }}
redis_timeout = {{ $c.cluster.redisTimeout | toJson }}
lease_ttl = {{ $c.cluster.leaseTtl | toJson }}
lease_tick = {{ $c.cluster.leaseTick | toJson }}

[log]
level = {{ $c.log.level | toJson }}
format = {{ $c.log.format | toJson }}
{{- with $c.extraConfig }}

# config.extraConfig
{{ . }}
{{- end }}
{{- end }}

{{/* Redis URL with "$(AVIARY_REDIS_PASSWORD)" inserted after the scheme. */}}
{{- define "aviary.redisUrlWithPassword" -}}
{{- $url := .Values.redis.url }}
{{- $parts := splitn "://" 2 $url }}
{{- printf "%s://%s:$(AVIARY_REDIS_PASSWORD)@%s" $parts._0 .Values.redis.username $parts._1 }}
{{- end }}

{{/*
The pod template of a component: (dict "root" $ "component" "edge"|"session").
*/}}
{{- define "aviary.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $name := .component }}
{{- $comp := index $v $name }}
{{- $edge := eq $name "edge" }}
{{- $fullname := include "aviary.fullname" $root }}
{{- $tlsSecret := include "aviary.tlsSecretName" $root -}}
metadata:
  labels:
    {{- include "aviary.componentLabels" (dict "root" $root "component" $name) | nindent 4 }}
    {{- with $comp.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.admin.port | int | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $comp.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "aviary.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $comp.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ include "aviary.terminationGrace" (dict "drain" $comp.drain "component" $name) }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  containers:
    - name: aviary
      image: {{ include "aviary.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: ["serve", "--config", "/etc/aviary/aviary.toml"]
      env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: POD_IP
          valueFrom:
            fieldRef:
              fieldPath: status.podIP
        # `kubectl exec ... aviary user add` finds the configuration too.
        - name: AVIARY_CONFIG
          value: /etc/aviary/aviary.toml
        - name: AVIARY__SERVER__NODE_ID
          value: $(POD_NAME)
        {{- if not $edge }}
        - name: AVIARY__CLUSTER__GRPC_ADVERTISE
          {{- if eq $comp.grpcAdvertise "dns" }}
          value: {{ printf "$(POD_NAME).%s-session.$(POD_NAMESPACE).svc.%s:%d" $fullname $v.clusterDomain (int $comp.grpcPort) }}
          {{- else }}
          value: {{ printf "$(POD_IP):%d" (int $comp.grpcPort) }}
          {{- end }}
        {{- end }}
        {{- if $v.redis.existingSecret }}
        - name: AVIARY_REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ $v.redis.existingSecret }}
              key: {{ $v.redis.existingSecretPasswordKey }}
        - name: AVIARY__CLUSTER__REDIS_URL
          value: {{ include "aviary.redisUrlWithPassword" $root | quote }}
        {{- end }}
        {{- with $comp.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- if $edge }}
        - name: xmpp-starttls
          containerPort: 5222
          protocol: TCP
        - name: xmpp-directtls
          containerPort: 5223
          protocol: TCP
        {{- if $comp.websocket.enabled }}
        - name: xmpp-websocket
          containerPort: {{ $comp.websocket.containerPort }}
          protocol: TCP
        {{- end }}
        {{- else }}
        - name: grpc
          containerPort: {{ $comp.grpcPort }}
          protocol: TCP
        {{- end }}
        - name: admin
          containerPort: {{ $v.admin.port }}
          protocol: TCP
      {{- with $comp.startupProbe }}
      startupProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $comp.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if gt (int $comp.drain.preStopSleepSeconds) 0 }}
      lifecycle:
        preStop:
          {{- if $comp.drain.useSleepAction }}
          sleep:
            seconds: {{ int $comp.drain.preStopSleepSeconds }}
          {{- else }}
          exec:
            command: ["sleep", "{{ int $comp.drain.preStopSleepSeconds }}"]
          {{- end }}
      {{- end }}
      {{- with $comp.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/aviary
          readOnly: true
        - name: data
          mountPath: /var/lib/aviary
        - name: tmp
          mountPath: /tmp
        {{- with $comp.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    # aviary.toml, the client certificate and the CQL password in one
    # read-only directory, /etc/aviary.
    - name: config
      projected:
        defaultMode: 0440
        sources:
          - configMap:
              name: {{ $fullname }}-config
              items:
                - key: {{ $name }}.toml
                  path: aviary.toml
          {{- if and $edge $tlsSecret }}
          - secret:
              name: {{ $tlsSecret }}
              items:
                - key: tls.crt
                  path: tls/tls.crt
                - key: tls.key
                  path: tls/tls.key
          {{- end }}
          {{- if $v.scylla.existingSecret }}
          - secret:
              name: {{ $v.scylla.existingSecret }}
              items:
                - key: {{ $v.scylla.existingSecretPasswordKey }}
                  path: cql/password
          {{- end }}
    - name: data
      emptyDir:
        sizeLimit: {{ $comp.dataSizeLimit }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- with $comp.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $comp.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $comp.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $comp.affinity }}
  affinity:
    {{- toYaml $comp.affinity | nindent 4 }}
  {{- else if eq $comp.podAntiAffinity "soft" }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 100
          podAffinityTerm:
            topologyKey: {{ $comp.podAntiAffinityTopologyKey }}
            labelSelector:
              matchLabels:
                {{- include "aviary.componentSelectorLabels" (dict "root" $root "component" $name) | nindent 16 }}
  {{- else if eq $comp.podAntiAffinity "hard" }}
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: {{ $comp.podAntiAffinityTopologyKey }}
          labelSelector:
            matchLabels:
              {{- include "aviary.componentSelectorLabels" (dict "root" $root "component" $name) | nindent 14 }}
  {{- end }}
  {{- with $comp.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    - {{ toYaml (merge (dict) . (dict "labelSelector" (dict "matchLabels" (include "aviary.componentSelectorLabels" (dict "root" $root "component" $name) | fromYaml)))) | nindent 6 | trim }}
    {{- end }}
  {{- end }}
{{- end }}

{{/* HorizontalPodAutoscaler spec metrics/behavior: (dict "as" .autoscaling). */}}
{{- define "aviary.hpaSpec" -}}
{{- if and (kindIs "invalid" .as.targetCPUUtilizationPercentage) (kindIs "invalid" .as.targetMemoryUtilizationPercentage) }}
{{- fail (printf "%s.autoscaling: set targetCPUUtilizationPercentage and/or targetMemoryUtilizationPercentage" .component) }}
{{- end -}}
minReplicas: {{ int .as.minReplicas }}
maxReplicas: {{ int .as.maxReplicas }}
metrics:
  {{- if not (kindIs "invalid" .as.targetCPUUtilizationPercentage) }}
  - type: Resource
    resource:
      name: cpu
      target:
        type: Utilization
        averageUtilization: {{ int .as.targetCPUUtilizationPercentage }}
  {{- end }}
  {{- if not (kindIs "invalid" .as.targetMemoryUtilizationPercentage) }}
  - type: Resource
    resource:
      name: memory
      target:
        type: Utilization
        averageUtilization: {{ int .as.targetMemoryUtilizationPercentage }}
  {{- end }}
{{- with .as.behavior }}
behavior:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Egress rules shared by both NetworkPolicies. */}}
{{- define "aviary.netpolEgress" -}}
{{- $np := .Values.networkPolicy -}}
egress:
  # gRPC to the session nodes (edges forward stanzas; session nodes talk to peers).
  - to:
      - podSelector:
          matchLabels:
            {{- include "aviary.componentSelectorLabels" (dict "root" . "component" "session") | nindent 12 }}
    ports:
      - port: {{ .Values.session.grpcPort }}
        protocol: TCP
  # Redis.
  - ports:
      {{- range $np.redis.ports }}
      - port: {{ . }}
        protocol: TCP
      {{- end }}
    {{- with $np.redis.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  # ScyllaDB.
  - ports:
      {{- range $np.scylla.ports }}
      - port: {{ . }}
        protocol: TCP
      {{- end }}
    {{- with $np.scylla.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  # DNS.
  - ports:
      - port: 53
        protocol: UDP
      - port: 53
        protocol: TCP
    {{- with $np.dns.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- with $np.extraEgress }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
