{{/*
Names. With the release called "spinscale" (as in the README), every object has the name the
kustomize kit (deploy/base) gives it.
*/}}
{{- define "spinscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spinscale.fullname" -}}
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

{{- define "spinscale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Pod selector: the kit's app.kubernetes.io/name plus the release. */}}
{{- define "spinscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spinscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Every object's labels: the selector labels plus Helm's chart and manager labels. */}}
{{- define "spinscale.labels" -}}
{{ include "spinscale.selectorLabels" . }}
helm.sh/chart: {{ include "spinscale.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "spinscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spinscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret whose `token` key is the peer token: the chart's own, or peerToken.existingSecret. */}}
{{- define "spinscale.peerTokenSecret" -}}
{{- default (printf "%s-peer-token" (include "spinscale.fullname" .)) .Values.peerToken.existingSecret }}
{{- end }}

{{- define "spinscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The directories the Secrets are mounted at. */}}
{{- define "spinscale.peerTokenDir" -}}/var/run/spinscale/peer{{- end }}
{{- define "spinscale.tlsDir" -}}/var/run/spinscale/tls{{- end }}

{{/*
NetworkPolicy `from` entries: one namespaceSelector per namespace, then extraFrom.
Arguments: (list $namespaces $extraFrom).
*/}}
{{- define "spinscale.namespacePeers" -}}
{{- range (index . 0) }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ . | quote }}
{{- end }}
{{- with (index . 1) }}
{{ toYaml . }}
{{- end }}
{{- end }}
