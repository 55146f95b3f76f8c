"""HTTP routers: one per resource (proxy routes, clusters, health and metrics)."""
