"""Runtime settings, validated at start-up (pydantic-settings).

Everything here comes from the environment (prefix ``FEDERATION_``) or the command line; the
cluster registry itself is ``clusters.yaml`` (:mod:`federation.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDERATION_", extra="ignore", populate_by_name=True)

    config: Path = Field(description="path to clusters.yaml")
    auth_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("CONFIGPROXY_AUTH_TOKEN", "FEDERATION_AUTH_TOKEN"),
        description="the token the hub sends (the hub's CONFIGPROXY_AUTH_TOKEN)",
    )
    no_auth: bool = Field(False, description="serve without a token (never in production; `--no-auth`)")
    metrics_auth: bool = Field(True, description="`/metrics` asks for the token (false: open, for a scraper)")

    # Kubernetes access
    kube_connect_timeout: float = Field(3.0, gt=0, description="seconds to open a connection to an API server")
    kube_read_timeout: float = Field(10.0, gt=0, description="seconds to wait for an API server's answer")
    kube_retries: int = Field(3, ge=0, description="retries after the first try (0 turns them off)")
    kube_backoff_initial: float = Field(0.1, ge=0, description="first retry delay, in seconds (doubles per retry)")
    kube_backoff_max: float = Field(2.0, ge=0, description="longest retry delay, in seconds")
    kube_deadline: float = Field(8.0, gt=0, description="seconds after which one write is given up")
    kube_workers: int = Field(8, ge=1, description="concurrent Kubernetes requests per cluster (each waits for a connection of its own)")
    circuit_threshold: int = Field(5, ge=1, description="consecutive failures that open a cluster's circuit (its writes then fail fast with 503)")
    circuit_reset: float = Field(10.0, gt=0, description="seconds before an open circuit lets one call through again")

    # Cache and housekeeping
    watch_timeout: int = Field(300, ge=1, description="seconds a watch request lasts before it is renewed")
    probe_interval: float = Field(5.0, gt=0, description="seconds between health probes of each cluster")
    reconcile_interval: float = Field(15.0, gt=0, description="seconds between passes that repair objects changed or deleted by hand")
    gc_grace: float = Field(30.0, ge=0, description="seconds an unused object lives before removal")
    shard_routes: int = Field(
        48, ge=4, le=1000,
        description="routes a shard holds before it splits in two (advanced: the default keeps "
                    "each route write near 20 KiB)",
    )
    reload_interval: float = Field(5.0, gt=0, description="seconds between checks of clusters.yaml for changes (SIGHUP reloads at once)")

    # Traffic activity from each cluster's Prometheus (clusters.yaml: activity)
    activity_interval: float = Field(60.0, gt=0, description="seconds between activity reads")
    activity_recovery: float = Field(
        3600.0, ge=0, description="seconds of past activity a starting replica reads back"
    )

    # Optional warm-up wait after a write
    warmup: bool = Field(False, description="after a write, poll the gateway until the new rule answers")
    warmup_timeout: float = Field(10.0, gt=0, description="seconds the warm-up wait lasts at most (the write succeeds anyway)")
    warmup_urls: dict[str, str] = Field(
        default_factory=dict, description="cluster name -> gateway base URL to poll"
    )

    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="largest accepted request body")

    # Logs (stderr)
    log_level: str = Field("info", description="debug, info, warning, error or critical")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event; json: one JSON object per line"
    )
    access_log: bool = Field(
        True, description="one line per request: method, path, status, duration (probes at debug)"
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError(f"{value!r}: use debug, info, warning, error or critical")
        return value.lower()

    @field_validator("warmup_urls", mode="before")
    @classmethod
    def _warmup_urls(cls, value: object) -> object:
        example = 'e.g. {"east": "https://east.hub.example.org"}'
        if not isinstance(value, Mapping):
            raise ValueError(f"a JSON object of cluster name -> gateway base URL, {example}")
        for cluster, url in value.items():
            parts = urlsplit(url) if isinstance(url, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{cluster!r}: {url!r} is not an http(s) URL with a host, "
                                 f"{example}")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _token_required(self) -> Settings:
        if not self.no_auth and (self.auth_token is None or not self.auth_token.get_secret_value()):
            raise ValueError(
                "CONFIGPROXY_AUTH_TOKEN is not set: set it to the hub's proxy token "
                "(or pass --no-auth to run without authentication)"
            )
        return self

    def token(self) -> str | None:
        return None if self.no_auth or self.auth_token is None else self.auth_token.get_secret_value()


# Set by a command-line flag rather than (only) the environment.
FLAGS = {"config": "--config", "no_auth": "--no-auth"}


def variable_of(field: str) -> str:
    """The environment variable (and flag) an operator sets for a field: what errors name."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        name = " or ".join(str(choice) for choice in alias.choices)
    else:
        name = f"FEDERATION_{field.upper()}"
    return f"{name} ({FLAGS[field]})" if field in FLAGS else name


def describe_error(error: Mapping[str, Any]) -> str:
    """One settings error as a line naming the variable, and the value unless it is secret."""
    msg = "required but not set" if error["type"] == "missing" else (
        str(error["msg"]).removeprefix("Value error, "))
    loc = [str(part) for part in error["loc"]]
    if not loc:
        return msg
    field = loc[0]
    info = Settings.model_fields.get(field)
    secret = info is not None and "SecretStr" in str(info.annotation)
    value = "" if secret or error["type"] == "missing" else f"={error.get('input')!r}"
    where = ".".join([variable_of(field), *loc[1:]])
    return f"{where}{value}: {msg}"
