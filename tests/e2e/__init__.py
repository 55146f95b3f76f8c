"""End-to-end tests: the service driven by a real JupyterHub, or run against a real cluster."""
