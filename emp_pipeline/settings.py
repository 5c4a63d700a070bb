"""Every environment variable the project reads, in one place, validated once, with embedded-mode defaults.

The embedded mode needs no server and no network: SQLite registry, Parquet files and the bundled sample
data under a local home directory. Production sets the variables (docker-compose passes them through).

`Settings.from_env()` is called once per process entry point (the `emp` command, `definitions.py` for
`dagster dev` and the code server); everything else receives the object it built. The study's settings (GA,
gates, costs) may also sit in the home's settings file, EMP_HOME/settings.env (`emp demo` writes its own
there), so `emp demo`, `make ui` and `emp run` share one set; a variable set in the environment wins over
it. A bad value stops the process at start-up with one `SettingsError` that names the variable, the value
and what is accepted, never later at trading time. Secrets are kept out of `repr`, and URLs are shown with
their password masked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from emp_pipeline.domain.costs import DEFAULT_CAPITAL, DEFAULT_FEE_BPS, DEFAULT_SLIPPAGE_BPS, MAX_BPS, Costs
from emp_pipeline.domain.evolution import FITNESSES
from emp_pipeline.domain.instruments import UniverseError, load_universe
from emp_pipeline.domain.risk import RiskLimits
from emp_pipeline.domain.study_windows import DEFAULT_TRAIN_MONTHS
from emp_pipeline.domain.timeframes import Timeframe, TimeframeError
from emp_pipeline.endpoint_security import InsecureEndpointError, require_tls_off_loopback

PACKAGE_DIR = Path(__file__).resolve().parent
UNIVERSES_DIR = PACKAGE_DIR / "data" / "universes"
SAMPLE_UNIVERSE_FILE = UNIVERSES_DIR / "sample.yaml"
DEFAULT_UNIVERSE_FILE = UNIVERSES_DIR / "default.yaml"

DATA_SOURCES = ("sample", "csv", "yahoo", "ctrader")
# A CSV folder of unknown instruments needs no YAML: its universe is inferred from the files at run time.
DEFAULT_UNIVERSE_FILES: dict[str, Path | None] = {
    "sample": SAMPLE_UNIVERSE_FILE,
    "yahoo": DEFAULT_UNIVERSE_FILE,
    "csv": None,
    "ctrader": None,  # the venue gives terms, not asset classes and calendars: a universe file is needed
}
# What EMP_DATA_SOURCE=ctrader needs besides the universe file: the Open API application and the account.
CTRADER_DATA_VARIABLES = ("CTRADER_CLIENT_ID", "CTRADER_CLIENT_SECRET", "CTRADER_ACCOUNT_ID")
BROKERS = ("paper", "ctrader")
REGIME_CLASSIFIERS = ("rules", "hmm")
DATABASE_BACKENDS = ("sqlite", "postgresql")
REDIS_SCHEMES = ("redis", "rediss", "unix")
TOKEN_REQUEST_METHODS = ("GET", "POST")  # GET: what cTrader's official SDKs send (docs/operations.md)
MASK = "***"
# The home's settings file and what it may set: the study's settings only. Locations, services and secrets
# stay in the environment (a secret in a file under the home would outlive the shell that set it).
SETTINGS_FILE_NAME = "settings.env"
STUDY_VARIABLES = (
    "EMP_EVOLUTION_SEED",
    "EMP_EVOLUTION_POPULATION",
    "EMP_EVOLUTION_GENERATIONS",
    "EMP_EVOLUTION_FITNESS",
    "EMP_REGIME_CLASSIFIER",
    "EMP_NULL_GENOMES",
    "EMP_WALK_FORWARD_TRAIN_MONTHS",
    "EMP_FEE_BPS",
    "EMP_SLIPPAGE_BPS",
    "EMP_CAPITAL",
    "EMP_GATE_MIN_SHARPE",
    "EMP_GATE_MIN_DEFLATED_SHARPE",
    "EMP_GATE_MAX_DRAWDOWN",
    "EMP_GATE_MIN_TRADES",
    "EMP_GATE_MAX_NULL_P_VALUE",
    "EMP_MAX_CHAMPIONS",
)


class SettingsError(ValueError):
    """A setting that cannot work; the one-line message names the variable, its value and what it accepts."""


def masked_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for printing, logging and repr."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{host}").geturl()


@dataclass(frozen=True)
class DataSettings:
    """Where bars come from: the source, the universe and its timeframe, and the FRED key for WHY.

    With the cTrader source the account and application are the ones the live and token sections name;
    `ctrader_symbol_map` maps the universe's symbols to the broker's names where they differ.
    """

    source: str = "sample"  # EMP_DATA_SOURCE
    universe_file: Path | None = SAMPLE_UNIVERSE_FILE  # EMP_UNIVERSE_FILE; None = inferred from a CSV folder
    csv_dir: Path | None = None  # EMP_CSV_DIR
    timeframe: Timeframe = Timeframe.D1  # EMP_TIMEFRAME
    # EMP_DATA_START_DATE: first partition day when no universe file declares one (a CSV folder's universe
    # is inferred from its files at run time, never while the definitions load).
    start_date: date = date(2000, 1, 1)
    fred_api_key: str | None = field(default=None, repr=False)  # FRED_API_KEY
    ctrader_symbol_map: tuple[tuple[str, str], ...] = ()  # CTRADER_SYMBOL_MAP: OURS=BROKERS,...

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise SettingsError(f"EMP_DATA_SOURCE={self.source!r} is not one of {', '.join(DATA_SOURCES)}")
        if self.source == "csv" and self.csv_dir is None:
            raise SettingsError("EMP_DATA_SOURCE=csv needs EMP_CSV_DIR, the folder of <SYMBOL>.csv files")
        if self.universe_file is None and self.source != "csv":
            raise SettingsError(f"EMP_DATA_SOURCE={self.source} needs EMP_UNIVERSE_FILE")


@dataclass(frozen=True)
class ResearchSettings:
    """The walk-forward study: the GA's size and seed, the regime classifier, the costs it measures new runs
    with, and the one capital (account currency behind 1.0 of a strategy's kernel equity, the paper account's
    starting cash, the gates' replay capital).

    `costs` is the one cost knob: new evolution runs are measured with it and record it, and the paper broker
    (the simulated venue) charges it. A strategy already recorded keeps the costs it was measured with: the
    gates replay it and the live job trades it with those, read from the registry (domain/costs.py).
    """

    seed: int = 7  # EMP_EVOLUTION_SEED
    population: int = 200  # EMP_EVOLUTION_POPULATION
    generations: int = 50  # EMP_EVOLUTION_GENERATIONS
    fitness: str = "full_window"  # EMP_EVOLUTION_FITNESS: full_window or inner_folds (domain/evolution.py)
    regime_classifier: str = "rules"  # EMP_REGIME_CLASSIFIER
    null_genomes: int = 1000  # EMP_NULL_GENOMES: random genomes per period in the null model
    # EMP_WALK_FORWARD_TRAIN_MONTHS: the training span, turned into bars of the timeframe (study_windows.py)
    train_months: int = DEFAULT_TRAIN_MONTHS
    costs: Costs = field(default_factory=Costs)  # EMP_FEE_BPS, EMP_SLIPPAGE_BPS (per side, bps)
    capital: float = DEFAULT_CAPITAL  # EMP_CAPITAL


@dataclass(frozen=True)
class PromotionGateSettings:
    """What a champion must show out of sample, how many may trade, and how the promotion gates audit them."""

    min_sharpe: float = 0.5  # EMP_GATE_MIN_SHARPE, annualised out-of-sample Sharpe
    min_deflated_sharpe: float = 0.5  # EMP_GATE_MIN_DEFLATED_SHARPE
    max_drawdown: float = 0.15  # EMP_GATE_MAX_DRAWDOWN, magnitude, fraction of equity
    min_trades: int = 2  # EMP_GATE_MIN_TRADES
    max_null_p_value: float = 0.05  # EMP_GATE_MAX_NULL_P_VALUE: p-value of its Sharpe against the null model
    max_champions: int = 3  # EMP_MAX_CHAMPIONS
    # The look-ahead and parity gates: the newest bars they judge, and how many cut / audit points.
    window_bars: int | None = None  # None: a year of bars of the universe's timeframe (parity.gates)
    history_bars: int = 300
    lookahead_cuts: int = 8
    parity_audits: int = 8
    audit_seed: int = 0


@dataclass(frozen=True)
class LiveSettings:
    """Live execution: the broker, the risk limits (fractions of account equity) and where alerts go."""

    broker: str = "paper"  # EMP_BROKER
    max_position_fraction: float = 0.25  # EMP_MAX_POSITION_FRACTION
    max_gross_exposure: float = 1.0  # EMP_MAX_GROSS_EXPOSURE
    daily_loss_limit: float = 0.05  # EMP_DAILY_LOSS_LIMIT
    alert_webhook_url: str | None = field(default=None, repr=False)  # may embed a token (Slack-style)
    ctrader_account_id: int = 0  # CTRADER_ACCOUNT_ID: the ctidTraderAccountId the live job trades
    ctrader_api_url: str = "wss://demo.ctraderapi.com:5036"  # CTRADER_API_URL

    def risk_limits(self) -> RiskLimits:
        """The environment's limits: ceilings of every live run, and what research sizes within."""
        return RiskLimits(
            max_position_fraction=self.max_position_fraction,
            max_gross_exposure=self.max_gross_exposure,
            daily_loss_limit=self.daily_loss_limit,
        )


@dataclass(frozen=True)
class TokenSettings:
    """The cTrader OAuth application and where its token lives (emp_pipeline/auth); secrets out of repr."""

    client_id: str | None = None  # CTRADER_CLIENT_ID
    client_secret: str | None = field(default=None, repr=False)  # CTRADER_CLIENT_SECRET
    refresh_token: str | None = field(default=None, repr=False)  # CTRADER_REFRESH_TOKEN
    token_url: str = "https://openapi.ctrader.com"  # CTRADER_TOKEN_URL
    redirect_uri: str | None = None  # CTRADER_REDIRECT_URI
    refresh_margin_s: float = 3600.0  # CTRADER_REFRESH_MARGIN_SECONDS
    key: str | None = field(default=None, repr=False)  # EMP_TOKEN_KEY (encrypts the stored token)
    key_prefix: str = "emp:"  # EMP_TOKEN_KEY_PREFIX
    request_method: str = "GET"  # CTRADER_TOKEN_REQUEST_METHOD


@dataclass(frozen=True)
class Settings:
    """A validated snapshot of the environment; build it with `Settings.from_env()` (tests pass a mapping)."""

    home: Path
    data_dir: Path
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    data: DataSettings = field(default_factory=DataSettings)
    research: ResearchSettings = field(default_factory=ResearchSettings)
    gates: PromotionGateSettings = field(default_factory=PromotionGateSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    token: TokenSettings = field(default_factory=TokenSettings)

    def __repr__(self) -> str:
        return (
            f"Settings(home={str(self.home)!r}, data_dir={str(self.data_dir)!r}, "
            f"database_url={masked_url(self.database_url)!r}, redis_url={masked_url(self.redis_url)!r}, "
            f"data={self.data!r}, research={self.research!r}, gates={self.gates!r}, live={self.live!r}, "
            f"token={self.token!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check every variable; the first bad one raises SettingsError naming it.

        The process environment (no `environ`) is read over the home's settings file; a mapping passed in is
        the whole environment (tests), so a developer's settings file never changes what a test sees.
        """
        if environ is not None:
            return cls._from_variables(_Variables(environ))
        home = _Variables(os.environ).path("EMP_HOME", Path.cwd() / ".emp")
        path = home / SETTINGS_FILE_NAME
        from_file = read_settings_file(path)
        environment = {name: value for name, value in os.environ.items() if value.strip()}
        try:
            return cls._from_variables(_Variables({**from_file, **environment}))
        except SettingsError as error:
            if any(str(error).startswith(f"{name}=") for name in from_file.keys() - environment.keys()):
                raise SettingsError(f"{error} (set in {path})") from None
            raise

    @classmethod
    def _from_variables(cls, env: _Variables) -> Settings:
        home = env.path("EMP_HOME", Path.cwd() / ".emp")
        data = _data_settings(env)
        return cls(
            home=home,
            data_dir=env.path("EMP_DATA_DIR", home / "data"),
            database_url=_database_url(env, home),
            redis_url=env.url("REDIS_URL", "redis://127.0.0.1:6379/0", REDIS_SCHEMES),
            data=data,
            research=ResearchSettings(
                seed=env.integer("EMP_EVOLUTION_SEED", 7, low=0),
                population=env.integer("EMP_EVOLUTION_POPULATION", 200, low=4),
                generations=env.integer("EMP_EVOLUTION_GENERATIONS", 50, low=1),
                fitness=env.choice("EMP_EVOLUTION_FITNESS", "full_window", FITNESSES),
                regime_classifier=env.choice("EMP_REGIME_CLASSIFIER", "rules", REGIME_CLASSIFIERS),
                null_genomes=env.integer("EMP_NULL_GENOMES", 1000, low=1),
                train_months=env.integer("EMP_WALK_FORWARD_TRAIN_MONTHS", DEFAULT_TRAIN_MONTHS, low=1),
                costs=Costs(
                    fee_bps=env.number("EMP_FEE_BPS", DEFAULT_FEE_BPS, low=0.0, high=MAX_BPS),
                    slippage_bps=env.number("EMP_SLIPPAGE_BPS", DEFAULT_SLIPPAGE_BPS, low=0.0, high=MAX_BPS),
                ),
                capital=env.number("EMP_CAPITAL", DEFAULT_CAPITAL, low=0.0, low_open=True),
            ),
            gates=PromotionGateSettings(
                min_sharpe=env.number("EMP_GATE_MIN_SHARPE", 0.5, low=-10.0, high=10.0),
                min_deflated_sharpe=env.number("EMP_GATE_MIN_DEFLATED_SHARPE", 0.5, low=0.0, high=1.0),
                max_drawdown=env.number("EMP_GATE_MAX_DRAWDOWN", 0.15, low=0.0, high=1.0),
                min_trades=env.integer("EMP_GATE_MIN_TRADES", 2, low=0),
                max_null_p_value=env.number("EMP_GATE_MAX_NULL_P_VALUE", 0.05, low=0.0, high=1.0),
                max_champions=env.integer("EMP_MAX_CHAMPIONS", 3, low=1),
            ),
            live=LiveSettings(
                broker=env.choice("EMP_BROKER", "paper", BROKERS),
                max_position_fraction=env.number(
                    "EMP_MAX_POSITION_FRACTION", 0.25, low=0.0, high=1.0, low_open=True
                ),
                max_gross_exposure=env.number(
                    "EMP_MAX_GROSS_EXPOSURE", 1.0, low=0.0, high=10.0, low_open=True
                ),
                daily_loss_limit=env.number("EMP_DAILY_LOSS_LIMIT", 0.05, low=0.0, high=1.0, low_open=True),
                alert_webhook_url=env.optional_url("EMP_ALERT_WEBHOOK_URL", ("http", "https")),
                ctrader_account_id=env.integer("CTRADER_ACCOUNT_ID", 0, low=0),
                ctrader_api_url=env.secret_endpoint(
                    "CTRADER_API_URL", "wss://demo.ctraderapi.com:5036", "wss"
                ),
            ),
            token=TokenSettings(
                client_id=env.text("CTRADER_CLIENT_ID"),
                client_secret=env.text("CTRADER_CLIENT_SECRET"),
                refresh_token=env.text("CTRADER_REFRESH_TOKEN"),
                token_url=env.secret_endpoint("CTRADER_TOKEN_URL", "https://openapi.ctrader.com", "https"),
                redirect_uri=env.optional_url("CTRADER_REDIRECT_URI", ("http", "https")),
                refresh_margin_s=env.number(
                    "CTRADER_REFRESH_MARGIN_SECONDS", 3600.0, low=0.0, high=30 * 86400.0, low_open=True
                ),
                key=env.text("EMP_TOKEN_KEY"),
                key_prefix=env.text("EMP_TOKEN_KEY_PREFIX") or "emp:",
                request_method=env.choice(
                    "CTRADER_TOKEN_REQUEST_METHOD", "GET", TOKEN_REQUEST_METHODS, normalise=str.upper
                ),
            ),
        )


def read_settings_file(path: Path) -> dict[str, str]:
    """The NAME=value lines of a settings file ({} if there is none); `#` starts a comment line.

    Only STUDY_VARIABLES may be set, each once; the values are checked with the environment's, by name.
    """
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, equals, value = (part.strip() for part in text.partition("="))
        where = f"{path}, line {number}"
        if not equals or not name:
            raise SettingsError(f"{where}: {text!r} is not NAME=value")
        if name not in STUDY_VARIABLES:
            raise SettingsError(
                f"{where}: {name} cannot be set in the settings file, only the study's settings "
                f"({', '.join(STUDY_VARIABLES)}); set it in the environment"
            )
        if name in values:
            raise SettingsError(f"{where}: {name} is set twice")
        values[name] = value
    return values


def _data_settings(env: _Variables) -> DataSettings:
    source = env.choice("EMP_DATA_SOURCE", "sample", DATA_SOURCES)
    csv_dir = env.optional_path("EMP_CSV_DIR")
    if source == "csv" and csv_dir is not None and not csv_dir.is_dir():
        raise SettingsError(f"EMP_CSV_DIR={str(csv_dir)!r} is not a folder: point it at the CSV files")
    universe_file = env.optional_path("EMP_UNIVERSE_FILE") or DEFAULT_UNIVERSE_FILES[source]
    if universe_file is not None:
        if not universe_file.is_file():
            raise SettingsError(
                f"EMP_UNIVERSE_FILE={str(universe_file)!r} does not exist: give the path of a universe file"
            )
        try:
            load_universe(universe_file)
        except UniverseError as error:
            raise SettingsError(f"EMP_UNIVERSE_FILE: {error}") from None
    if source == "ctrader":
        missing = [name for name in CTRADER_DATA_VARIABLES if env.text(name) is None]
        if missing:
            raise SettingsError(
                f"EMP_DATA_SOURCE=ctrader needs {', '.join(missing)}: the Open API application and the "
                "account whose bars are read"
            )
        env.integer("CTRADER_ACCOUNT_ID", 0, low=1)
    return DataSettings(
        source=source,
        universe_file=universe_file,
        csv_dir=csv_dir,
        timeframe=env.timeframe("EMP_TIMEFRAME", Timeframe.D1),
        start_date=env.day("EMP_DATA_START_DATE", date(2000, 1, 1)),
        fred_api_key=env.text("FRED_API_KEY"),
        ctrader_symbol_map=env.pairs("CTRADER_SYMBOL_MAP"),
    )


def _database_url(env: _Variables, home: Path) -> str:
    """EMP_DATABASE_URL, else DATABASE_URL, else a SQLite file in the home; only sqlite or postgresql."""
    name = "EMP_DATABASE_URL" if env.text("EMP_DATABASE_URL") else "DATABASE_URL"
    url = env.text(name)
    if url is None:
        return f"sqlite:///{home / 'registry.sqlite'}"
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise SettingsError(
            f"{name}={masked_url(url)!r} is not a database URL: use sqlite:///<path> or "
            "postgresql://<user>:<password>@<host>/<database>"
        ) from None
    if backend not in DATABASE_BACKENDS:
        raise SettingsError(
            f"{name}={masked_url(url)!r} uses {backend!r}: the registry supports "
            f"{', '.join(DATABASE_BACKENDS)}"
        )
    return url


class _Variables:
    """Typed reads of environment variables; an empty value means unset (as `VAR=` in an env file)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def text(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def path(self, name: str, default: Path) -> Path:
        return Path(self.text(name) or default).resolve()

    def optional_path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value).resolve() if value else None

    def choice(
        self, name: str, default: str, choices: tuple[str, ...], normalise: Callable[[str], str] = str
    ) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if normalise(raw) not in choices:
            raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")
        return normalise(raw)

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float,
        high: float = math.inf,
        low_open: bool = False,
    ) -> float:
        """A finite number in [low, high] (or (low, high] with `low_open`)."""
        raw = self.text(name)
        if raw is None:
            return default
        accepted = f"{'(' if low_open else '['}{low:g}, {'inf)' if math.isinf(high) else f'{high:g}]'}"
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw} is not a number: use a decimal in {accepted}") from None
        inside = (value > low if low_open else value >= low) and value <= high
        if not (math.isfinite(value) and inside):
            raise SettingsError(f"{name}={raw} is outside {accepted}")
        return value

    def integer(self, name: str, default: int, *, low: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw} is not a whole number: use an integer >= {low}") from None
        if value < low:
            raise SettingsError(f"{name}={raw} is below {low}: use an integer >= {low}")
        return value

    def pairs(self, name: str) -> tuple[tuple[str, str], ...]:
        """`A=B,C=D` -> (("A", "B"), ("C", "D")); each left side at most once."""
        raw = self.text(name)
        if raw is None:
            return ()
        pairs: dict[str, str] = {}
        for entry in raw.split(","):
            left, equals, right = (part.strip() for part in entry.partition("="))
            if not (equals and left and right):
                raise SettingsError(f"{name}: {entry.strip()!r} is not OURS=BROKERS (e.g. GOLD=XAUUSD)")
            if left in pairs:
                raise SettingsError(f"{name}: {left!r} is mapped twice ({pairs[left]!r} and {right!r})")
            pairs[left] = right
        return tuple(pairs.items())

    def day(self, name: str, default: date) -> date:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw} is not a date: use YYYY-MM-DD") from None

    def timeframe(self, name: str, default: Timeframe) -> Timeframe:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            return Timeframe.parse(raw)
        except TimeframeError:
            accepted = ", ".join(member.value for member in Timeframe)
            raise SettingsError(f"{name}={raw} is not a timeframe: use one of {accepted}") from None

    def secret_endpoint(self, name: str, default: str, tls_scheme: str) -> str:
        """A URL secrets travel to: TLS, or its plain twin (http, ws) on loopback only (endpoint_security)."""
        plain_scheme = {"https": "http", "wss": "ws"}[tls_scheme]
        url = self.text(name) or default
        try:
            require_tls_off_loopback(url, variable=name, tls_scheme=tls_scheme, plain_scheme=plain_scheme)
        except InsecureEndpointError as error:
            raise SettingsError(str(error)) from None
        return self._checked_url(name, url, (tls_scheme, plain_scheme))

    def url(self, name: str, default: str, schemes: tuple[str, ...]) -> str:
        return self.optional_url(name, schemes) or default

    def optional_url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        return None if raw is None else self._checked_url(name, raw, schemes)

    @staticmethod
    def _checked_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - parsing the port is the check (a non-numeric port raises)
        except ValueError as error:
            raise SettingsError(f"{name}={masked_url(raw)!r} is not a URL ({error})") from None
        if parts.scheme not in schemes or not (parts.netloc or parts.scheme == "unix"):
            raise SettingsError(
                f"{name}={masked_url(raw)!r} is not a {' or '.join(f'{s}://' for s in schemes)} URL"
            )
        return raw
