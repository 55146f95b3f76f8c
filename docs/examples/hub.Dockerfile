# The hub's image for MultiClusterKubeSpawner: Zero to JupyterHub's hub image with the spawner
# package and kubectl, which the spawner runs for every spawn, poll and stop (docs/operations.md,
# go-live step 2). Build it with the k8s-hub tag of your z2jh chart version and set hub.image
# in the z2jh values to it:
#   docker build -f docs/examples/hub.Dockerfile --build-arg Z2JH_VERSION=4.0.0 -t registry.example.org/jupyterhub/k8s-hub-multicluster:4.0.0 docs/examples
ARG Z2JH_VERSION=4.0.0
FROM quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}

# Within one minor version of your clusters' API servers.
ARG KUBECTL_VERSION=v1.32.4
ARG TARGETARCH=amd64

USER root
# kubectl: the static binary, checked against the checksum published beside it (the image has
# Python but not necessarily curl).
RUN python3 - <<PY
import hashlib, os, urllib.request
base = "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl"
binary = urllib.request.urlopen(base).read()
expected = urllib.request.urlopen(base + ".sha256").read().decode().split()[0]
assert hashlib.sha256(binary).hexdigest() == expected, "kubectl checksum mismatch"
with open("/usr/local/bin/kubectl", "wb") as out:
    out.write(binary)
os.chmod("/usr/local/bin/kubectl", 0o755)
PY
# The spawner, pinned: the guide's known faults and the end-to-end test are for 0.2.
RUN pip install --no-cache-dir jupyterhub-multicluster-kubespawner==0.2

# Back to z2jh's hub user.
USER jovyan
