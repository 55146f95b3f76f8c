{{/* Chart name, overridable. */}}
{{- define "federation-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name prefix of the release's resources (63 characters at most).
The release name is used alone when it already contains the chart name.
*/}}
{{- define "federation-proxy.fullname" -}}
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

{{- define "federation-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "federation-proxy.labels" -}}
helm.sh/chart: {{ include "federation-proxy.chart" . }}
{{ include "federation-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ include "federation-proxy.imageTag" . | quote }}
app.kubernetes.io/component: proxy
app.kubernetes.io/part-of: jupyterhub
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels (immutable once deployed). */}}
{{- define "federation-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "federation-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "federation-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "federation-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "federation-proxy.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 }}
{{- end }}

{{/*
The container image. None is published, so there is no default: without image.repository (and
image.tag or image.digest) rendering stops with what to do, rather than installing a name that
ends in ImagePullBackOff.
*/}}
{{- define "federation-proxy.image" -}}
{{- $how := "this chart ships no image. Build one from the repository's Dockerfile (docker build -t <registry>/federation-proxy:<version> .), push it to a registry your clusters pull from (docs/operations.md, section 0, The container image), then set image.repository and image.tag (or image.digest)" }}
{{- $repository := required (printf "image.repository is not set: %s" $how) .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- $tag := required (printf "image.tag is not set (nor image.digest) for image.repository %s: set the tag you pushed; %s" $repository $how) (toString .Values.image.tag) }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* Secret and key holding the proxy auth token. */}}
{{- define "federation-proxy.tokenSecretName" -}}
{{- if .Values.auth.token }}
{{- printf "%s-auth" (include "federation-proxy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- required "auth.existingSecret.name is required when auth.token is empty" .Values.auth.existingSecret.name }}
{{- end }}
{{- end }}

{{- define "federation-proxy.tokenSecretKey" -}}
{{- if .Values.auth.token }}
{{- "token" }}
{{- else }}
{{- required "auth.existingSecret.key is required when auth.token is empty" .Values.auth.existingSecret.key }}
{{- end }}
{{- end }}

{{/* Fixed paths inside the pod (the image's CMD reads /etc/federation/clusters.yaml). */}}
{{- define "federation-proxy.configDir" -}}/etc/federation{{- end }}
{{- define "federation-proxy.kubeconfigDir" -}}/etc/federation-kubeconfig{{- end }}
{{- define "federation-proxy.kubeconfigPath" -}}/etc/federation-kubeconfig/config{{- end }}

{{/*
clusters.yaml: the `config` value, with `kubeconfig` set to the mounted file when
kubeconfig.existingSecret is set and `defaults.namespace` defaulting to the
release namespace. Also checks what JSON schema cannot: `home` names a cluster
and cluster names are unique.
*/}}
{{- define "federation-proxy.clustersYaml" -}}
{{- $config := deepCopy .Values.config }}
{{- $kubeconfigPath := include "federation-proxy.kubeconfigPath" . }}
{{- if .Values.kubeconfig.existingSecret }}
{{- /* Nested ifs: `and` does not short-circuit in older Helm (Go < 1.18). */}}
{{- if $config.kubeconfig }}
{{- if ne (toString $config.kubeconfig) $kubeconfigPath }}
{{- fail (printf "config.kubeconfig is %q but kubeconfig.existingSecret is mounted at %s: leave config.kubeconfig empty" $config.kubeconfig $kubeconfigPath) }}
{{- end }}
{{- end }}
{{- $_ := set $config "kubeconfig" $kubeconfigPath }}
{{- end }}
{{- $defaults := $config.defaults | default dict }}
{{- if not $defaults.namespace }}
{{- $_ := set $defaults "namespace" .Release.Namespace }}
{{- end }}
{{- $_ := set $config "defaults" $defaults }}
{{- $names := list }}
{{- range $config.clusters }}
{{- if has .name $names }}
{{- fail (printf "config.clusters: cluster name %q is used more than once" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- if not (has $config.home $names) }}
{{- fail (printf "config.home %q is not the name of any entry of config.clusters (%s)" $config.home (join ", " $names)) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
Name prefix of the release's objects outside its own namespace (the gateways' and claims'
namespaces, users' namespaces) and of its cluster-wide ones: two hubs installed under the same
release name in different namespaces share those namespaces, so the name carries the release's
namespace too.
*/}}
{{- define "federation-proxy.sharedName" -}}
{{- printf "%s-%s" (include "federation-proxy.fullname" .) .Release.Namespace | trunc 200 | trimSuffix "-" }}
{{- end }}
