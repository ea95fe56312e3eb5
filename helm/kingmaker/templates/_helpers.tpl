{{/* Names ------------------------------------------------------------------------------------------ */}}

{{/* The chart name, 63 characters at most (a DNS label). */}}
{{- define "kingmaker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name: the release name when it already contains the chart name. */}}
{{- define "kingmaker.fullname" -}}
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

{{/* <fullname>-<suffix>, 63 characters at most: the suffix is kept whole, the base is shortened. */}}
{{- define "kingmaker.componentName" -}}
{{- $ctx := index . 0 }}{{ $suffix := index . 1 }}
{{- $base := include "kingmaker.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{/* Serving workloads: <fullname>-<router|champion|challenger>-<colour>. Argument: (list $ root role colour). */}}
{{- define "kingmaker.servingName" -}}
{{- include "kingmaker.componentName" (list (index . 0) (printf "%s-%s" (index . 1) (index . 2))) }}
{{- end }}

{{/* The ChampionChallenger's name and the router ConfigMap the controller patches (<cc>-router). */}}
{{- define "kingmaker.ccName" -}}
{{- .Values.championChallenger.name }}
{{- end }}
{{- define "kingmaker.routerConfigMap" -}}
{{- printf "%s-router" .Values.championChallenger.name | trunc 253 }}
{{- end }}

{{- define "kingmaker.controllerName" -}}
{{- include "kingmaker.componentName" (list . "controller") }}
{{- end }}

{{/* Labels --------------------------------------------------------------------------------------- */}}

{{- define "kingmaker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: name and instance; with (list $ component) also the component. */}}
{{- define "kingmaker.selectorLabels" -}}
{{- $ctx := . }}{{ $component := "" }}
{{- if kindIs "slice" . }}{{ $ctx = index . 0 }}{{ $component = index . 1 }}{{ end -}}
app.kubernetes.io/name: {{ include "kingmaker.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
{{- with $component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* Labels that are not selectors. Argument: the root context. */}}
{{- define "kingmaker.commonLabels" -}}
helm.sh/chart: {{ include "kingmaker.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kingmaker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* All labels; with (list $ component) also the component. */}}
{{- define "kingmaker.labels" -}}
{{- $ctx := . }}
{{- if kindIs "slice" . }}{{ $ctx = index . 0 }}{{ end }}
{{- include "kingmaker.commonLabels" $ctx }}
{{ include "kingmaker.selectorLabels" . }}
{{- end }}

{{/*
Selector labels of one serving workload: (list $ component colour [arm]). The controller finds the
arm Deployments by kingmaker.io/championchallenger + kingmaker.io/arm, across colours.
*/}}
{{- define "kingmaker.servingSelectorLabels" -}}
{{- $ctx := index . 0 }}
{{- include "kingmaker.selectorLabels" (list $ctx (index . 1)) }}
kingmaker.io/championchallenger: {{ include "kingmaker.ccName" $ctx }}
kingmaker.io/color: {{ index . 2 }}
{{- if gt (len .) 3 }}
kingmaker.io/arm: {{ index . 3 }}
{{- end }}
{{- end }}

{{- define "kingmaker.servingLabels" -}}
{{ include "kingmaker.commonLabels" (index . 0) }}
{{ include "kingmaker.servingSelectorLabels" . }}
{{- end }}

{{/* Images ---------------------------------------------------------------------------------------- */}}

{{/* Tag of kingmaker's own images (controller, drift job, helm test). */}}
{{- define "kingmaker.tag" -}}
{{- .Values.images.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Image of a serving role in a colour: (list $ "scorer"|"router" colour). */}}
{{- define "kingmaker.servingImage" -}}
{{- $ctx := index . 0 }}
{{- $colour := index $ctx.Values (index . 2) }}
{{- printf "%s/%s:%s" $ctx.Values.images.registry (index $ctx.Values.images (index . 1)) ($colour.image.tag | default (include "kingmaker.tag" $ctx)) }}
{{- end }}

{{- define "kingmaker.image" -}}
{{- printf "%s/%s:%s" .Values.images.registry .Values.images.kingmaker (include "kingmaker.tag" .) }}
{{- end }}

{{- define "kingmaker.imagePullSecrets" -}}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* Colours ---------------------------------------------------------------------------------------- */}}

{{/* The enabled colours, space separated, in a fixed order. */}}
{{- define "kingmaker.colours" -}}
{{- $out := list }}
{{- range $c := list "blue" "green" }}
{{- if (index $.Values $c).enabled }}{{ $out = append $out $c }}{{ end }}
{{- end }}
{{- join " " $out }}
{{- end }}

{{/* The arms a colour runs. */}}
{{- define "kingmaker.arms" -}}
{{- if .Values.scorer.challenger.enabled }}champion challenger{{ else }}champion{{ end }}
{{- end }}

{{/* Pods ------------------------------------------------------------------------------------------- */}}

{{/* Pod-level security context: non-root with the image's user, RuntimeDefault seccomp. Argument: the uid. */}}
{{- define "kingmaker.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ . }}
  runAsGroup: {{ . }}
  fsGroup: {{ . }}
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Container-level security context: read-only root, no privilege escalation, no capabilities. */}}
{{- define "kingmaker.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/* Environment every kingmaker container gets: the settings ConfigMap and the store credentials. */}}
{{- define "kingmaker.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ include "kingmaker.componentName" (list . "settings") }}
{{- with .Values.mlflow.existingSecret }}
  - secretRef:
      name: {{ . }}
{{- end }}
{{- with .Values.objectStore.existingSecret }}
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/*
Pod-template annotations: the settings checksum (a changed settings ConfigMap rolls the pods, which read
it as environment at start; the hot-reloaded router ConfigMap is deliberately not in it), extra ones
from the component's values. Argument: (list $ podAnnotations [extra map]).
*/}}
{{- define "kingmaker.podAnnotations" -}}
{{- $ctx := index . 0 -}}
annotations:
  kingmaker.io/settings-checksum: {{ include (print $ctx.Template.BasePath "/settings-configmap.yaml") $ctx | sha256sum | trunc 16 }}
  {{- range $key, $value := (index . 1) }}
  {{ $key }}: {{ $value | quote }}
  {{- end }}
  {{- if gt (len .) 2 }}
  {{- range $key, $value := (index . 2) }}
  {{ $key }}: {{ $value | quote }}
  {{- end }}
  {{- end }}
{{- end }}

{{/* Scheduling keys of a component's values. */}}
{{- define "kingmaker.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
What the Router and Scorer containers share: port http (3000, BentoML's), probes on /livez and
/readyz, a preStop sleep so endpoints drain before SIGTERM (the services' own KINGMAKER_DRAIN_SECONDS
stays 0), resources and the hardened security context. Argument: (list $ componentValues startupSeconds).
*/}}
{{- define "kingmaker.servingContainer" -}}
{{- $v := index . 1 -}}
ports:
  - name: http
    containerPort: 3000
startupProbe:
  httpGet: {path: /livez, port: http}
  periodSeconds: 5
  failureThreshold: {{ div (index . 2) 5 | max 1 }}
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  httpGet: {path: /livez, port: http}
  periodSeconds: 10
  failureThreshold: 3
lifecycle:
  preStop:
    sleep:
      seconds: {{ $v.drainSeconds }}
resources:
  {{- toYaml $v.resources | nindent 2 }}
{{ include "kingmaker.containerSecurityContext" (index . 0) }}
{{- end }}

{{/* A writable /tmp: every root filesystem is read-only. */}}
{{- define "kingmaker.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end }}

{{/*
BENTOML_HOME of a serving container: in its own pod's /tmp. BentoML keeps its Prometheus multiprocess files
there and empties the folder whenever a server starts, so each server needs a home of its own (and the
image's default home is on the read-only root).
*/}}
{{- define "kingmaker.bentomlHome" -}}
- name: BENTOML_HOME
  value: /tmp/bentoml
{{- end }}

{{/* The Router's own token to its Scorers (router.armTokenSecret): env, mount and volume of both. */}}
{{- define "kingmaker.armTokenEnv" -}}
{{- if .Values.router.armTokenSecret.name }}
- name: KINGMAKER_ARM_TOKEN_FILE
  value: /etc/kingmaker/arm/tokens
{{- end }}
{{- end }}

{{- define "kingmaker.armTokenMount" -}}
{{- if .Values.router.armTokenSecret.name }}
- name: arm-token
  mountPath: /etc/kingmaker/arm
  readOnly: true
{{- end }}
{{- end }}

{{- define "kingmaker.armTokenVolume" -}}
{{- with .Values.router.armTokenSecret }}
{{- if .name }}
- name: arm-token
  secret:
    secretName: {{ .name }}
    items:
      - {key: {{ .key }}, path: tokens}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod user of each image: BentoML images run as bentoml (1034), k8s/Dockerfile as 10001. */}}
{{- define "kingmaker.bentoUid" -}}1034{{- end }}
{{- define "kingmaker.kingmakerUid" -}}10001{{- end }}
