"""Test and demo support: loopback Kubernetes API servers (plain HTTP, or HTTPS with a CA made
for the run) that the `kubernetes` client, httpx and kubectl can talk to; the service in-process
is in :mod:`federation.testing.harness`."""

from federation.testing.kubeapi import EmulatedClusters, KubeAPIServer, write_kubeconfig

__all__ = ["EmulatedClusters", "KubeAPIServer", "write_kubeconfig"]
