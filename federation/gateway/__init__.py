"""The Gateway API backend: one HTTPRoute per route (``backend: gateway-api`` in clusters.yaml).

:mod:`.objects` holds the pure builders, :mod:`.builders` the backend's pure side as the rest of
the service asks for it, :mod:`.index` its route index and :mod:`.backend` its put, remove and
tidy-up. It implements :class:`federation.seam.Backend`; the cluster's
:class:`~federation.store.ClusterStore` holds it beside the cluster's mirror.
"""
