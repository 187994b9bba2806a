{{/* The image, its tag defaulting to the chart's appVersion. */}}
{{- define "weir.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The labels every pod selector of the chart uses. */}}
{{- define "weir.selector" -}}
app.kubernetes.io/name: weir
{{- end }}

{{/*
Only the verbs the controller uses; the same rules cluster-wide (ClusterRole) or for one
namespace (Role): config/base/10-rbac.yaml says why each is there.
*/}}
{{- define "weir.rules" -}}
- apiGroups: [weir.dev]
  resources: [rollouts]
  verbs: [list, watch, patch]
- apiGroups: [weir.dev]
  resources: [rollouts/finalizers]
  verbs: [update]
- apiGroups: [weir.dev]
  resources: [rollouts/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, patch]
- apiGroups: [networking.istio.io]
  resources: [destinationrules]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
