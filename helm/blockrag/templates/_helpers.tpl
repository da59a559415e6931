{{/* Names and labels. */}}
{{- define "blockrag.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* At most 40 characters: with "-postgresql" a StatefulSet stays within 52 (its pods' revision
label adds a hash), a CronJob within 52, and KubeRay's generated names within 63. */}}
{{- define "blockrag.fullname" -}}
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

{{- define "blockrag.selectorLabels" -}}
app.kubernetes.io/name: {{ include "blockrag.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "blockrag.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "blockrag.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: blockrag
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "blockrag.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The gRPC port: production.yaml's grpc_options.port, its one owner. */}}
{{- define "blockrag.grpcPort" -}}
{{- $serve := .Files.Get "files/serve.yaml" | fromYaml }}
{{- $serve.grpc_options.port | int }}
{{- end }}

{{- define "blockrag.httpPort" -}}
{{- $serve := .Files.Get "files/serve.yaml" | fromYaml }}
{{- $serve.http_options.port | int }}
{{- end }}

{{- define "blockrag.grpcAddress" -}}
{{ include "blockrag.fullname" . }}-grpc:{{ include "blockrag.grpcPort" . }}
{{- end }}

{{/* Storage: where the index and the KV entries live, and the Secrets holding their credentials. */}}
{{- define "blockrag.databaseUrl" -}}
{{- if .Values.postgresql.enabled }}
{{- printf "postgresql+psycopg://%s@%s-postgresql:5432/%s" .Values.postgresql.auth.username (include "blockrag.fullname" .) .Values.postgresql.auth.database }}
{{- else }}
{{- required "externalDatabase.url is required when postgresql.enabled is false" .Values.externalDatabase.url }}
{{- end }}
{{- end }}

{{- define "blockrag.databaseSecret" -}}
{{- if .Values.postgresql.enabled }}
{{- default (printf "%s-postgresql" (include "blockrag.fullname" .)) .Values.postgresql.auth.existingSecret }}
{{- else }}
{{- required "externalDatabase.existingSecret is required when postgresql.enabled is false" .Values.externalDatabase.existingSecret }}
{{- end }}
{{- end }}

{{- define "blockrag.databaseSecretKey" -}}
{{- if .Values.postgresql.enabled }}password{{ else }}{{ .Values.externalDatabase.passwordKey }}{{ end }}
{{- end }}

{{- define "blockrag.objectStoreUrl" -}}
{{- $o := .Values.objectStore }}
{{- if .Values.minio.enabled }}
{{- printf "s3://%s/%s?endpoint=%s-minio:9000&secure=false" $o.bucket $o.prefix (include "blockrag.fullname" .) }}
{{- else }}
{{- $e := .Values.externalObjectStore }}
{{- $url := printf "s3://%s/%s?endpoint=%s&secure=%t" $o.bucket $o.prefix (required "externalObjectStore.endpoint is required when minio.enabled is false" $e.endpoint) $e.secure }}
{{- if $e.region }}{{ $url = printf "%s&region=%s" $url $e.region }}{{ end }}
{{- $url }}
{{- end }}
{{- end }}

{{- define "blockrag.objectStoreSecret" -}}
{{- if .Values.minio.enabled }}
{{- default (printf "%s-minio" (include "blockrag.fullname" .)) .Values.minio.auth.existingSecret }}
{{- else }}
{{- required "externalObjectStore.existingSecret is required when minio.enabled is false" .Values.externalObjectStore.existingSecret }}
{{- end }}
{{- end }}

{{/* PGPASSWORD (psycopg reads it: the URL carries no password) and the S3 keys, for every pod that
opens the stores. */}}
{{- define "blockrag.storageEnv" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "blockrag.databaseSecret" . }}
      key: {{ include "blockrag.databaseSecretKey" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "blockrag.objectStoreSecret" . }}
      key: {{ if .Values.minio.enabled }}rootUser{{ else }}{{ .Values.externalObjectStore.accessKeyKey }}{{ end }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "blockrag.objectStoreSecret" . }}
      key: {{ if .Values.minio.enabled }}rootPassword{{ else }}{{ .Values.externalObjectStore.secretKeyKey }}{{ end }}
{{- end }}

{{/* The Secret holding the first admin API key: the user's, or the chart's. */}}
{{- define "blockrag.adminKeySecret" -}}
{{- default (printf "%s-admin-key" (include "blockrag.fullname" .)) .Values.auth.adminKey.existingSecret }}
{{- end }}

{{/* An API key in libs/blockrag/auth/api_key.py's shape, brk_<16 hex>_<43 of [A-Za-z0-9_-]>: the
one the existing Secret holds, else a new one. randAlphaNum draws from crypto/rand; 43 characters
of 62 carry 256 bits, as ApiKey.generate's token_urlsafe(32). */}}
{{- define "blockrag.generatedApiKey" -}}
{{- $ctx := index . 0 }}{{ $name := index . 1 }}{{ $key := index . 2 }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace $name }}
{{- if and $existing (index ($existing.data | default dict) $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- printf "brk_%s_%s" (randAlphaNum 32 | sha256sum | trunc 16) (randAlphaNum 43) }}
{{- end }}
{{- end }}

{{/* A generated password that survives upgrades: the one in the existing Secret when there is one. */}}
{{- define "blockrag.keptSecret" -}}
{{- $ctx := index . 0 }}{{ $name := index . 1 }}{{ $key := index . 2 }}{{ $given := index . 3 }}
{{- if $given }}
{{- $given }}
{{- else }}
{{- $existing := lookup "v1" "Secret" $ctx.Release.Namespace $name }}
{{- if and $existing (index ($existing.data | default dict) $key) }}
{{- index $existing.data $key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The Serve config (RayService serveConfigV2): deploy/serve/production.yaml as it is, with these
values over it (README.md, "Serve config"): the stores' URLs, the model, extra PlatformConfig args,
replica counts and no GPUs without GPU workers (in the shared `services:` section), Serve
autoscaling. tests/helm compares the two.
*/}}
{{- define "blockrag.serveConfig" -}}
{{- $serve := .Files.Get "files/serve.yaml" | fromYaml }}
{{- if or (not $serve) $serve.Error }}
{{- fail "files/serve.yaml (deploy/serve/production.yaml) is missing or not YAML" }}
{{- end }}
{{- $deployments := dict "cache_index" "CacheIndexService" "segmentation" "Segmentation" "precompute" "Precompute" "generation" "Generation" "admin" "Admin" }}
{{- $model := dict }}
{{- if not .Values.gpu.enabled }}
{{- $model = dict "device" "cpu" "dtype" "float32" }}
{{- end }}
{{- $model = mergeOverwrite $model (deepCopy .Values.serve.model) }}
{{- $autoscaling := .Values.serve.autoscaling }}
{{- range $app := $serve.applications }}
{{- $args := $app.args }}
{{- $_ := set $args "database_url" (include "blockrag.databaseUrl" $) }}
{{- $_ := set $args "object_store_url" (include "blockrag.objectStoreUrl" $) }}
{{- $_ := set $args "model" (mergeOverwrite (deepCopy $args.model) (deepCopy $model)) }}
{{- $_ := mergeOverwrite $args (deepCopy $.Values.serve.args) }}
{{- /* every application carries every service's resources (PlatformConfig.services): the same
edits in each, so that the args stay one config whichever builder reads them */}}
{{- $services := deepCopy ($args.services | default dict) }}
{{- if not $.Values.gpu.enabled }}
{{- range $name, $resources := $services }}
{{- if hasKey $resources "num_gpus" }}
{{- $_ := set $resources "num_gpus" 0 }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name, $replicas := $.Values.serve.replicas }}
{{- $resources := index $services $name | default dict }}
{{- $_ := set $resources "num_replicas" (int $replicas) }}
{{- $_ := set $services $name $resources }}
{{- end }}
{{- $_ := set $args "services" $services }}
{{- if and $autoscaling.enabled (hasKey $autoscaling.applications $app.name) }}
{{- $d := dict "name" (index $deployments $app.name) "num_replicas" "auto" "autoscaling_config" (index $autoscaling.applications $app.name) }}
{{- $_ := set $app "deployments" (list $d) }}
{{- end }}
{{- end }}
{{- toYaml $serve }}
{{- end }}

{{/* The parts every Ray pod shares: labels, volumes, the Ray container's env and mounts, the metrics sidecar. */}}
{{- define "blockrag.rayPodLabels" -}}
{{ include "blockrag.selectorLabels" . }}
app.kubernetes.io/part-of: blockrag
blockrag.io/metrics: "true"
blockrag.io/job: blockrag
{{- end }}

{{- define "blockrag.rayVolumes" -}}
- name: metrics
  emptyDir: {}
- name: dshm
  emptyDir:
    medium: Memory
{{- with .Values.serve.modelVolume.source }}
- name: model
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "blockrag.rayEnv" -}}
- name: PROMETHEUS_MULTIPROC_DIR
  value: /var/run/blockrag/metrics
{{- if .Values.serve.drain.enabled }}
{{- /* before Ray starts: its workers inherit it, and watch the file `blockrag drain` marks */}}
- name: BLOCKRAG_DRAIN_FILE
  value: /var/run/blockrag/drain/draining
{{- end }}
{{ include "blockrag.storageEnv" . }}
{{- with .Values.ray.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "blockrag.rayMounts" -}}
- name: metrics
  mountPath: /var/run/blockrag/metrics
- name: dshm
  mountPath: /dev/shm
{{- if .Values.serve.modelVolume.source }}
- name: model
  mountPath: {{ .Values.serve.modelVolume.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "blockrag.rayPorts" -}}
- name: serve
  containerPort: {{ include "blockrag.httpPort" . }}
- name: grpc
  containerPort: {{ include "blockrag.grpcPort" . }}
{{- end }}

{{/* Every process of the pod records into the emptyDir; this serves their sum (blockrag.telemetry.exporter). */}}
{{- define "blockrag.metricsSidecar" -}}
- name: metrics
  image: {{ include "blockrag.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["blockrag", "metrics", "serve", "--port", "{{ .Values.serve.metricsPort }}"]
  env:
    - name: PROMETHEUS_MULTIPROC_DIR
      value: /var/run/blockrag/metrics
  ports:
    - name: app-metrics
      containerPort: {{ .Values.serve.metricsPort }}
  volumeMounts:
    - name: metrics
      mountPath: /var/run/blockrag/metrics
  resources:
    requests: {cpu: 50m, memory: 256Mi}
    limits: {memory: 512Mi}
{{- end }}

{{/* gRPC health probes of a worker's Serve proxy. */}}
{{- define "blockrag.grpcProbes" -}}
{{- $p := .Values.ray.probes }}
{{- $grpc := dict "port" (include "blockrag.grpcPort" . | int) "service" $p.service }}
startupProbe:
  grpc: {{ toJson $grpc }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
readinessProbe:
  grpc: {{ toJson $grpc }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
{{- if $p.liveness.enabled }}
livenessProbe:
  grpc: {{ toJson $grpc }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end }}
{{- end }}

{{/* One worker group: (list $ctx groupName values gpus grpcLabel) */}}
{{- define "blockrag.workerGroup" -}}
{{- $ := index . 0 }}{{ $group := index . 1 }}{{ $w := index . 2 }}{{ $gpus := index . 3 }}
- groupName: {{ $group }}
  replicas: {{ $w.replicas }}
  minReplicas: {{ $w.minReplicas }}
  maxReplicas: {{ $w.maxReplicas }}
  rayStartParams: {{ toJson $w.rayStartParams }}
  template:
    metadata:
      labels:
        {{- include "blockrag.rayPodLabels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ $group }}
        blockrag.io/grpc: "true"
    spec:
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $.Values.podSecurityContext }}
      securityContext: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $.Values.serve.drain.enabled }}
      terminationGracePeriodSeconds: {{ add $.Values.serve.drain.gracePeriodSeconds $.Values.serve.drain.terminationMarginSeconds }}
      {{- end }}
      containers:
        - name: ray-worker
          image: {{ include "blockrag.image" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          env: {{- include "blockrag.rayEnv" $ | nindent 12 }}
          ports: {{- include "blockrag.rayPorts" $ | nindent 12 }}
          {{- include "blockrag.grpcProbes" $ | nindent 10 }}
          {{- if $.Values.serve.drain.enabled }}
          lifecycle:
            preStop:
              exec:
                command: ["blockrag", "drain", "--grace-period", "{{ $.Values.serve.drain.gracePeriodSeconds }}"]
          {{- end }}
          resources:
            {{- $res := deepCopy $w.resources }}
            {{- if $gpus }}
            {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" $gpus) ($res.requests | default dict)) }}
            {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" $gpus) ($res.limits | default dict)) }}
            {{- end }}
            {{- toYaml $res | nindent 12 }}
          volumeMounts: {{- include "blockrag.rayMounts" $ | nindent 12 }}
        {{- include "blockrag.metricsSidecar" $ | nindent 8 }}
      volumes: {{- include "blockrag.rayVolumes" $ | nindent 8 }}
{{- end }}
