{{/* Names end in the room, as the kustomize overlays' nameSuffix does. */}}
{{- define "wa.room" -}}
{{- required "room is required (room-a, room-b, ...)" .Values.room -}}
{{- end -}}
{{- define "wa.name" -}}
witness-agent-{{ include "wa.room" . }}
{{- end -}}
{{- define "wa.secretName" -}}
{{- .Values.tls.existingSecret | default (printf "witness-agent-tls-%s" (include "wa.room" .)) -}}
{{- end -}}
{{- define "wa.zone" -}}
{{- .Values.zone | default .Values.room -}}
{{- end -}}
{{/* The labels every object carries (the base kustomization's), plus Helm's own. */}}
{{- define "wa.labels" -}}
app.kubernetes.io/name: witness-agent
app.kubernetes.io/part-of: witness
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "wa.selector" -}}
app.kubernetes.io/component: agent
app.kubernetes.io/name: witness-agent
app.kubernetes.io/part-of: witness
witness.dev/room: {{ include "wa.room" . }}
{{- end -}}
