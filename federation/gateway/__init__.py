"""The Gateway API backend: one HTTPRoute per route (``backend: gateway-api`` in clusters.yaml).

:mod:`.objects` holds the pure builders, :mod:`.store` the store that writes them; the rest of
the service sees the same store surface as the Istio backend's :class:`federation.store.ClusterStore`.
"""
