"""JupyterHub federation proxy.

A configurable-http-proxy compatible route API that routes nothing itself: it writes Istio
VirtualServices into the Kubernetes cluster that hosts each user's server, and into the hub's
cluster so that one public URL reaches every server.
"""

__version__ = "0.2.0"
