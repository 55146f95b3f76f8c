"""End-to-end tests: a real JupyterHub process in front of ``federation serve``."""
