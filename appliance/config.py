"""The appliance's one TOML config: schema, loading with complete error reports, diffing.

Every table is a pydantic model that rejects unknown keys. Checks that only need one
table (ranges, powers of two, a replay file that exists) run with the field checks, so
all such errors of a file are reported together. Checks across tables (populations name
known symbols, CPU keys name known processes, population params fit their kind) run once
every table is valid, and again report all they find; population params are also checked
beside the other tables' errors, so that those and theirs come in one report. TOML's true
and false are refused where a number is expected (pydantic would read them as 1 and 0).

Relative paths in the config (journal, venue state, recorder, replay) are relative to the
current directory of the process that loads it; under systemd that is the unit's
WorkingDirectory. They are kept as written, so a config dumps back to what it was.
"""

from __future__ import annotations

import grp
import os
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from appliance.agents import population_class
from appliance.agents.compute import BACKENDS, BackendError, resolve
from appliance.agents.params import grid_size
from appliance.feeds.sources import SourceError, open_source
from appliance.model.enums import CLUSTER_ROLES, SINGLE_ROLES, Role, TradingState
from appliance.model.instruments import Instrument
from appliance.model.universe import AgentLayout, PopulationSlot, Universe

# Processes other than agent hosts that the supervisor runs (and that CPU lists may name).
WORKERS: tuple[str, ...] = tuple(r.value for r in SINGLE_ROLES)
CLUSTER_WORKERS: tuple[str, ...] = tuple(r.value for r in CLUSTER_ROLES)
# The whole appliance, as a restart target in diffs.
APPLIANCE = "appliance"


class ConfigError(Exception):
    """An invalid config: ``errors`` lists (location, message) pairs, ``str`` all of them."""

    def __init__(self, errors: list[tuple[str, str]], path: str | os.PathLike[str] | None = None):
        self.errors = errors
        self.path = None if path is None else str(path)
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.path}: " if self.path else ""
        return "\n".join(
            f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}" for loc, msg in self.errors
        )


def format_loc(loc: Iterable[str | int]) -> str:
    """A pydantic location as written in errors and diffs: ``hosts[1].populations[0].agents``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _error_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        # Our own validators' messages, which name the offending value themselves.
        return err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if isinstance(given, str | int | float | bool):
        return f"{err['msg']} (got {given!r})"
    return err["msg"]


def _exchange_id_error(exchange: str, *, pro: bool) -> str | None:
    """Why ``exchange`` names no ccxt (``pro``: ccxt.pro) exchange class; None if it does."""
    from appliance.markets import MarketsError
    from appliance.markets.connect import exchange_class

    try:
        exchange_class(exchange, pro)
    except MarketsError as exc:
        return str(exc)
    return None


def _from_validation_error(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    unions: dict[str, list[str]] = {}  # one entry per value that matched no union member
    for err in exc.errors():
        parts, member = _split_union(err["loc"])
        loc = format_loc(parts)
        if prefix:
            loc = f"{prefix}{'' if not loc or loc.startswith('[') else '.'}{loc}"
        if member is None:
            errors.append((loc, _error_message(err)))
            continue
        if loc not in unions:
            unions[loc] = []
            errors.append((loc, ""))  # filled in below, in the order met
        given = err.get("input")
        got = f" (got {given!r})" if isinstance(given, str | int | float | bool) else ""
        unions[loc].append(f"as {_describe_type(member)}: {err['msg']}{got}")
    return [(loc, msg or "; or ".join(unions[loc])) for loc, msg in errors]


# pydantic names the members of a union in an error's location with its own type tags
# ("constrained-float", "list[constrained-float]"); people read them as described here.
_TYPE_WORDS = {"float": "a number", "int": "a whole number", "str": "text", "bool": "true/false"}


def _split_union(loc: Iterable[str | int]) -> tuple[list[str | int], str | None]:
    """The location without pydantic's union-member tag, and the tag (None: no union)."""
    parts = list(loc)
    for i, part in enumerate(parts):
        if isinstance(part, str) and (set(part) & set("-[]") or part in _TYPE_WORDS):
            return parts[:i] + parts[i + 1 :], part
    return parts, None


def _describe_type(tag: str) -> str:
    base = tag.split("[", 1)[0].removeprefix("constrained-")
    if base in ("list", "tuple", "set"):
        return "a list"
    if base == "dict":
        return "a table"
    return _TYPE_WORDS.get(base, "a value")


def _power_of_two(value: int) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"must be a power of two, got {value}")
    return value


PowerOfTwo = Annotated[int, AfterValidator(_power_of_two)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
MAX_DRAIN_TIMEOUT_S = 80.0  # see SupervisorConfig.drain_timeout_s


class _Model(BaseModel):
    # NaN and infinities are never meaningful settings (and NaN would defeat range checks).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # TOML's true and false are no numbers; pydantic's lax mode would read them as 1, 0.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _numbers_only(field.annotation):
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _numbers_only(annotation: Any) -> bool:
    """Whether a field's type takes numbers (int, float, constrained or optional) and not
    true/false."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _numbers_only(args[0])
    if get_origin(annotation) in (Union, UnionType):
        return bool not in args and any(_numbers_only(a) for a in args)
    return False


# Field meanings and units are documented key by key in config/dynamind.toml.


class TradingConfig(_Model):
    # State at start. On reload a change applies live.
    state: TradingState = TradingState.ACTIVE
    # Symbols with netting = "priority": how long a population's intent rules the side.
    priority_window_s: PositiveFloat = 1.0

    @field_serializer("state")
    def _state_name(self, state: TradingState) -> str:
        # Plain text in dumps, so a diff reads 'active' -> 'halted'.
        return state.value


class RateConfig(_Model):
    # A token bucket: intents per second, and how many may go at once after a quiet spell.
    rate: PositiveFloat
    burst: Annotated[float, Field(ge=1.0)]


class RiskConfig(_Model):
    # Limits over the whole account (the per-agent limits of a symbol are in [[symbols]]).
    # Left out: not limited.
    agent_order_rate: RateConfig | None = None
    order_rate: RateConfig | None = None
    max_gross_exposure: PositiveFloat | None = None
    max_drawdown: PositiveFloat | None = None
    drawdown_action: Literal["reduce_only", "halted"] = "reduce_only"


class SupervisorConfig(_Model):
    # Restart backoff doubles from initial to max; more than max_restarts restarts of one
    # process within restart_window_s trips the restart-intensity limit.
    heartbeat_timeout_s: PositiveFloat = 5.0
    restart_backoff_initial_s: PositiveFloat = 0.5
    restart_backoff_max_s: PositiveFloat = 30.0
    max_restarts: PositiveInt = 5
    restart_window_s: PositiveFloat = 60.0
    # At a stop, each of the drain's three tries waits this long for execution to take
    # every queued intent; what is still queued after the last is left for the next start.
    # At most 80: the unit's TimeoutStopSec=300 must cover the longest stop (the hosts'
    # checks 30 s, stops of 10 s, three tries), or systemd kills the supervisor mid-drain.
    drain_timeout_s: Annotated[float, Field(gt=0, le=MAX_DRAIN_TIMEOUT_S)] = 60.0

    @model_validator(mode="after")
    def _backoff_order(self) -> SupervisorConfig:
        if self.restart_backoff_initial_s > self.restart_backoff_max_s:
            raise ValueError("restart_backoff_initial_s exceeds restart_backoff_max_s")
        return self


class SymbolConfig(_Model):
    # start_price feeds the synthetic walk; max_position (per agent, base units) and
    # max_order_notional (quote currency) are the pre-trade risk limits.
    name: Annotated[str, Field(pattern=r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")]
    start_price: PositiveFloat
    tick_size: PositiveFloat
    lot_size: PositiveFloat
    max_position: PositiveFloat
    max_order_notional: PositiveFloat
    max_order_qty: PositiveFloat | None = None
    price_band_bps: PositiveFloat = 1000.0
    max_open_orders: PositiveInt = 50
    netting: Literal["net", "priority", "independent"] = "net"

    @model_validator(mode="after")
    def _price_on_grid(self) -> SymbolConfig:
        steps = self.start_price / self.tick_size
        if abs(steps - round(steps)) > 1e-6 * max(1.0, steps):
            raise ValueError(f"start_price {self.start_price} is not a multiple of tick_size")
        return self


# Keys that hold secrets in ccxt: they never belong in the config (credentials_file or
# credentials_env instead), so a config that names one is refused.
_SECRET_KEYS = {"apikey", "secret", "password", "privatekey", "uid", "token", "walletaddress"}


def _secret_keys(value: Any, where: str) -> list[str]:
    if isinstance(value, dict):
        found = [f"{where}.{k}" for k in value if str(k).lower() in _SECRET_KEYS]
        for k, v in value.items():
            found += _secret_keys(v, f"{where}.{k}")
        return found
    return []


class CcxtConfig(_Model):
    """A ccxt (REST) / ccxt.pro (websocket) exchange connection; keys never live here."""

    # ccxt exchange id, e.g. "binance", "binanceus", "kraken".
    exchange: Annotated[str, Field(pattern=r"^[a-z0-9_]{2,32}$")]
    # Deep-merged into the exchange's ccxt ``urls`` (REST and websocket keys alike).
    urls: dict[str, Any] = {}
    # Deep-merged into the exchange's ccxt ``options``.
    options: dict[str, Any] = {}
    # Markets saved by `dynamind markets save`: a start then needs no REST call for them.
    markets_file: Path | None = None
    # The exchange's sandbox/testnet urls (ccxt set_sandbox_mode) before ``urls`` apply.
    sandbox: bool = False
    # Where the keys come from: a TOML file only its owner can read, or environment
    # variables <PREFIX>_API_KEY, <PREFIX>_SECRET (optional _PASSWORD, _UID).
    credentials_file: Path | None = None
    credentials_env: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,63}$")] | None = None

    @model_validator(mode="after")
    def _no_secrets(self) -> CcxtConfig:
        found = _secret_keys(self.urls, "urls") + _secret_keys(self.options, "options")
        if found:
            raise ValueError(
                f"{', '.join(found)}: keys never go in the config; use credentials_file or "
                "credentials_env"
            )
        if self.credentials_file is not None and self.credentials_env is not None:
            raise ValueError("give credentials_file or credentials_env, not both")
        if self.markets_file is not None and not self.markets_file.is_file():
            raise ValueError(f"markets_file {str(self.markets_file)!r} does not exist")
        return self


class CcxtVenueConfig(CcxtConfig):
    # Network errors (timeouts, dropped connections) are retried this many times, each
    # attempt journaled; other errors are answers and are never retried.
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    retry_backoff_s: PositiveFloat = 0.5
    # Order updates: "watch" (ccxt.pro watch_orders/watch_my_trades), "poll" (REST every
    # poll_interval_s), "auto" (watch where the exchange supports it).
    updates: Literal["auto", "watch", "poll"] = "auto"
    poll_interval_s: PositiveFloat = 1.0
    # Watch mode's REST safety net: the open orders are checked over REST (per symbol with
    # open orders) right after each subscription becomes live and every this many seconds,
    # for fills the stream did not deliver and orders that ended without an event.
    reconcile_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0


class FeedConfig(_Model):
    # "nats": a mirror of another instance's ring (cluster.ticks_from), over NATS.
    kind: Literal["synthetic", "replay", "ccxt", "nats"] = "synthetic"
    # Ticks per second over all symbols; 0: as fast as possible.
    rate: NonNegativeFloat = 20_000.0
    # Most ticks per ring write.
    batch_size: PositiveInt = 256
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 1
    # Synthetic only: fraction of TRADE ticks, log-price step stdev per tick of a symbol,
    # mean spread in basis points (at least one tick).
    trade_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    volatility: NonNegativeFloat = 1e-5
    spread_bps: NonNegativeFloat = 1.0
    # Replay only: the recording (a tick file, a Parquet history folder, or a folder of raw
    # exchange captures), its pacing and whether to start over at its end.
    path: Annotated[Path | None, Field(validate_default=True)] = None
    pace: Literal["recorded", "fast"] = "recorded"
    loop: bool = False
    # ccxt only: the exchange to watch (the symbols' names are ccxt unified symbols).
    ccxt: CcxtConfig | None = None
    # ccxt only: reconnect backoff after a dropped connection (doubling up to the max).
    reconnect_initial_s: PositiveFloat = 0.25
    reconnect_max_s: PositiveFloat = 30.0

    @field_validator("path")
    @classmethod
    def _replay_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        # kind is declared before path, so it is known here (absent if it was invalid).
        if info.data.get("kind") != "replay":
            return path
        if path is None:
            raise ValueError("the replay feed needs a path")
        if not path.exists():
            raise ValueError(f"replay source {str(path)!r} does not exist")
        return path


class PopulationConfig(_Model):
    # A built-in kind, or a user's class as "module.path:ClassName".
    kind: str
    # With a grid, agents may be left out: one per combination and symbol.
    agents: Annotated[int, Field(ge=1, le=10_000_000)]
    # Per-agent params as lists of values: one agent per combination (per symbol).
    grid: dict[str, Annotated[list[float], Field(min_length=1)]] | None = None
    # Symbol names this population trades; None: every symbol of the config.
    symbols: list[str] | None = None
    # Seed of the agents' drawn parameters; None: derived from the host and population
    # indexes (see Config.population_seed).
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    params: dict[str, Any] = {}
    # Rank of its intents on symbols with netting = "priority" (higher wins).
    priority: int = 0


class HostConfig(_Model):
    name: Name
    populations: Annotated[list[PopulationConfig], Field(min_length=1, max_length=65535)]


class ComputeConfig(_Model):
    # Where agent kernels run: auto (cupy on a usable GPU, else numba), numpy (the
    # reference), numba (compiled CPU kernels) or cupy (CUDA).
    backend: Literal[BACKENDS] = "auto"  # type: ignore[valid-type]


class ExecutionConfig(_Model):
    venue: Literal["paper", "ccxt"] = "paper"
    # ccxt venue only: the exchange orders go to.
    ccxt: CcxtVenueConfig | None = None
    # Fees in basis points of notional; internal: on quantity crossed between agents.
    taker_fee_bps: NonNegativeFloat = 10.0
    # May be negative: a maker rebate.
    maker_fee_bps: float = 2.0
    internal_fee_bps: NonNegativeFloat = 0.0
    # Most intents taken from the queues per pass.
    batch: PositiveInt = 1024


class CpuConfig(_Model):
    mode: Literal["auto", "explicit"] = "auto"
    # Explicit mode: process name ("feed", "execution", "recorder", a host) -> cores.
    cores: dict[str, Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]] = {}

    @model_validator(mode="after")
    def _cores_only_when_explicit(self) -> CpuConfig:
        if self.mode == "auto" and self.cores:
            raise ValueError("cores are only used with mode = 'explicit'")
        return self


class RecorderConfig(_Model):
    enabled: bool = False
    # "parquet": a history folder users open with pandas, polars, DuckDB (feeds/parquet.py);
    # "tickfile": the raw 64-byte records in one file (fastest to write and to replay).
    format: Literal["parquet", "tickfile"] = "parquet"
    path: Path = Path("var/history")
    # Parquet: a file is closed and the next one started at this size or age.
    rotate_mb: PositiveFloat = 256.0
    rotate_s: PositiveFloat = 3600.0


class MetricsConfig(_Model):
    # Interval of the equity curves behind Sharpe, Sortino and drawdown (docs/metrics.md).
    sample_interval_s: PositiveFloat = 1.0
    # Agents shown at the top and at the bottom (by net PnL) in status and top.
    top_agents: Annotated[int, Field(ge=0, le=100)] = 5
    # Seconds between checkpoints of the metrics (a restart continues from the last one).
    checkpoint_s: PositiveFloat = 30.0


# ---- beyond one host: [cluster] ---------------------------------------------------------

StreamName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class StreamConfig(_Model):
    """One JetStream stream: its name and what it keeps (oldest messages go first)."""

    stream: StreamName
    max_age_s: PositiveFloat
    max_bytes: PositiveInt
    # Copies kept on different servers (a stream with 3 survives losing one node).
    replicas: Annotated[int, Field(ge=1, le=5)] = 1


class ClusterConfig(_Model):
    """This instance's part in a cluster of instances joined by NATS JetStream."""

    # Client URLs of the NATS cluster, and a .creds file (user JWT and nkey) if it needs one.
    servers: Annotated[
        list[Annotated[str, Field(pattern=r"^(nats|tls)://\S+$")]], Field(min_length=1)
    ]
    credentials: Path | None = None
    # "execution": runs the execution (and takes the intents of remote agent hosts);
    # "agents": runs agent hosts only, their intents go to the execution instance.
    role: Literal["execution", "agents"] = "execution"
    # Names of the [[hosts]] this instance runs; None: every host (execution role only).
    # Every instance of a cluster lists the same [[hosts]] and [[symbols]] tables.
    hosts: list[Name] | None = None
    subject_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "dynamind"
    # Run the bridge: publish this instance's tick ring (market data out).
    publish_ticks: bool = False
    # feed.kind = "nats": the instance whose published ring this instance mirrors.
    ticks_from: Name | None = None
    ticks: StreamConfig = StreamConfig(stream="DYNAMIND_TICKS", max_age_s=300.0, max_bytes=1 << 30)
    intents: StreamConfig = StreamConfig(
        stream="DYNAMIND_INTENTS", max_age_s=86_400.0, max_bytes=1 << 30
    )
    reports: StreamConfig = StreamConfig(
        stream="DYNAMIND_REPORTS", max_age_s=3_600.0, max_bytes=1 << 30
    )
    # The gateway sends each remote host's positions in full this often (and whenever
    # execution restarts), so an agents instance starting afresh finds them in the stream.
    reset_interval_s: PositiveFloat = 10.0

    @model_validator(mode="before")
    @classmethod
    def _streams_from_their_defaults(cls, data: Any) -> Any:
        """A stream's table gives only what it changes (``[cluster.ticks] replicas = 3``):
        the rest is that stream's default, as the example configs say."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name in ("ticks", "intents", "reports"):
            given = out.get(name)
            if isinstance(given, dict):
                out[name] = {**cls.model_fields[name].default.model_dump(), **given}
        return out

    @field_validator("credentials")
    @classmethod
    def _credentials_exist(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"credentials file {str(path)!r} does not exist")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> ClusterConfig:
        if self.role == "agents" and not self.hosts:
            raise ValueError("role 'agents' needs the hosts it runs (cluster.hosts)")
        if self.reports.max_age_s < 2 * self.reset_interval_s:
            raise ValueError("reports.max_age_s must keep at least two reset_interval_s")
        return self


class Config(_Model):
    """The whole appliance; ``load_config`` builds one from a TOML file."""

    # Prefix of the instance's shared-memory segment names.
    instance: Name = "dynamind"
    journal_path: Path = Path("var/journal.sqlite")
    venue_state_path: Path = Path("var/paper_venue.sqlite")
    log_format: Literal["text", "json"] = "text"
    status_interval_s: PositiveFloat = 1.0
    wait: Literal["spin", "yield", "block", "auto"] = "auto"
    # Records per tick ring and per intent/report queue: powers of two (index masking).
    ring_capacity: PowerOfTwo = 65536
    queue_capacity: PowerOfTwo = 16384
    # A group whose members may read the shared memory (status, top) and set the trading
    # state (dynamind trading); None: only the service user. Never any access for others.
    operator_group: str | None = None
    trading: TradingConfig = TradingConfig()
    risk: RiskConfig = RiskConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    symbols: Annotated[list[SymbolConfig], Field(min_length=1, max_length=65535)]
    feed: FeedConfig = FeedConfig()
    hosts: Annotated[list[HostConfig], Field(min_length=1, max_length=65535)]
    execution: ExecutionConfig = ExecutionConfig()
    cpu: CpuConfig = CpuConfig()
    recorder: RecorderConfig = RecorderConfig()
    metrics: MetricsConfig = MetricsConfig()
    compute: ComputeConfig = ComputeConfig()
    cluster: ClusterConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _grid_agents(cls, data: Any) -> Any:
        """A population with a grid and no agent count gets one agent per combination and
        symbol (anything malformed is left for the field checks to report)."""
        try:
            n_all = len(data["symbols"])
            for host in data["hosts"]:
                for pop in host["populations"]:
                    if isinstance(pop.get("grid"), dict) and "agents" not in pop:
                        n_sym = len(pop["symbols"]) if pop.get("symbols") else n_all
                        pop["agents"] = grid_size(pop["grid"]) * n_sym
        except (KeyError, TypeError, AttributeError):
            pass
        return data

    @field_validator("compute")
    @classmethod
    def _backend_runs(cls, compute: ComputeConfig, info: ValidationInfo) -> ComputeConfig:
        # Only when loading for this machine (see load_config), like the CPU cores.
        if (info.context or {}).get("available_cores") is not None:
            try:
                resolve(compute.backend)
            except BackendError as exc:
                raise ValueError(str(exc)) from None
        return compute

    @field_validator("operator_group")
    @classmethod
    def _group_exists(cls, group: str | None) -> str | None:
        if group is not None:
            try:
                grp.getgrnam(group)
            except KeyError:
                raise ValueError(f"no group named {group!r} on this machine") from None
        return group

    @field_validator("cpu")
    @classmethod
    def _cores_exist(cls, cpu: CpuConfig, info: ValidationInfo) -> CpuConfig:
        # Only when the loader says which cores this machine has (see load_config).
        available = (info.context or {}).get("available_cores")
        if available is None:
            return cpu
        missing = sorted({c for cores in cpu.cores.values() for c in cores} - set(available))
        if missing:
            raise ValueError(
                f"cores {missing} are not available on this machine (available: "
                f"{sorted(available)})"
            )
        return cpu

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        errors = self._cross_errors()
        if errors:
            # Raised as is (pydantic passes non-ValueErrors through) to keep one location
            # per problem; load_config adds the file name.
            raise ConfigError(errors)
        return self

    def _cross_errors(self) -> list[tuple[str, str]]:
        errors: list[tuple[str, str]] = []
        names = [s.name for s in self.symbols]
        for i, name in enumerate(names):
            if name in names[:i]:
                errors.append((f"symbols[{i}].name", f"duplicate symbol {name!r}"))
        hosts = [h.name for h in self.hosts]
        for h, host in enumerate(self.hosts):
            if host.name in hosts[:h]:
                errors.append((f"hosts[{h}].name", f"duplicate host name {host.name!r}"))
            if host.name in (*WORKERS, *CLUSTER_WORKERS, APPLIANCE, Role.SUPERVISOR):
                errors.append((f"hosts[{h}].name", f"{host.name!r} is reserved"))
            if sum(p.agents for p in host.populations) > 2**32 - 1:
                errors.append((f"hosts[{h}].populations", "more than 2**32-1 agents in a host"))
            for p, pop in enumerate(host.populations):
                errors += self._population_errors(
                    f"hosts[{h}].populations[{p}]", pop, self.symbols, self.population_seed(h, p)
                )
        if self.feed.batch_size * 2 > self.ring_capacity:
            errors.append(
                ("feed.batch_size", f"must be at most half the ring ({self.ring_capacity})")
            )
        errors += self._replay_symbol_errors(names)
        errors += self._ccxt_errors()
        errors += self._cluster_errors(hosts)
        errors += self._cpu_errors(hosts)
        return errors

    def _cluster_errors(self, hosts: list[str]) -> list[tuple[str, str]]:
        c = self.cluster
        if c is None:
            if self.feed.kind == "nats":
                return [("feed.kind", "the nats feed needs a [cluster] table")]
            return []
        errors = []
        for i, name in enumerate(c.hosts or ()):
            if name not in hosts:
                errors.append((f"cluster.hosts[{i}]", f"unknown host {name!r}"))
            elif name in c.hosts[:i]:  # type: ignore[index]
                errors.append((f"cluster.hosts[{i}]", f"duplicate host {name!r}"))
        if self.feed.kind == "nats" and c.ticks_from is None:
            errors.append(("cluster.ticks_from", "the nats feed needs the instance to mirror"))
        if c.ticks_from == self.instance:
            errors.append(("cluster.ticks_from", "an instance cannot mirror its own ring"))
        return errors

    def _population_errors(
        self, loc: str, pop: PopulationConfig, symbols: list[SymbolConfig], seed: int
    ) -> list[tuple[str, str]]:
        names = [s.name for s in symbols]
        errors = []
        try:
            kind = population_class(pop.kind)
            resolve(self.compute.backend, (*kind.backends, "auto"))
        except (ValueError, BackendError) as exc:
            return [(f"{loc}.kind", str(exc))]
        chosen = names if pop.symbols is None else pop.symbols
        for i, name in enumerate(pop.symbols or ()):
            if name not in names:
                errors.append((f"{loc}.symbols[{i}]", f"unknown symbol {name!r}"))
            elif name in pop.symbols[:i]:  # type: ignore[index]
                errors.append((f"{loc}.symbols[{i}]", f"duplicate symbol {name!r}"))
        if not chosen:
            errors.append((f"{loc}.symbols", "a population needs at least one symbol"))
        elif pop.agents < len(chosen):
            errors.append((f"{loc}.agents", f"fewer agents than symbols ({len(chosen)})"))
        try:
            params = kind.validate_params(pop.params, len(chosen))
        except ValidationError as exc:
            return errors + _from_validation_error(exc, prefix=f"{loc}.params")
        if errors:
            return errors
        try:  # draws every agent's params, as the host will
            rng = np.random.default_rng(seed)
            kind.agent_table(params, pop.grid, pop.agents, len(chosen), rng)
        except ValueError as exc:
            return [(f"{loc}.grid" if pop.grid else f"{loc}.params", str(exc))]
        traded = [symbols[names.index(n)] for n in chosen]
        errors += [
            (f"{loc}.params.{where}", msg) for where, msg in kind.instrument_errors(params, traded)
        ]
        return errors

    def _replay_symbol_errors(self, names: list[str]) -> list[tuple[str, str]]:
        if self.feed.kind != "replay" or self.feed.path is None:
            return []
        try:
            recorded = open_source(self.feed.path).symbols
        except SourceError as exc:
            return [("feed.path", str(exc))]
        unknown = [s for s in recorded if s not in names]
        if unknown:
            return [("feed.path", f"recorded symbols {unknown} are not in the config's symbols")]
        return []

    def _ccxt_errors(self) -> list[tuple[str, str]]:
        errors = []
        tables = []
        if self.feed.kind == "ccxt":
            tables.append(("feed.ccxt", self.feed.ccxt))
        if self.execution.venue == "ccxt":
            tables.append(("execution.ccxt", self.execution.ccxt))
        for where, table in tables:
            if table is None:
                errors.append((where, f"required by {where.split('.')[0]} kind 'ccxt'"))
            elif bad_id := _exchange_id_error(table.exchange, pro=where == "feed.ccxt"):
                errors.append((f"{where}.exchange", bad_id))  # the feed watches: ccxt.pro
            elif table.markets_file is not None:
                errors += [(where, msg) for msg in self.market_problems(table)]
        return errors

    def market_problems(self, table: CcxtConfig) -> list[str]:
        """The instrument table checked against ``table``'s exchange markets (saved file,
        no network): unknown symbols, tick/lot sizes off the markets' precision."""
        from appliance.markets import (
            ExchangeSettings,
            MarketsError,
            instrument_problems,
            make_exchange,
        )

        settings = ExchangeSettings(table.exchange, table.urls, table.options, table.markets_file)
        try:
            exchange = make_exchange(settings, pro=False)
        except MarketsError as exc:
            return [str(exc)]
        problems = instrument_problems(exchange, self.universe().instruments)
        return [f"symbols[{i}]: {msg}" for i, msg in problems]

    def _cpu_errors(self, hosts: list[str]) -> list[tuple[str, str]]:
        if self.cpu.mode != "explicit":
            return []
        known = [*WORKERS, *hosts, *self.cluster_workers()]
        errors = [
            (f"cpu.cores.{key}", f"unknown process (known: {', '.join(known)})")
            for key in self.cpu.cores
            if key not in known
        ]
        local = [hosts[h] for h in self.local_hosts()]
        needed = [
            k
            for k in known
            if (k != Role.RECORDER or self.recorder.enabled)
            and (k != Role.EXECUTION or self.runs_execution)
            and (k not in hosts or k in local)
        ]
        missing = [k for k in needed if k not in self.cpu.cores]
        if missing:
            errors.append(("cpu.cores", f"mode 'explicit' needs cores for {', '.join(missing)}"))
        return errors

    # ---- helpers for the workers -------------------------------------------------------

    @property
    def runs_execution(self) -> bool:
        """False on a cluster instance of role "agents" (its intents go over NATS)."""
        return self.cluster is None or self.cluster.role == "execution"

    def local_hosts(self) -> list[int]:
        """Indexes of the agent hosts this instance runs (all of them outside a cluster)."""
        chosen = None if self.cluster is None else self.cluster.hosts
        names = [h.name for h in self.hosts]
        if chosen is None:
            return list(range(len(names)))
        return [names.index(n) for n in chosen if n in names]

    def remote_hosts(self) -> list[int]:
        """Hosts another instance runs whose intents this instance's execution takes."""
        if not self.runs_execution:
            return []
        local = set(self.local_hosts())
        return [h for h in range(len(self.hosts)) if h not in local]

    def cluster_workers(self) -> list[str]:
        """Names of the cluster processes this instance runs (see appliance/cluster)."""
        c = self.cluster
        if c is None:
            return []
        out = [Role.BRIDGE.value] if c.publish_ticks else []
        if not self.runs_execution:
            out.append(Role.UPLINK.value)
        elif self.remote_hosts():
            out.append(Role.GATEWAY.value)
        return out

    @property
    def symbol_names(self) -> list[str]:
        return [s.name for s in self.symbols]

    def universe(self) -> Universe:
        """The instrument table and agent layout this config describes (model/universe.py):
        built once by each process's composition and passed down."""
        instruments = [
            Instrument(s.name, s.lot_size, s.tick_size, venue=self.execution.venue)
            for s in self.symbols
        ]
        slots = [
            PopulationSlot(
                h, p, pop.agents, host.name, pop.kind, float(pop.params.get("horizon_s", 1.0))
            )
            for h, host in enumerate(self.hosts)
            for p, pop in enumerate(host.populations)
        ]
        return Universe(instruments, AgentLayout(slots))

    def population_symbols(self, host: int, population: int) -> list[int]:
        """Symbol indexes of population ``population`` of host ``host``."""
        chosen = self.hosts[host].populations[population].symbols
        names = self.symbol_names
        return list(range(len(names))) if chosen is None else [names.index(s) for s in chosen]

    def population_seed(self, host: int, population: int) -> int:
        """The population's seed, or one derived from the feed seed and its position."""
        seed = self.hosts[host].populations[population].seed
        if seed is not None:
            return seed
        return int(np.random.SeedSequence([self.feed.seed, host, population]).generate_state(1)[0])


def load_config(
    path: str | os.PathLike[str],
    *,
    available_cores: Collection[int] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Read and validate the TOML config at ``path``; ConfigError listing every problem.

    Explicit CPU cores are checked against ``available_cores``, by default the cores this
    process may run on (``os.sched_getaffinity(0)``). ``overrides`` replace keys of tables
    before validation (``{"feed": {"path": ...}}``), for commands that take them as options.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([("", f"cannot read: {exc.strerror or exc}")], path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"not UTF-8 text: {exc}")], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_error(str(exc))], path) from None
    for table, values in (overrides or {}).items():
        data[table] = {**data.get(table, {}), **values}
    cores = os.sched_getaffinity(0) if available_cores is None else available_cores
    try:
        return validate_config(data, available_cores=cores)
    except ConfigError as exc:
        raise ConfigError(exc.errors, path) from None


def validate_config(
    data: dict[str, Any], *, available_cores: Collection[int] | None = None
) -> Config:
    """A Config from its dict form (a TOML file's, or ``model_dump``'s); ConfigError
    listing every problem. Explicit CPU cores are checked only if ``available_cores``."""
    context = None if available_cores is None else {"available_cores": set(available_cores)}
    try:
        return Config.model_validate(data, context=context)
    except ValidationError as exc:
        errors = _from_validation_error(exc)
        raise ConfigError(errors + _early_params_errors(data, errors)) from None


def _early_params_errors(
    data: Mapping[str, Any], reported: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Population params are checked with the checks across tables, which only run once
    every table is valid; so that a file's errors are all reported together, check the
    params of each population here too when the errors are elsewhere. The raw data may be
    malformed in any way: what cannot be read is left to the errors already reported."""
    errors: list[tuple[str, str]] = []
    try:
        n_all = len(data.get("symbols", []))
        for h, host in enumerate(data.get("hosts", [])):
            for p, pop in enumerate(host.get("populations", [])):
                loc = f"hosts[{h}].populations[{p}]"
                if any(where.startswith(loc) for where, _ in reported):
                    continue  # its kind, symbols or agents are wrong: nothing to check by
                kind = population_class(str(pop.get("kind")))
                n = len(pop["symbols"]) if pop.get("symbols") else n_all
                try:
                    kind.validate_params(pop.get("params", {}), n)
                except ValidationError as exc:
                    errors += _from_validation_error(exc, prefix=f"{loc}.params")
    except (AttributeError, TypeError, ValueError):
        pass
    return errors


def _toml_error(message: str) -> tuple[str, str]:
    # Python 3.11's TOMLDecodeError carries the position only in its message.
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m is None:
        return ("", f"TOML syntax error: {message}")
    return (f"line {m[1]}, column {m[2]}", f"TOML syntax error: {message[: m.start()]}")


# ---- diff and hot reload ---------------------------------------------------------------
#
# diff_config is the one place that decides how a change of the config is applied: live by
# the running processes, by restarting the processes it concerns, or not at all while the
# appliance runs (it needs the whole appliance restarted). The supervisor's reload acts on
# its answer and keeps no list of its own.


@dataclass(frozen=True)
class Change:
    """One difference between two configs and what it takes to apply it."""

    # Dotted location, e.g. "symbols[0].max_position", "hosts[1].populations[0].params".
    path: str
    old: Any
    new: Any
    # None: applied live by the running processes; else what must restart to apply it:
    # "feed", "execution", "recorder", an agent host's name, or "appliance" (the whole
    # appliance: a running appliance refuses the change, see ``why``).
    restart: str | None
    why: str = ""  # for "appliance": what makes it need the whole appliance

    @property
    def live(self) -> bool:
        return self.restart is None

    @property
    def refused(self) -> bool:
        """Not appliable to a running appliance."""
        return self.restart == APPLIANCE

    def __str__(self) -> str:
        if self.restart is None:
            how = "live"
        elif self.refused:
            how = f"needs a restart of the whole appliance: {self.why}"
        else:
            how = f"restart {self.restart}"
        return f"{self.path}: {self.old!r} -> {self.new!r} ({how})"


_MISSING = object()

# Paths applied live by the processes that read them (trading state, risk limits, netting
# policies and population priorities by execution, feed rate by the feed, log format by
# every process, the status interval and the supervisor's limits by the supervisor and
# execution).
_LIVE = re.compile(
    r"^(trading\..*|risk\..*|feed\.rate|log_format|status_interval_s|supervisor\..*"
    r"|symbols\[\d+\]\.(max_position|max_order_notional|max_order_qty|price_band_bps"
    r"|max_open_orders|netting)"
    r"|hosts\[\d+\]\.populations\[\d+\]\.priority)$"
)
# Paths only a restart of the whole appliance applies, and why.
_WHOLE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), why)
    for p, why in [
        (r"^instance$", "it names every shared-memory segment"),
        (r"^(ring|queue)_capacity$", "it sizes shared-memory segments"),
        (r"^wait$", "it is every process's wait strategy"),
        (r"^cpu\.mode$", "it places every process on its cores"),
        (r"^symbols", "the symbol table is in every process, every record and the journal"),
        (
            r"^hosts",
            "the layout of hosts and populations sizes the queues and position snapshots "
            "and is recorded in the journal",
        ),
        (
            r"^(journal_path|venue_state_path)$",
            "the journal and the venue state hold the appliance's orders and positions",
        ),
        (r"^recorder\.enabled$", "it adds or removes a process"),
        (r"^compute", "it is the kernel backend of every agent host"),
        (r"^operator_group$", "every segment is created with that group"),
        (
            r"^execution\.(venue|ccxt\.(exchange|sandbox))$",
            "the journal's open orders and positions are at the venue it names",
        ),
    ]
]


def diff_config(old: Config, new: Config) -> list[Change]:
    """Every leaf that differs between ``old`` and ``new``, classified live, restart of a
    process, or restart of the whole appliance.

    Lists of different lengths (symbols, hosts, populations) are one change of the list.
    """
    changes: list[Change] = []
    _diff(old.model_dump(), new.model_dump(), (), old, changes)
    return changes


def _diff(a: Any, b: Any, loc: tuple[str | int, ...], old: Config, out: list[Change]) -> None:
    if isinstance(a, dict) and isinstance(b, dict) and not _is_params(loc):
        for key in [*a, *(k for k in b if k not in a)]:
            _diff(a.get(key, _MISSING), b.get(key, _MISSING), (*loc, key), old, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and _is_layout(loc):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, (*loc, i), old, out)
    elif a != b:
        path = format_loc(loc)
        out.append(
            Change(
                path,
                None if a is _MISSING else a,
                None if b is _MISSING else b,
                *_classify(path, loc, old),
            )
        )


def _is_params(loc: tuple[str | int, ...]) -> bool:
    # A population's params table is compared whole: its keys are the kind's business.
    return len(loc) == 5 and loc[0] == "hosts" and loc[-1] in ("params", "grid")


def _is_layout(loc: tuple[str | int, ...]) -> bool:
    # Lists compared element by element; other lists (core lists, symbol lists of a
    # population) are values.
    return loc in (("symbols",), ("hosts",)) or (len(loc) == 3 and loc[2] == "populations")


def _classify(path: str, loc: tuple[str | int, ...], old: Config) -> tuple[str | None, str]:
    """(restart target, why) of a change at ``path``: see ``Change.restart``."""
    if _LIVE.match(path):
        return None, ""
    top = loc[0]
    if top == "hosts" and len(loc) == 5 and loc[-1] in ("params", "seed", "grid"):
        # A population's params only change its host's agents; the layout stays.
        return old.hosts[int(loc[1])].name, ""
    for pattern, why in _WHOLE:
        if pattern.match(path):
            return APPLIANCE, why
    if top == "feed":
        return Role.FEED, ""
    if top in ("execution", "metrics"):
        return Role.EXECUTION, ""
    if top == "recorder":  # recorder.enabled is whole-appliance (above)
        return Role.RECORDER, ""
    if top == "cpu" and len(loc) == 3:
        key = str(loc[2])
        if key in (*WORKERS, *CLUSTER_WORKERS) or key in (h.name for h in old.hosts):
            return key, ""  # that process is restarted on its new cores
    return APPLIANCE, "every process depends on it"
