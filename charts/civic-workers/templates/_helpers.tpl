{{/* Names and labels shared by every template. */}}

{{- define "civic-workers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "civic-workers.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "civic-workers.operatorName" -}}
{{- printf "%s-operator" (include "civic-workers.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "civic-workers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "civic-workers.labels" -}}
helm.sh/chart: {{ include "civic-workers.chart" . }}
app.kubernetes.io/part-of: civic-workers
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "civic-workers.operatorSelectorLabels" -}}
app.kubernetes.io/name: civic-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "civic-workers.operatorLabels" -}}
{{ include "civic-workers.labels" . }}
app.kubernetes.io/name: civic-operator
app.kubernetes.io/component: operator
{{- end -}}

{{- define "civic-workers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "civic-workers.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "civic-workers.runnerImage" -}}
{{- printf "%s:%s" .Values.image.runner.repository (toString .Values.image.runner.tag) -}}
{{- end -}}

{{- define "civic-workers.operatorImage" -}}
{{- printf "%s:%s" .Values.image.operator.repository (toString .Values.image.operator.tag) -}}
{{- end -}}

{{/* The namespaces the operator serves in namespaced mode: the release's first, no duplicates. */}}
{{- define "civic-workers.watchNamespaces" -}}
{{- $all := list .Release.Namespace -}}
{{- range .Values.operator.watchNamespaces -}}
{{- $all = append $all . -}}
{{- end -}}
{{- join "," (uniq $all) -}}
{{- end -}}

{{/* The database URL from the existing Secret, as one EnvVar. */}}
{{- define "civic-workers.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "database.secret.name is required (an existing Secret with the database URL)" .Values.database.secret.name | quote }}
      key: {{ .Values.database.secret.key | quote }}
- name: RIVER_SCHEMA
  value: {{ .Values.database.schema | quote }}
{{- end -}}

{{/* The URL for what needs a session of its own (migrations: an advisory lock across transactions):
database.listenSecret's direct URL when set, else database.secret's. */}}
{{- define "civic-workers.directDatabaseEnv" -}}
{{- $d := .Values.database -}}
{{- if $d.listenSecret.name }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $d.listenSecret.name | quote }}
      key: {{ $d.listenSecret.key | quote }}
- name: RIVER_SCHEMA
  value: {{ $d.schema | quote }}
{{- else }}
{{- if eq $d.pooler "transaction" }}
{{- fail "database.pooler is transaction: the migration hook and the helm test need a direct URL in database.listenSecret (or set migrations.enabled=false and tests.enabled=false)" }}
{{- end }}
{{- include "civic-workers.databaseEnv" . }}
{{- if eq $d.pooler "session" }}
- name: CIVIC_DB_POOLER
  value: session
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod and container security settings shared by the chart's own pods (uid of both images). */}}
{{- define "civic-workers.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "civic-workers.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
{{- end -}}

{{/* River UI: names, labels, the database Secret it reads and its schema (the chart's own by default). */}}
{{- define "civic-workers.uiName" -}}
{{- printf "%s-riverui" (include "civic-workers.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "civic-workers.uiSelectorLabels" -}}
app.kubernetes.io/name: riverui
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "civic-workers.uiLabels" -}}
{{ include "civic-workers.labels" . }}
app.kubernetes.io/name: riverui
app.kubernetes.io/component: ui
{{- end -}}
