"""Runtime settings, validated at start-up (pydantic-settings).

Everything here comes from the environment (prefix ``FEDERATION_``) or the command line; the
cluster registry itself is ``clusters.yaml`` (:mod:`federation.config`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDERATION_", extra="ignore", populate_by_name=True)

    config: Path = Field(description="path to clusters.yaml")
    auth_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("CONFIGPROXY_AUTH_TOKEN", "FEDERATION_AUTH_TOKEN"),
        description="the token the hub sends (the hub's CONFIGPROXY_AUTH_TOKEN)",
    )
    no_auth: bool = False
    metrics_auth: bool = True

    # Kubernetes access
    kube_connect_timeout: float = Field(3.0, gt=0)
    kube_read_timeout: float = Field(10.0, gt=0)
    kube_retries: int = Field(3, ge=0, description="retries after the first try (0 turns them off)")
    kube_backoff_initial: float = Field(0.1, ge=0)
    kube_backoff_max: float = Field(2.0, ge=0)
    kube_deadline: float = Field(8.0, gt=0, description="give up on one write after this long")
    kube_workers: int = Field(16, ge=1, description="threads per cluster for Kubernetes calls")
    circuit_threshold: int = Field(5, ge=1)
    circuit_reset: float = Field(10.0, gt=0)

    # Cache and housekeeping
    watch_timeout: int = Field(300, ge=1)
    probe_interval: float = Field(5.0, gt=0)
    reconcile_interval: float = Field(15.0, gt=0)
    gc_grace: float = Field(30.0, ge=0, description="seconds an unused object lives before removal")
    reload_interval: float = Field(5.0, gt=0, description="how often the config file is checked")

    # Traffic activity from each cluster's Prometheus (clusters.yaml: activity)
    activity_interval: float = Field(60.0, gt=0, description="seconds between activity reads")
    activity_recovery: float = Field(
        3600.0, ge=0, description="seconds of past activity a starting replica reads back"
    )

    # Optional warm-up wait after a write
    warmup: bool = False
    warmup_timeout: float = Field(10.0, gt=0)
    warmup_urls: dict[str, str] = Field(
        default_factory=dict, description="cluster name -> gateway base URL to poll"
    )

    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    log_level: str = "info"

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
