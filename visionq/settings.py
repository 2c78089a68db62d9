"""One typed, frozen settings object, read once from the environment.

Every process (API, worker, dev stack, simulator client) builds a `Settings` at start-up
with `Settings.from_env()` and passes it down, so no other server module reads its
configuration from `os.environ`. (Three places touch the environment for another
reason: the worker supervisor and `visionq dev` pass it on to their children, and
`visionq.ops.metrics` sets the one variable prometheus_client reads. The SDK, which
stands alone, reads its own `VISIONQ_URL` and `VISIONQ_KEY`.) Tests construct
`Settings(...)` directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from limits import RateLimitItem, parse_many
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from visionq.errors import ConfigurationError

#: MiMo's own limit for one image file and for one base64 string (50 MB).
MIMO_MAX_IMAGE_BYTES = 50 * 1024 * 1024


def _pairs(raw: str, sep: str, what: str) -> dict[str, str]:
    """Parse `a=1,b=2` (or `a:1,b:2`) lists, the shape of several variables."""
    out: dict[str, str] = {}
    for position, item in enumerate(filter(None, (p.strip() for p in raw.split(","))), 1):
        key, found, value = item.partition(sep)
        if not found or not key.strip() or not value.strip():
            # Name the position only: the item may be a secret.
            raise ConfigurationError(f"{what}: item {position} is not of the form a{sep}b")
        out[key.strip()] = value.strip()
    return out


def _ints(raw: str, what: str) -> list[int]:
    try:
        return [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"{what} must be whole numbers separated by commas") from None


def _per_key(raw: str) -> dict[str, str]:
    """`v` (for every key: "*") or `v,name=w` (a default and values for named keys)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        name, found, value = item.rpartition("=")
        out[name.strip() if found else "*"] = value.strip()
    return out


def _per_name(raw: str, what: str) -> dict[str, int]:
    """`100` (every model or tenant) or `100,mimo-v2-omni=60` (a default and named values)."""
    try:
        return {model: int(value) for model, value in _per_key(raw).items()}
    except ValueError:
        raise ConfigurationError(f"{what}: {raw!r} is not N or name=N items") from None


def parse_limits(spec: str) -> list[RateLimitItem]:
    """A request limit: `600/minute`, `10/second;600/minute` (both hold), or `none`."""
    if spec.strip().lower() == "none":
        return []
    return parse_many(spec)


def _accounts_json(env: Mapping[str, str]) -> list[object] | None:
    """`VISIONQ_UPSTREAM_ACCOUNTS`, or the file `VISIONQ_UPSTREAM_ACCOUNTS_FILE` names (where
    a secret store mounts it): a JSON list. Errors never quote it: it holds keys."""
    inline = env.get("VISIONQ_UPSTREAM_ACCOUNTS", "").strip()
    path = env.get("VISIONQ_UPSTREAM_ACCOUNTS_FILE", "").strip()
    if inline and path:
        raise ConfigurationError(
            "set VISIONQ_UPSTREAM_ACCOUNTS or VISIONQ_UPSTREAM_ACCOUNTS_FILE, not both"
        )
    what = "VISIONQ_UPSTREAM_ACCOUNTS_FILE" if path else "VISIONQ_UPSTREAM_ACCOUNTS"
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                inline = file.read()
        except OSError as exc:
            raise ConfigurationError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not inline:
        return None
    try:
        accounts = json.loads(inline)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigurationError(f"{what} is not valid JSON (at {where})") from None
    if not isinstance(accounts, list) or not accounts:
        raise ConfigurationError(f"{what} must be a JSON list of accounts")
    return accounts


def _quotas(raw: str) -> dict[str, Quota | None]:
    """`50000000/month` (every tenant), `bob=1000000/day`, `carol=none`, comma-separated."""
    out: dict[str, Quota | None] = {}
    for name, spec in _per_key(raw).items():
        tokens, _, period = spec.partition("/")
        if spec.lower() == "none":
            out[name] = None
        elif tokens.isdigit() and int(tokens) > 0 and period in ("day", "month"):
            out[name] = Quota(int(tokens), "day" if period == "day" else "month")
        else:
            raise ConfigurationError(
                "VISIONQ_TENANT_QUOTAS must be TOKENS/day or TOKENS/month, with tenant= in "
                f"front for one tenant, or none; not {spec!r}"
            )
    return out


def _prices(raw: str) -> dict[str, Price]:
    """`mimo-v2.5=0.4/0.008/1.6,...` (input, cached input, output, dollars per million
    tokens), or the same as JSON: `{"mimo-v2.5": {"input": 0.4, "cached_input": 0.008,
    "output": 1.6}}`."""
    what = "VISIONQ_PRICES"
    try:
        if raw.startswith("{"):
            given = json.loads(raw)
            return {
                model: Price(float(p["input"]), float(p["cached_input"]), float(p["output"]))
                for model, p in given.items()
            }
        out = {}
        for model, triple in _pairs(raw, "=", what).items():
            parts = [float(part) for part in triple.split("/")]
            if len(parts) != 3:
                raise ValueError(model)
            out[model] = Price(*parts)
        return out
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigurationError(
            f"{what} must be model=input/cached_input/output (dollars per million tokens), "
            "comma-separated, or the same as a JSON object"
        ) from None


def _bool(raw: str) -> bool:
    return raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Budget:
    """One model's share of the upstream account: MiMo counts these over all keys."""

    rpm: int
    tpm: int
    concurrency: int


@dataclass(frozen=True)
class Quota:
    """A tenant's tokens (prompt and completion) per UTC day or calendar month."""

    tokens: int
    period: Literal["day", "month"]


@dataclass(frozen=True)
class Price:
    """One model's prices in dollars per million tokens (`VISIONQ_PRICES`)."""

    input: float
    cached_input: float
    output: float


#: An account's name: it goes into Redis keys, metric labels and job records.
ACCOUNT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
#: An account budget: one number for every model, or one per model (the rest: the
#: single-account setting for that model).
PerModel = PositiveInt | dict[str, PositiveInt]


class UpstreamAccount(BaseModel):
    """One upstream account as configured (API.md, "Upstream accounts"); what is not given
    comes from the single-account settings (`visionq.accounts` resolves it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=ACCOUNT_NAME)
    api_key: SecretStr
    base_url: str | None = None
    anthropic_base_url: str | None = None
    rpm: PerModel | None = None
    tpm: PerModel | None = None
    concurrency: PerModel | None = None
    #: When given, the account serves only these tenants, and they only such accounts.
    tenants: tuple[str, ...] | None = Field(default=None, min_length=1)


class Settings(BaseModel):
    """Everything a visionq process can be configured with (API.md, "Configuration")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Replicas that must hold a new job before it is accepted (Redis `WAIT`; 0: none).
    #: With Sentinel, 1 closes the window in which a failover loses an accepted job.
    redis_wait_replicas: NonNegativeInt = 0
    redis_wait_timeout: PositiveFloat = 1.0
    #: Where Celery's messages go: RabbitMQ (`amqp://…`), or None for the Redis above.
    broker_url: str | None = None
    storage_url: str = "file://./var/images"
    upstream_base_url: str = "https://api.xiaomimimo.com/v1"
    upstream_anthropic_base_url: str = "https://api.xiaomimimo.com/anthropic"
    mimo_api_key: SecretStr | None = None
    #: Several upstream accounts; empty: the one account of `mimo_api_key` ("main").
    upstream_accounts: tuple[UpstreamAccount, ...] = ()
    #: Seconds an account that answered 401/403 (or whose 402 a probe confirmed) stays
    #: out of rotation before one call probes it again.
    account_probe_interval: NonNegativeFloat = 60.0
    #: (tenant, client key) pairs
    api_keys: tuple[tuple[str, SecretStr], ...] = ()
    #: (name, key) pairs of keys that may read every tenant's usage; each also acts as
    #: the tenant `name` elsewhere.
    admin_keys: tuple[tuple[str, SecretStr], ...] = ()
    #: Per model; a model without one has no cost.
    prices: dict[str, Price] = Field(default_factory=dict)
    #: Days the hourly usage counters are kept.
    usage_retention_days: PositiveInt = 400
    #: Whether finishes add to the usage counters (off: no usage, cost or quotas; the
    #: accounts benchmark measures what they cost).
    usage_records: bool = True
    #: Per tenant, "*" for every tenant not named; None: no quota.
    tenant_quotas: dict[str, Quota | None] = Field(default_factory=dict)
    auth_disabled: bool = False
    webhook_secret: SecretStr | None = None
    #: The secret being rotated out, also signed with until `webhook_previous_secret_until`.
    webhook_previous_secret: SecretStr | None = None
    webhook_previous_secret_until: datetime | None = None
    webhook_retry_schedule: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    #: Longer than a delivery may take (10 s), and no longer than a job's lease: a delivery
    #: whose worker died is tried again within the bound every other stage keeps.
    webhook_lease: float = 30.0
    job_lease: float = 30.0
    queued_grace: float = 300.0
    sweep_interval: float = 1.0
    allow_private_urls: bool = False
    max_image_pixels: int = 178_956_970
    #: Seconds one image may take to decode, validate and fit on a worker.
    image_decode_timeout: float = 60.0
    #: Address space of each prepare worker child, in bytes (0: no cap).
    prepare_memory_limit: int = 4 * 1024**3
    max_request_bytes: int = 209_715_200
    #: Characters of text one job may carry (prompts, system, messages and the fields
    #: passed through; image URLs have caps of their own): about the largest context.
    max_text_chars: PositiveInt = 4_194_304
    max_image_bytes: int = MIMO_MAX_IMAGE_BYTES
    #: The models jobs may name; each needs a context window in `model_context`.
    models: tuple[str, ...] = Field(default=("mimo-v2.5", "mimo-v2-omni"), min_length=1)
    default_model: str = "mimo-v2.5"
    result_ttl: int = 604_800
    #: Per model, "*" for every model not named (API.md, "Pacing the upstream").
    upstream_rpm: dict[str, PositiveInt] = Field(default_factory=lambda: {"*": 100})
    upstream_tpm: dict[str, PositiveInt] = Field(default_factory=lambda: {"*": 10_000_000})
    upstream_concurrency: dict[str, PositiveInt] = Field(default_factory=lambda: {"*": 16})
    #: API requests per tenant, "*" for every tenant not named.
    rate_limits: dict[str, str] = Field(default_factory=lambda: {"*": "3000/minute"})
    #: Request bodies one tenant may be sending at once across the API, "*" for every
    #: tenant not named (0: no cap).
    max_uploads: dict[str, NonNegativeInt] = Field(default_factory=lambda: {"*": 64})
    #: Seconds the API waits for a whole request body; past it, 408 and the connection closes.
    body_read_timeout: PositiveFloat = 60.0
    upstream_timeout: float = 300.0
    upstream_connect_timeout: float = 10.0
    upstream_max_attempts: int = 6
    url_fetch_timeout: float = 30.0
    model_context: dict[str, int] = Field(
        default_factory=lambda: {"mimo-v2.5": 1_048_576, "mimo-v2-omni": 262_144}
    )
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "text"] = "json"
    #: prometheus-client's directory for a process tree's metrics (`PROMETHEUS_MULTIPROC_DIR`);
    #: None: `visionq api` and `visionq worker` make a private one (visionq.ops.metrics).
    metrics_dir: str | None = None
    #: Where `visionq worker` serves its process tree's metrics (0: not served).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Where `visionq api` also answers /healthz, /readyz and /metrics, on threads of
    #: their own, so that they answer while every request thread is busy (0: not served).
    health_port: int = Field(default=0, ge=0, le=65535)
    #: Lines of one batch that may be jobs at once (visionq.pipeline.batching): enough to
    #: keep the upstream budget busy, few enough that Redis holds a window, not the batch.
    batch_window: int = Field(default=256, ge=2)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `VISIONQ_*` and `MIMO_API_KEY`; unset variables keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        simple = {
            "VISIONQ_REDIS_URL": "redis_url",
            "VISIONQ_REDIS_WAIT_REPLICAS": "redis_wait_replicas",
            "VISIONQ_REDIS_WAIT_TIMEOUT": "redis_wait_timeout",
            "VISIONQ_BROKER_URL": "broker_url",
            "VISIONQ_STORAGE_URL": "storage_url",
            "VISIONQ_UPSTREAM_BASE_URL": "upstream_base_url",
            "VISIONQ_UPSTREAM_ANTHROPIC_BASE_URL": "upstream_anthropic_base_url",
            "MIMO_API_KEY": "mimo_api_key",
            "VISIONQ_WEBHOOK_SECRET": "webhook_secret",
            "VISIONQ_WEBHOOK_PREVIOUS_SECRET": "webhook_previous_secret",
            "VISIONQ_WEBHOOK_PREVIOUS_SECRET_UNTIL": "webhook_previous_secret_until",
            "VISIONQ_MAX_IMAGE_PIXELS": "max_image_pixels",
            "VISIONQ_IMAGE_DECODE_TIMEOUT": "image_decode_timeout",
            "VISIONQ_PREPARE_MEMORY_LIMIT": "prepare_memory_limit",
            "VISIONQ_MAX_REQUEST_BYTES": "max_request_bytes",
            "VISIONQ_MAX_TEXT_CHARS": "max_text_chars",
            "VISIONQ_DEFAULT_MODEL": "default_model",
            "VISIONQ_RESULT_TTL": "result_ttl",
            "VISIONQ_UPSTREAM_TIMEOUT": "upstream_timeout",
            "VISIONQ_UPSTREAM_CONNECT_TIMEOUT": "upstream_connect_timeout",
            "VISIONQ_UPSTREAM_MAX_ATTEMPTS": "upstream_max_attempts",
            "VISIONQ_URL_FETCH_TIMEOUT": "url_fetch_timeout",
            "VISIONQ_WEBHOOK_LEASE": "webhook_lease",
            "VISIONQ_JOB_LEASE": "job_lease",
            "VISIONQ_QUEUED_GRACE": "queued_grace",
            "VISIONQ_SWEEP_INTERVAL": "sweep_interval",
            "VISIONQ_METRICS_PORT": "metrics_port",
            "VISIONQ_HEALTH_PORT": "health_port",
            "VISIONQ_BODY_READ_TIMEOUT": "body_read_timeout",
            "VISIONQ_BATCH_WINDOW": "batch_window",
            "VISIONQ_ACCOUNT_PROBE_INTERVAL": "account_probe_interval",
            "VISIONQ_USAGE_RETENTION": "usage_retention_days",
            # prometheus-client's own variable, so that it and we agree on the directory.
            "PROMETHEUS_MULTIPROC_DIR": "metrics_dir",
        }
        for var, field in simple.items():
            if env.get(var, "").strip():
                values[field] = env[var].strip()
        for var, field in (
            ("VISIONQ_LOG_LEVEL", "log_level"),
            ("VISIONQ_LOG_FORMAT", "log_format"),
        ):
            if raw := env.get(var, "").strip():
                values[field] = raw.lower()
        if raw := env.get("VISIONQ_API_KEYS", "").strip():
            values["api_keys"] = tuple(_pairs(raw, ":", "VISIONQ_API_KEYS").items())
        if raw := env.get("VISIONQ_ADMIN_KEYS", "").strip():
            values["admin_keys"] = tuple(_pairs(raw, ":", "VISIONQ_ADMIN_KEYS").items())
        if raw := env.get("VISIONQ_PRICES", "").strip():
            values["prices"] = _prices(raw)
        if raw := env.get("VISIONQ_TENANT_QUOTAS", "").strip():
            values["tenant_quotas"] = _quotas(raw)
        if raw := env.get("VISIONQ_USAGE_RECORDS", "").strip():
            values["usage_records"] = _bool(raw)
        auth = env.get("VISIONQ_AUTH", "").strip().lower()
        if auth not in {"", "enabled", "disabled"}:
            raise ConfigurationError("VISIONQ_AUTH must be 'enabled' or 'disabled'")
        values["auth_disabled"] = auth == "disabled"
        if raw := env.get("VISIONQ_ALLOW_PRIVATE_URLS", "").strip():
            values["allow_private_urls"] = _bool(raw)
        if raw := env.get("VISIONQ_WEBHOOK_RETRY_SCHEDULE", "").strip():
            values["webhook_retry_schedule"] = tuple(_ints(raw, "VISIONQ_WEBHOOK_RETRY_SCHEDULE"))
        per_key = {
            "VISIONQ_UPSTREAM_RPM": ("upstream_rpm", _per_name),
            "VISIONQ_UPSTREAM_TPM": ("upstream_tpm", _per_name),
            "VISIONQ_UPSTREAM_CONCURRENCY": ("upstream_concurrency", _per_name),
            "VISIONQ_RATE_LIMIT": ("rate_limits", lambda raw, _: _per_key(raw)),
            "VISIONQ_MAX_UPLOADS": ("max_uploads", _per_name),
        }
        for var, (field, parse) in per_key.items():
            if raw := env.get(var, "").strip():
                defaults = cls.model_fields[field].get_default(call_default_factory=True)
                values[field] = defaults | parse(raw, var)
        if raw := env.get("VISIONQ_MODELS", "").strip():
            values["models"] = tuple(p.strip() for p in raw.split(",") if p.strip())
        if accounts := _accounts_json(env):
            values["upstream_accounts"] = accounts
        if raw := env.get("VISIONQ_MODEL_CONTEXT", "").strip():
            pairs = _pairs(raw, "=", "VISIONQ_MODEL_CONTEXT")
            sizes = _ints(",".join(pairs.values()), "VISIONQ_MODEL_CONTEXT sizes")
            values["model_context"] = dict(zip(pairs, sizes, strict=True))
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            # Never echo the offending values: some of them are secrets.
            fields = ", ".join(
                ".".join(str(part) for part in err["loc"]) if err["loc"] else err["msg"]
                for err in getattr(exc, "errors", list)()
            )
            raise ConfigurationError(f"invalid configuration in: {fields or exc}") from None

    @model_validator(mode="after")
    def _rotation_has_an_end(self) -> Settings:
        if self.webhook_previous_secret is not None and (
            self.webhook_secret is None or self.webhook_previous_secret_until is None
        ):
            raise ValueError(
                "VISIONQ_WEBHOOK_PREVIOUS_SECRET needs VISIONQ_WEBHOOK_SECRET and "
                "VISIONQ_WEBHOOK_PREVIOUS_SECRET_UNTIL (when the overlap ends)"
            )
        return self

    @model_validator(mode="after")
    def _accounts_are_consistent(self) -> Settings:
        names = [account.name for account in self.upstream_accounts]
        if len(set(names)) != len(names):
            raise ValueError("VISIONQ_UPSTREAM_ACCOUNTS: two accounts have the same name")
        if names and self.mimo_api_key is not None:
            raise ValueError(
                "set MIMO_API_KEY (one account) or VISIONQ_UPSTREAM_ACCOUNTS, not both"
            )
        return self

    @model_validator(mode="after")
    def _quotas_need_usage(self) -> Settings:
        if self.tenant_quotas and not self.usage_records:
            raise ValueError("VISIONQ_TENANT_QUOTAS needs VISIONQ_USAGE_RECORDS on")
        return self

    @field_validator("prices")
    @classmethod
    def _prices_are_not_negative(cls, value: dict[str, Price]) -> dict[str, Price]:
        for price in value.values():
            if min(price.input, price.cached_input, price.output) < 0:
                raise ValueError("a price is negative")
        return value

    @model_validator(mode="after")
    def _models_are_known(self) -> Settings:
        if missing := [m for m in self.models if m not in self.model_context]:
            raise ValueError(f"VISIONQ_MODEL_CONTEXT has no context window for {missing}")
        if self.default_model not in self.models:
            raise ValueError("VISIONQ_DEFAULT_MODEL is not one of VISIONQ_MODELS")
        return self

    @property
    def tenants(self) -> frozenset[str]:
        """The tenants a configured key names."""
        return frozenset(name for name, _ in (*self.api_keys, *self.admin_keys))

    def budget(self, model: str) -> Budget:
        def pick(table: dict[str, int]) -> int:
            return table.get(model, table["*"])

        return Budget(
            pick(self.upstream_rpm), pick(self.upstream_tpm), pick(self.upstream_concurrency)
        )

    @field_validator("upstream_rpm", "upstream_tpm", "upstream_concurrency")
    @classmethod
    def _has_default(cls, value: dict[str, int]) -> dict[str, int]:
        if "*" not in value:
            raise ValueError("needs a value for every model ('*')")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for spec in value.values():
            parse_limits(spec)  # ValueError: not like 600/minute
        return value

    @field_validator("webhook_secret", "webhook_previous_secret")
    @classmethod
    def _webhook_secret_form(cls, value: SecretStr | None) -> SecretStr | None:
        raw = value.get_secret_value() if value is not None else ""
        if value is not None and (not raw.startswith("whsec_") or len(raw) < 16):
            raise ValueError("must be whsec_<base64>")
        return value
