"""Loopback Kubernetes API servers for tests and demos.

They speak the REST protocol of a real kube-apiserver closely enough for the official
``kubernetes`` Python client, for httpx, and for ``kubectl``: bearer auth, Status bodies,
resourceVersion concurrency, merge and JSON patches, label and field selectors, watches with a
bounded event history (410 Expired when compacted) and bookmarks, optional structural CRD schemas
(pruning, defaulting, validation), fault injection (latency, error codes, outages, broken
watches), and optionally HTTPS with a CA made for the run.

One module per concern; :class:`KubeAPIServer` stacks them:

* ``store``: resource types, objects, resourceVersions, create/update/patch/delete, lists;
* ``validation`` (names, metadata, sizes) and ``schema`` (CRD structural schemas);
* ``selectors`` (label and field selectors), ``patch`` (merge and JSON patches);
* ``events`` and ``watch``: the event history and the watch streams (chunked JSON lines);
* ``discovery``: /api, /apis and /version; ``openapi``: /openapi/v3, so ``kubectl apply``
  validates (on the server, ``fieldValidation=Strict``);
* ``builtin``: the kinds served from the start, with short names and categories, and the core
  kinds' schemas; ``strategic``: strategic merge patches;
* ``kubelet``: Pods turn Running and Ready (and end) on their own; Service defaults;
* ``faults``: injected errors, latency, outages;
* ``protocol``: the HTTP server, routing a request to the above, Status bodies, bearer tokens
  (``add_token``: more clients, each recorded, optionally held to RBAC rules from ``rbac``);
* ``clusters``: several servers behind one kubeconfig; ``tls``: the run's CA.
"""

from .clusters import EmulatedClusters, write_kubeconfig
from .server import KubeAPIServer

__all__ = ["EmulatedClusters", "KubeAPIServer", "write_kubeconfig"]
