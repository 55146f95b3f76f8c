"""JupyterHub federation proxy.

A configurable-http-proxy compatible route API that routes nothing itself: it writes each
route into the Kubernetes cluster that hosts the user's server (and an edge rule into the hub's
cluster, so that one public URL reaches every server), as Istio VirtualServices or Gateway API
HTTPRoutes, chosen per cluster (clusters.yaml ``backend``). docs/design.md walks through the
layout.
"""

__version__ = "0.2.0"
