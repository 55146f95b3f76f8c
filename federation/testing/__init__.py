"""Test support: loopback Kubernetes API servers that the real `kubernetes` client can talk to."""

from federation.testing.kubeapi import EmulatedClusters, KubeAPIServer, write_kubeconfig

__all__ = ["EmulatedClusters", "KubeAPIServer", "write_kubeconfig"]
