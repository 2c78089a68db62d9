"""The upstream accounts: their keys and addresses, their budgets per model, and which
tenants each serves (API.md, "Upstream accounts").

MiMo counts its limits per account, summed over the account's keys, so an `Account` here
is a budget: two keys of one MiMo account must be configured as one account (one key of
the two), or the pacer would send twice what the account allows. Its prompt cache is per
key, which is why the pacer sends a tenant back to the account that served it last
(`visionq.state.pacing`).

Configured with `VISIONQ_UPSTREAM_ACCOUNTS`; without it, `MIMO_API_KEY` and the
`VISIONQ_UPSTREAM_*` settings make the one account `main`. Keys live here and in the
upstream client's headers, nowhere else: a job, a log line or a metric names the account.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import SecretStr

from visionq.settings import Budget, PerModel, Settings

#: The one account of `MIMO_API_KEY`.
MAIN = "main"


@dataclass(frozen=True)
class Account:
    """One upstream account, with everything the single-account settings fill in."""

    name: str
    key: SecretStr = field(repr=False)
    base_url: str
    anthropic_base_url: str
    #: The tenants it serves alone, or None: every tenant not pinned to an account.
    tenants: frozenset[str] | None
    _budgets: dict[str, Budget] = field(repr=False)

    def budget(self, model: str) -> Budget:
        return self._budgets[model]


class Accounts:
    """Every configured account, and which of them may serve a tenant."""

    def __init__(self, accounts: list[Account]) -> None:
        self._by_name = {account.name: account for account in accounts}
        self._shared = [a.name for a in accounts if a.tenants is None]
        self._pinned: dict[str, list[str]] = {}
        for account in accounts:
            for tenant in account.tenants or ():
                self._pinned.setdefault(tenant, []).append(account.name)

    @classmethod
    def from_settings(cls, settings: Settings) -> Accounts:
        if not settings.upstream_accounts:
            key = settings.mimo_api_key or SecretStr("")
            budgets = {model: settings.budget(model) for model in settings.models}
            main = Account(
                MAIN,
                key,
                settings.upstream_base_url,
                settings.upstream_anthropic_base_url,
                None,
                budgets,
            )
            return cls([main])
        accounts = []
        for given in settings.upstream_accounts:
            budgets = {}
            for model in settings.models:
                default = settings.budget(model)
                budgets[model] = Budget(
                    _pick(given.rpm, model, default.rpm),
                    _pick(given.tpm, model, default.tpm),
                    _pick(given.concurrency, model, default.concurrency),
                )
            accounts.append(
                Account(
                    given.name,
                    given.api_key,
                    given.base_url or settings.upstream_base_url,
                    given.anthropic_base_url or settings.upstream_anthropic_base_url,
                    frozenset(given.tenants) if given.tenants else None,
                    budgets,
                )
            )
        return cls(accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self._by_name.values())

    def get(self, name: str) -> Account:
        return self._by_name[name]

    def serving(self, tenant: str) -> list[str]:
        """The accounts that may serve `tenant`: its own when it is pinned (it never falls
        back to a shared one), else the shared ones."""
        return self._pinned.get(tenant, self._shared)

    @property
    def shared(self) -> list[str]:
        return list(self._shared)

    @property
    def pinned(self) -> dict[str, list[str]]:
        return {tenant: list(names) for tenant, names in self._pinned.items()}


def _pick(given: PerModel | None, model: str, default: int) -> int:
    if isinstance(given, dict):
        return given.get(model, default)
    return default if given is None else given
