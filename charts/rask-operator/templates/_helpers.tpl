{{/*
The chart's name: .Values.nameOverride or "rask-operator". Kubernetes names stop at 63
characters (DNS labels), so every name here is cut there.
*/}}
{{- define "rask-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name: .Values.fullnameOverride, else "<release>-<name>", or just
"<release>" when the release name already contains the chart name.
*/}}
{{- define "rask-operator.fullname" -}}
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

{{/* "<chart>-<version>", the value of the helm.sh/chart label ("+" is not allowed in labels). */}}
{{- define "rask-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object of the release carries. */}}
{{- define "rask-operator.labels" -}}
helm.sh/chart: {{ include "rask-operator.chart" . }}
{{ include "rask-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rask
{{- end }}

{{/*
The labels that select the operator's pods: the Deployment's selector and the metrics Service's.
They never change after install (a Deployment's selector is immutable).
*/}}
{{- define "rask-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rask-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "rask-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rask-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference; the tag defaults to the chart's appVersion. */}}
{{- define "rask-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The metrics Service: "<fullname>-metrics", within the 63 characters of a Service name. */}}
{{- define "rask-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "rask-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}
