{{/*
Names, labels and the base server config shared by the templates.
*/}}

{{- define "ferrocast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
`<release>-<chart>`, or the release name alone when it already contains the chart name.
Kept to 40 characters so every derived name (`-server-headless`, ...) stays a valid DNS label.
*/}}
{{- define "ferrocast.fullname" -}}
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

{{- define "ferrocast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferrocast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferrocast.labels" -}}
helm.sh/chart: {{ include "ferrocast.chart" . }}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrocast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "ferrocast.server.selectorLabels" -}}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "ferrocast.operator.selectorLabels" -}}
{{ include "ferrocast.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The server fleet's pods as a label selector string, for the operator. */}}
{{- define "ferrocast.server.selector" -}}
{{- $labels := include "ferrocast.server.selectorLabels" . | fromYaml }}
{{- $pairs := list }}
{{- range $k := keys $labels | sortAlpha }}
{{- $pairs = append $pairs (printf "%s=%s" $k (get $labels $k)) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{- define "ferrocast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The server pods' image: the transcoding variant (with ffmpeg) when image.ffmpeg.enabled. */}}
{{- define "ferrocast.serverImage" -}}
{{- $f := .Values.image.ffmpeg }}
{{- if not $f.enabled }}
{{- include "ferrocast.image" . }}
{{- else if $f.digest }}
{{- printf "%s@%s" .Values.image.repository $f.digest }}
{{- else }}
{{- printf "%s:%s%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) $f.tagSuffix }}
{{- end }}
{{- end }}

{{/* Objects the operator creates and owns; the chart only references them. */}}
{{- define "ferrocast.server.configMapName" -}}
{{ include "ferrocast.fullname" . }}-server-config
{{- end }}
{{- define "ferrocast.server.secretName" -}}
{{ include "ferrocast.fullname" . }}-server-secrets
{{- end }}

{{/* The ConfigMap the chart renders with the fleet-wide base config, read by the operator. */}}
{{- define "ferrocast.server.baseConfigMapName" -}}
{{ include "ferrocast.fullname" . }}-server-base
{{- end }}

{{- define "ferrocast.server.serviceAccountName" -}}
{{- if .Values.server.serviceAccount.create }}
{{- .Values.server.serviceAccount.name | default (printf "%s-server" (include "ferrocast.fullname" .)) }}
{{- else }}
{{- .Values.server.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "ferrocast.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- .Values.operator.serviceAccount.name | default (printf "%s-operator" (include "ferrocast.fullname" .)) }}
{{- else }}
{{- .Values.operator.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{- define "ferrocast.operator.leaseName" -}}
{{- .Values.operator.leaseName | default (printf "%s-operator" (include "ferrocast.fullname" .)) }}
{{- end }}

{{- /* The watched namespaces besides the release namespace, comma-separated (the operator's
--watch-namespaces; the release namespace is left out when listed). */ -}}
{{- define "ferrocast.operator.watchNamespaces" -}}
{{- without (uniq .Values.operator.watchNamespaces) .Release.Namespace | join "," -}}
{{- end }}

{{- define "ferrocast.server.headlessServiceName" -}}
{{ include "ferrocast.fullname" . }}-server-headless
{{- end }}

{{/*
The base server config: `server.config` with the keys the chart owns set from the values,
so the listeners, probes and Services can never disagree with the server: ports, the drain
time, PROXY protocol, and (while client addresses are hidden) the per-address limits.
*/}}
{{- define "ferrocast.server.baseConfig" -}}
{{- $s := .Values.server }}
{{- $config := deepCopy ($s.config | default dict) }}
{{- $owned := dict
  "rtmp" (dict "port" $s.ports.rtmp)
  "http" (dict "port" $s.ports.http)
  "admin" (dict "port" $s.ports.admin)
  "hub" (dict "drain_secs" $s.shutdown.drainSeconds "shutdown_grace_secs" $s.shutdown.graceSeconds)
  "tls" (dict "rtmps_port" $s.ports.rtmps "https_port" $s.ports.https)
  "cluster" (dict
    "dns" (printf "%s.%s.svc.cluster.local:%v" (include "ferrocast.server.headlessServiceName" .) .Release.Namespace $s.ports.admin)
    "secret_file" "/etc/ferrocast/secrets/cluster.secret")
}}
{{- $pp := $s.proxyProtocol }}
{{- if $pp.enabled }}
{{- $_ := set $owned "proxy_protocol" (dict "listeners" $pp.listeners "trusted_cidrs" $pp.trustedCidrs "header_timeout_secs" $pp.headerTimeoutSeconds) }}
{{- else if eq $s.service.externalTrafficPolicy "Cluster" }}
{{- /* Clients arrive with node addresses: a per-address limit would cap the whole fleet. */}}
{{- range $section := list "rtmp" "http" }}
{{- $c := get $config $section | default dict }}
{{- if not (hasKey $c "max_connections_per_ip") }}
{{- $_ := set (get $owned $section) "max_connections_per_ip" ($c.max_connections | default 20000) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml (mergeOverwrite $config $owned) }}
{{- end }}

{{- define "ferrocast.server.terminationGracePeriodSeconds" -}}
{{- $s := .Values.server.shutdown }}
{{- add $s.preStopSleepSeconds $s.drainSeconds $s.graceSeconds 5 }}
{{- end }}

{{/* `prometheus.io/*` pod annotations for annotation-based discovery. */}}
{{- define "ferrocast.scrapeAnnotations" -}}
{{- if .root.Values.metrics.scrapeAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
