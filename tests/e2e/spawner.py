"""Loaded by the JupyterHub process of the end-to-end test (``tests/e2e/test_real_hub.py``).

* :class:`ProfileSpawner` keeps MultiClusterKubeSpawner's contract without Kubernetes: a
  profile picks a cluster; ``start()`` returns that cluster's ``ingressPublicUrl`` for a remote
  cluster (every user there shares it, the proxy finds the user's Service by the route data), or
  a pod-IP URL for the home cluster, as kubespawner does.
* :class:`StandInResolver` is the hub's DNS for the ingress host names, which do not exist:
  it sends them to the test's loopback stand-ins for the clusters' ingress gateways.
"""

from __future__ import annotations

import ssl
from typing import Any

from jupyterhub.spawner import Spawner
from tornado import web
from traitlets import Dict, Unicode

from federation.testing.hub_resolver import LoopbackResolver


class ProfileSpawner(Spawner):
    """A spawner whose "pods" live in clusters it never talks to.

    ``user_options["profile"]`` names the cluster (default: :attr:`home_profile`). The state
    (profile, url, running) is saved with the hub's database through ``get_state``, so a restarted
    hub still sees a started server as running.
    """

    ingress_urls = Dict(
        value_trait=Unicode(),
        config=True,
        help="profile -> the cluster's ingressPublicUrl, for the remote clusters",
    )
    home_profile = Unicode("hub", config=True, help="the profile of the hub's own cluster")
    home_pod_url = Unicode(config=True, help="the pod-IP URL of a server in the home cluster")

    profile = Unicode("")
    url = Unicode("")
    running = False

    def _profile(self) -> str:
        profile = (self.user_options or {}).get("profile") or self.home_profile
        if profile != self.home_profile and profile not in self.ingress_urls:
            known = sorted({self.home_profile, *self.ingress_urls})
            raise web.HTTPError(400, f"unknown profile {profile!r}; known: {known}")
        return str(profile)

    async def start(self) -> str:
        profile = self._profile()
        url = self.home_pod_url if profile == self.home_profile else self.ingress_urls[profile]
        if not url:
            raise web.HTTPError(500, f"no URL configured for profile {profile!r}")
        self.profile, self.url, self.running = profile, url, True
        self.log.info("%s runs in cluster %r at %s", self._log_name, profile, url)
        return url

    async def poll(self) -> int | None:
        return None if self.running else 0

    async def stop(self, now: bool = False) -> None:
        self.running = False

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self.running:
            state.update(profile=self.profile, url=self.url, running=True)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.profile = state.get("profile", "")
        self.url = state.get("url", "")
        self.running = bool(state.get("running", False))

    def clear_state(self) -> None:
        super().clear_state()
        self.profile, self.url, self.running = "", "", False


class _SharedContext(ssl.SSLContext):
    """An SSLContext traitlets can hand over: config values are deep-copied, contexts cannot be."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedContext:
        return self


def trusting(cafile: str) -> ssl.SSLContext:
    """A client TLS context (hostnames checked) that trusts only the CA in ``cafile``."""
    context = _SharedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    return context


# The hub's DNS for the ingress host names: the same stand-in resolver the MCKS stack uses.
StandInResolver = LoopbackResolver
