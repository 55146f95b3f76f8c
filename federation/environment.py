"""The settings an operator gives in the environment, read at start: every problem as one line
naming its variable (never a traceback), and a warning for each ``FEDERATION_*`` name that is
no setting, with the setting it most likely meant.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from . import kubeconfig
from .config import Registry
from .errors import ConfigError
from .settings import Settings, describe_error, variable_of

PREFIX = "FEDERATION_"
# Read by the command line rather than by Settings.
COMMAND_LINE_VARIABLES = ("FEDERATION_HOST",)
# The test suite's and the benchmark's own variables: never the service's, never warned about.
TOOLING_PREFIXES = ("FEDERATION_TEST_", "FEDERATION_E2E_")
TOOLING_VARIABLES = ("FEDERATION_PROMETHEUS", "FEDERATION_SHARED_DIR", "FEDERATION_STORM_OPS")
_FIELD = re.compile(r'field "(\w+)"')


class SettingsProblem(Exception):
    """Settings that cannot be used: ``lines``, one per problem, each naming its variable."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def read_settings(**given: Any) -> Settings:
    """Settings from the environment and ``given`` (command-line values); raises SettingsProblem."""
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsProblem([describe_error(error) for error in exc.errors()]) from None
    except SettingsError as exc:
        raise SettingsProblem([describe_source_error(exc)]) from None


def describe_source_error(exc: SettingsError) -> str:
    """A value pydantic-settings could not even parse (a JSON setting that is not JSON), as one
    line naming the variable; the value is left out (it may hold anything)."""
    found = _FIELD.search(str(exc))
    name = variable_of(found.group(1)) if found else "a FEDERATION_* variable"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"{name} is not valid JSON ({cause.msg} at character {cause.pos}): {json_hint(name)}"
    return f"{name} cannot be read: {cause or exc}"


def json_hint(name: str) -> str:
    if name == "FEDERATION_WARMUP_URLS":
        return 'give a JSON object of cluster name to URL, e.g. {"east": "https://east.hub.example.org"}'
    return "give it as JSON"


def known_variables() -> list[str]:
    """Every environment variable the service reads."""
    names = list(COMMAND_LINE_VARIABLES)
    for field in Settings.model_fields:
        names += [part.split(" (")[0] for part in variable_of(field).split(" or ")]
    return sorted(set(names))


def _service_link_prefixes(environ: Mapping[str, str]) -> set[str]:
    """Kubernetes gives a pod ``<SERVICE>_SERVICE_HOST``, ``_PORT``... for every Service of its
    namespace: the chart's own Service ``federation-proxy-api`` makes ``FEDERATION_PROXY_API_*``."""
    return {name.removesuffix("_SERVICE_HOST") for name in environ if name.endswith("_SERVICE_HOST")}


def _is_service_link(name: str, prefixes: set[str]) -> bool:
    return any(name == f"{p}_PORT" or name.startswith((f"{p}_PORT_", f"{p}_SERVICE_"))
               for p in prefixes)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per ``FEDERATION_*`` variable the service does not read, with the likely name."""
    known = known_variables()
    links = _service_link_prefixes(environ)
    lines = []
    for name in sorted(environ):
        if (not name.startswith(PREFIX) or name in known or name in TOOLING_VARIABLES
                or name.startswith(TOOLING_PREFIXES) or _is_service_link(name, links)):
            continue
        guess = likely_name(name, known)
        hint = (f"did you mean {guess}?" if guess
                else "the settings are listed in docs/operations.md#8-settings")
        lines.append(f"{name} is not a setting and is ignored: {hint}")
    return lines


def likely_name(name: str, known: list[str]) -> str | None:
    """The known variable ``name`` was most likely meant to be, compared without the shared
    prefix (which would make every name look alike)."""
    stems = {k.removeprefix(PREFIX): k for k in known if k.startswith(PREFIX)}
    found = difflib.get_close_matches(name.removeprefix(PREFIX), list(stems), n=1, cutoff=0.6)
    return stems[found[0]] if found else None


def warmup_problem(settings: Settings, registry: Registry) -> str | None:
    """A FEDERATION_WARMUP_URLS key that names no cluster: its warm-up would never run."""
    unknown = sorted(set(settings.warmup_urls) - set(registry.clusters))
    if not unknown:
        return None
    return (f"FEDERATION_WARMUP_URLS names no cluster {', '.join(map(repr, unknown))}: the "
            f"clusters are {', '.join(map(repr, sorted(registry.clusters)))}")


def in_cluster_problem(registry: Registry) -> str | None:
    """A cluster with ``inCluster: true`` while the service runs in no pod (or with no token),
    as one line naming the cluster: told before the server starts, where it would end in a
    traceback of the startup."""
    for cluster in registry.clusters.values():
        if cluster.in_cluster:
            try:
                kubeconfig.in_cluster()
            except ConfigError as exc:
                return f"cluster {cluster.name!r}: {exc}"
    return None
