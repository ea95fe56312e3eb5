{{/*
Blue-green and the controller's state: what the templates read from the cluster (`lookup`).

Without a cluster (`helm template`, `--dry-run=client`) every lookup is empty; the chart then renders
the values as they are and says so (the client Service's kingmaker.io/switch-check annotation and
NOTES.txt) instead of guessing.
*/}}

{{/*
The release's live Deployments as YAML: {online: bool, deployments: {name: object}}. "online" is true
when the API server answered the list (an online list is never empty: it has kind/apiVersion).
*/}}
{{- define "kingmaker.live" -}}
{{- $list := lookup "apps/v1" "Deployment" .Release.Namespace "" }}
{{- $deployments := dict }}
{{- range $d := (get $list "items" | default list) }}
{{- if eq (dig "metadata" "labels" "app.kubernetes.io/instance" "" $d) $.Release.Name }}
{{- $_ := set $deployments $d.metadata.name $d }}
{{- end }}
{{- end }}
{{- toYaml (dict "online" (not (empty $list)) "deployments" $deployments) }}
{{- end }}

{{/* The container of a serving role: the Router's is "router", both arms' "scorer". */}}
{{- define "kingmaker.container" -}}
{{- if eq . "router" }}router{{ else }}scorer{{ end }}
{{- end }}

{{- define "kingmaker.otherColour" -}}
{{- if eq . "blue" }}green{{ else }}blue{{ end }}
{{- end }}

{{/*
What one arm serves, as YAML {uri, version}: (list $ live arm colour). The controller pins versions
by patching KINGMAKER_MODEL_URI (models:/<model>/<version>) and the kingmaker.io/model-version
annotation; an upgrade carries a pin over from the live Deployment of the same colour, else of the
other colour (a new colour starts on the versions the live one serves), else it renders the alias
(models:/<model>@<alias>, as on a first install). Only pins of the configured model are carried over.
So `helm upgrade` never undoes a promotion and never fights the controller over the field.
*/}}
{{- define "kingmaker.armModel" -}}
{{- $ctx := index . 0 }}{{ $live := index . 1 }}{{ $arm := index . 2 }}{{ $colour := index . 3 }}
{{- $model := dict "uri" (printf "models:/%s@%s" $ctx.Values.model.name (index $ctx.Values.championChallenger.aliases $arm)) "version" "" }}
{{- $found := false }}
{{- range $c := list $colour (include "kingmaker.otherColour" $colour) }}
{{- $d := get $live.deployments (include "kingmaker.servingName" (list $ctx $arm $c)) }}
{{- if and $d (not $found) }}
{{- range $container := $d.spec.template.spec.containers }}
{{- if eq $container.name "scorer" }}
{{- range $e := ($container.env | default list) }}
{{- if and (eq $e.name "KINGMAKER_MODEL_URI") (hasPrefix (printf "models:/%s/" $ctx.Values.model.name) ($e.value | default "")) }}
{{- $found = true }}
{{- $model = dict "uri" $e.value "version" (dig "metadata" "annotations" "kingmaker.io/model-version" "" $d.spec.template) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $model }}
{{- end }}

{{/*
Why a colour cannot take traffic yet: (list $ live colour) -> one problem per line, "" when ready.
Every Deployment of the colour must exist, run the image this upgrade asks for, have its rollout
observed and every replica updated and available, with no pod of an earlier rollout left (mid-rollout the
old pods are the available ones: what `kubectl rollout status` waits for too).
*/}}
{{- define "kingmaker.colourProblems" -}}
{{- $ctx := index . 0 }}{{ $live := index . 1 }}{{ $colour := index . 2 }}
{{- range $role := prepend (splitList " " (include "kingmaker.arms" $ctx)) "router" }}
{{- $name := include "kingmaker.servingName" (list $ctx $role $colour) }}
{{- $d := get $live.deployments $name }}
{{- if not $d }}
Deployment {{ $name }} does not exist
{{- else }}
{{- $want := include "kingmaker.servingImage" (list $ctx (ternary "router" "scorer" (eq $role "router")) $colour) }}
{{- $image := "" }}
{{- range $c := $d.spec.template.spec.containers }}{{ if eq $c.name (include "kingmaker.container" $role) }}{{ $image = $c.image }}{{ end }}{{ end }}
{{- $replicas := int (dig "spec" "replicas" 1 $d) }}
{{- $available := int (dig "status" "availableReplicas" 0 $d) }}
{{- $updated := int (dig "status" "updatedReplicas" 0 $d) }}
{{- $old := sub (int (dig "status" "replicas" 0 $d)) $updated }}
{{- if ne $image $want }}
Deployment {{ $name }} runs {{ $image | default "no such container" }}, not {{ $want }}
{{- else if lt (int (dig "status" "observedGeneration" 0 $d)) (int $d.metadata.generation) }}
Deployment {{ $name }}: its latest change is not rolled out yet
{{- else if eq $replicas 0 }}
Deployment {{ $name }} is scaled to zero
{{- else if or (lt $updated $replicas) (lt $available $replicas) (gt $old 0) }}
Deployment {{ $name }}: {{ $available }}/{{ $replicas }} replicas available, {{ $updated }} updated{{ if gt $old 0 }}, {{ $old }} of the previous rollout still running{{ end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The switch check, one line "<verdict>: <message>"; verdict is one of offline, new, unchanged,
skipped, ready, refused. Argument: (list $ live).
*/}}
{{- define "kingmaker.switchCheck" -}}
{{- $ctx := index . 0 }}{{ $live := index . 1 }}
{{- $target := $ctx.Values.activeColor }}
{{- $service := lookup "v1" "Service" $ctx.Release.Namespace (include "kingmaker.fullname" $ctx) }}
{{- $current := dig "spec" "selector" "kingmaker.io/color" "" $service }}
{{- if not $live.online }}
offline: rendered without a cluster (helm template or --dry-run=client): whether {{ $target }} is ready was not checked
{{- else if not $current }}
new: no live client Service yet; {{ $target }} takes traffic once it is ready
{{- else if eq $current $target }}
unchanged: {{ $target }} stays live
{{- else if $ctx.Values.blueGreen.skipReadinessCheck }}
skipped: switching from {{ $current }} to {{ $target }} without a readiness check (blueGreen.skipReadinessCheck=true)
{{- else }}
{{- $problems := include "kingmaker.colourProblems" (list $ctx $live $target) | trim }}
{{- if $problems }}
refused: cannot switch traffic from {{ $current }} to {{ $target }}: {{ $problems | replace "\n" "; " }}. Deploy {{ $target }} first with activeColor={{ $current }} (--set {{ $target }}.enabled=true --set {{ $target }}.image.tag=<tag>), wait until it is ready, then set activeColor={{ $target }} again (or blueGreen.skipReadinessCheck=true to switch regardless)
{{- else }}
ready: switching from {{ $current }} to {{ $target }}; every {{ $target }} Deployment runs the requested image and is available
{{- end }}
{{- end }}
{{- end }}

{{/*
The text of router.yaml. mode and challenger_weight belong to the controller at run time (promotion
resets the weight, rollback sets it to 0): an upgrade keeps the live ones. When the values do not
change any other key, the live text is kept byte for byte (the controller writes its own YAML layout),
so an upgrade neither rewrites nor takes over a field the controller manages.
*/}}
{{- define "kingmaker.routerYaml" -}}
{{- $v := .Values.router.config }}
{{- $wanted := dict "mode" .Values.championChallenger.traffic.mode "challenger_weight" .Values.championChallenger.traffic.challengerWeight "salt" $v.salt "routing_field" .Values.championChallenger.traffic.routingKey "champion_timeout_ms" $v.championTimeoutMs "challenger_timeout_ms" $v.challengerTimeoutMs "shadow_timeout_ms" $v.shadowTimeoutMs "shadow_max_in_flight" $v.shadowMaxInFlight "champion_fallback" $v.championFallback "pairing" $v.pairing }}
{{- $text := "" }}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace (include "kingmaker.routerConfigMap" .) }}
{{- with dig "data" "router.yaml" "" $cm }}
{{- $live := fromYaml . }}
{{- if and (not (hasKey $live "Error")) (hasKey $live "mode") (hasKey $live "challenger_weight") }}
{{- $_ := set $wanted "mode" $live.mode }}
{{- $_ := set $wanted "challenger_weight" $live.challenger_weight }}
{{- $same := true }}
{{- range $key := list "salt" "routing_field" "champion_fallback" "pairing" }}
{{- if ne (toString (get $live $key)) (toString (get $wanted $key)) }}{{ $same = false }}{{ end }}
{{- end }}
{{- range $key := list "champion_timeout_ms" "challenger_timeout_ms" "shadow_timeout_ms" "shadow_max_in_flight" }}
{{- if or (not (hasKey $live $key)) (ne (float64 (get $live $key)) (float64 (get $wanted $key))) }}{{ $same = false }}{{ end }}
{{- end }}
{{- if $same }}{{ $text = . }}{{ end }}
{{- end }}
{{- end }}
{{- if $text }}
{{- $text }}
{{- else -}}
mode: {{ $wanted.mode }}
challenger_weight: {{ $wanted.challenger_weight }}
salt: {{ $wanted.salt | quote }}
routing_field: {{ $wanted.routing_field | quote }}
champion_timeout_ms: {{ $wanted.champion_timeout_ms }}
challenger_timeout_ms: {{ $wanted.challenger_timeout_ms }}
shadow_timeout_ms: {{ $wanted.shadow_timeout_ms }}
shadow_max_in_flight: {{ $wanted.shadow_max_in_flight }}
champion_fallback: {{ $wanted.champion_fallback }}
pairing: {{ if kindIs "string" $wanted.pairing }}{{ $wanted.pairing | quote }}{{ else }}{{ $wanted.pairing }}{{ end }}
{{ end }}
{{- end }}
