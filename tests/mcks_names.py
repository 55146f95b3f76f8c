"""MultiClusterKubeSpawner 0.2's own names for a user's objects, computed by the installed spawner.

The spawner names every object it creates ``key``: its ``key_template`` rendered with the
escaped user and server names (``make_dns_safe``), then stripped of the trailing '-' an empty
server name leaves. Here the spawner class itself computes them, for a spread of odd names, so
the placement test compares against the release the hub runs rather than a copy of its output.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

# Names that exercise every escape: upper case, dots, '@', '_', '~', '-', spaces, non-ASCII,
# a digit first, and a long name.
USERNAMES = ["alice", "bob", "Alice", "a.b@example.org", "dash-name", "has@", "under_score",
             "with space", "~TestJH", "Über-User", "秀樹", "50fia", "x" * 40]
SERVERNAMES = ["", "gpu-1", "GPU", "my server", "秀"]


def _spawner_module() -> Any:
    with warnings.catch_warnings():
        # 0.2 declares traits in a style traitlets deprecates; the warnings are the spawner's.
        warnings.simplefilter("ignore", DeprecationWarning)
        from multicluster_kubespawner import spawner
    return spawner


def spawner_key(username: str, servername: str) -> str:
    """The ``key`` a MultiClusterKubeSpawner for this user's server computes in its constructor."""
    MultiClusterKubeSpawner = _spawner_module().MultiClusterKubeSpawner

    # JupyterHub hands the spawner its User and ORM spawner; the key needs only their names.
    user = SimpleNamespace(name=username, id=1, url=f"/user/{username}/")
    orm_spawner = SimpleNamespace(name=servername, server=None)
    spawner = MultiClusterKubeSpawner(user=user, orm_spawner=orm_spawner)
    return str(spawner.key)


def spawner_vectors() -> list[dict[str, Any]]:
    """One entry per (user, server): the escaped names and the key, all from the spawner."""
    make_dns_safe = _spawner_module().make_dns_safe
    return [
        {"username": user, "servername": server, "safe_username": make_dns_safe(user),
         "safe_servername": make_dns_safe(server), "key": spawner_key(user, server)}
        for user in USERNAMES for server in SERVERNAMES
    ]
