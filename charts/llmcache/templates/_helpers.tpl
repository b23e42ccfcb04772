{{/* Names, labels and small helpers shared by every template. */}}

{{- define "llmcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-scoped base name of every object the chart creates. */}}
{{- define "llmcache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "llmcache.operatorName" -}}
{{- printf "%s-operator" (include "llmcache.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmcache.webhookServiceName" -}}
{{- printf "%s-webhook" (include "llmcache.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmcache.webhookSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "llmcache.fullname" .)) .Values.webhook.tlsSecretName | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmcache.webhookConfigurationName" -}}
{{- default (printf "%s-%s" (include "llmcache.fullname" .) .Release.Namespace | trimSuffix "-") .Values.webhook.configurationName | trunc 253 }}
{{- end }}

{{- define "llmcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmcache.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "llmcache.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "llmcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmcache
{{- end }}

{{/* Labels of the operator's own objects (Deployment, pod, ServiceAccount). */}}
{{- define "llmcache.operatorLabels" -}}
{{ include "llmcache.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels that select the operator pod; they never change across upgrades. */}}
{{- define "llmcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to the chart's appVersion. */}}
{{- define "llmcache.image" -}}
{{- $image := index . 0 }}
{{- $default := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $default $image.tag | toString) }}
{{- end }}
{{- end }}

{{/* True when the operator watches the whole cluster (no namespace list given). */}}
{{- define "llmcache.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}
