"""Every environment variable the project reads, in one place, with embedded-mode defaults.

The embedded mode needs no server and no network: SQLite registry, Parquet files and the bundled sample
data under a local home directory. Production sets the variables (docker-compose passes them through).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from emp_pipeline.endpoint_security import require_tls_off_loopback

PACKAGE_DIR = Path(__file__).resolve().parent
UNIVERSES_DIR = PACKAGE_DIR / "data" / "universes"
SAMPLE_UNIVERSE_FILE = UNIVERSES_DIR / "sample.yaml"
DEFAULT_UNIVERSE_FILE = UNIVERSES_DIR / "default.yaml"

DATA_SOURCES = ("sample", "csv", "yahoo")
BROKERS = ("paper", "ctrader")
REGIME_CLASSIFIERS = ("rules", "hmm")
TOKEN_REQUEST_METHODS = ("GET", "POST")  # GET: what cTrader's official SDKs send (docs/operations.md)


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build it with `Settings.from_env()` so tests can pass their own."""

    home: Path
    data_dir: Path
    database_url: str
    data_source: str
    universe_file: Path | None
    csv_dir: Path | None
    redis_url: str
    broker: str
    # --- cTrader OAuth token (emp_pipeline/auth): secrets kept out of repr so they never reach a log ---
    ctrader_client_id: str | None = None
    ctrader_client_secret: str | None = field(default=None, repr=False)
    ctrader_refresh_token: str | None = field(default=None, repr=False)
    ctrader_token_url: str = "https://openapi.ctrader.com"
    ctrader_redirect_uri: str | None = None
    ctrader_refresh_margin_s: float = 3600.0
    emp_token_key: str | None = field(default=None, repr=False)
    token_key_prefix: str = "emp:"
    ctrader_token_request_method: str = "GET"
    # --- end cTrader OAuth token ---
    # --- live execution (emp_pipeline/live, defs/live/): risk limits as fractions of account equity ---
    max_position_fraction: float = 0.25
    max_gross_exposure: float = 1.0
    daily_loss_limit: float = 0.05
    alert_webhook_url: str | None = field(default=None, repr=False)  # may embed a token (Slack-style)
    ctrader_account_id: int = 0  # the ctidTraderAccountId the live job trades (broker=ctrader)
    ctrader_api_url: str = "wss://demo.ctraderapi.com:5036"
    # --- end live execution ---
    # --- perception (defs/perception/): macro source for WHY and the regime classifier ---
    fred_api_key: str | None = field(default=None, repr=False)
    regime_classifier: str = "rules"
    # --- end perception ---
    # --- walk-forward research (defs/research/) ---
    evolution_seed: int = 7
    evolution_population: int = 200
    evolution_generations: int = 50
    demo_population: int = 40  # `emp demo` keeps its walk-forward cheap; research runs use the two above
    demo_generations: int = 8
    gate_min_sharpe: float = 0.5  # annualised out-of-sample Sharpe
    gate_min_deflated_sharpe: float = 0.5
    gate_max_drawdown: float = 0.15  # magnitude, fraction of equity
    gate_min_trades: int = 2
    gate_max_null_p_value: float = 0.05  # champion gate: p-value of its Sharpe against the null model
    null_genomes: int = 1000  # random genomes per period in the null model
    max_champions: int = 3
    # --- end walk-forward research ---

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("EMP_HOME", Path.cwd() / ".emp")).resolve()
        data_dir = Path(env.get("EMP_DATA_DIR", home / "data")).resolve()
        database_url = (
            env.get("EMP_DATABASE_URL") or env.get("DATABASE_URL") or f"sqlite:///{home / 'registry.sqlite'}"
        )
        data_source = env.get("EMP_DATA_SOURCE", "sample")
        if data_source not in DATA_SOURCES:
            raise ValueError(f"EMP_DATA_SOURCE={data_source!r} is not one of {', '.join(DATA_SOURCES)}")
        # A CSV folder of unknown instruments needs no YAML: its universe is inferred from the files.
        default_universe = {"sample": SAMPLE_UNIVERSE_FILE, "yahoo": DEFAULT_UNIVERSE_FILE, "csv": None}[
            data_source
        ]
        universe_file = env.get("EMP_UNIVERSE_FILE") or default_universe
        broker = env.get("EMP_BROKER", "paper")
        if broker not in BROKERS:
            raise ValueError(f"EMP_BROKER={broker!r} is not one of {', '.join(BROKERS)}")
        csv_dir = env.get("EMP_CSV_DIR")
        # Secrets go to these two over TLS only (plain http/ws is accepted on loopback, for local servers).
        token_url = require_tls_off_loopback(
            env.get("CTRADER_TOKEN_URL") or "https://openapi.ctrader.com",
            variable="CTRADER_TOKEN_URL",
            tls_scheme="https",
            plain_scheme="http",
        )
        api_url = require_tls_off_loopback(
            env.get("CTRADER_API_URL") or "wss://demo.ctraderapi.com:5036",
            variable="CTRADER_API_URL",
            tls_scheme="wss",
            plain_scheme="ws",
        )
        token_request_method = (env.get("CTRADER_TOKEN_REQUEST_METHOD") or "GET").upper()
        if token_request_method not in TOKEN_REQUEST_METHODS:
            raise ValueError(
                f"CTRADER_TOKEN_REQUEST_METHOD={env['CTRADER_TOKEN_REQUEST_METHOD']!r} is not one of "
                f"{', '.join(TOKEN_REQUEST_METHODS)}"
            )
        regime_classifier = env.get("EMP_REGIME_CLASSIFIER") or "rules"
        if regime_classifier not in REGIME_CLASSIFIERS:
            raise ValueError(
                f"EMP_REGIME_CLASSIFIER={regime_classifier!r} is not one of {', '.join(REGIME_CLASSIFIERS)}"
            )
        return cls(
            home=home,
            data_dir=data_dir,
            database_url=database_url,
            data_source=data_source,
            universe_file=Path(universe_file).resolve() if universe_file else None,
            csv_dir=Path(csv_dir).resolve() if csv_dir else None,
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            broker=broker,
            # --- cTrader OAuth token ---
            ctrader_client_id=env.get("CTRADER_CLIENT_ID") or None,
            ctrader_client_secret=env.get("CTRADER_CLIENT_SECRET") or None,
            ctrader_refresh_token=env.get("CTRADER_REFRESH_TOKEN") or None,
            ctrader_token_url=token_url,
            ctrader_redirect_uri=env.get("CTRADER_REDIRECT_URI") or None,
            ctrader_refresh_margin_s=float(env.get("CTRADER_REFRESH_MARGIN_SECONDS") or 3600.0),
            emp_token_key=env.get("EMP_TOKEN_KEY") or None,
            token_key_prefix=env.get("EMP_TOKEN_KEY_PREFIX") or "emp:",
            ctrader_token_request_method=token_request_method,
            # --- end cTrader OAuth token ---
            # --- live execution ---
            max_position_fraction=float(env.get("EMP_MAX_POSITION_FRACTION") or 0.25),
            max_gross_exposure=float(env.get("EMP_MAX_GROSS_EXPOSURE") or 1.0),
            daily_loss_limit=float(env.get("EMP_DAILY_LOSS_LIMIT") or 0.05),
            alert_webhook_url=env.get("EMP_ALERT_WEBHOOK_URL") or None,
            ctrader_account_id=int(env.get("CTRADER_ACCOUNT_ID") or 0),
            ctrader_api_url=api_url,
            # --- end live execution ---
            # --- perception ---
            fred_api_key=env.get("FRED_API_KEY") or None,
            regime_classifier=regime_classifier,
            # --- end perception ---
            # --- walk-forward research ---
            evolution_seed=int(env.get("EMP_EVOLUTION_SEED") or 7),
            evolution_population=int(env.get("EMP_EVOLUTION_POPULATION") or 200),
            evolution_generations=int(env.get("EMP_EVOLUTION_GENERATIONS") or 50),
            gate_min_sharpe=float(env.get("EMP_GATE_MIN_SHARPE") or 0.5),
            gate_min_deflated_sharpe=float(env.get("EMP_GATE_MIN_DEFLATED_SHARPE") or 0.5),
            gate_max_drawdown=float(env.get("EMP_GATE_MAX_DRAWDOWN") or 0.15),
            gate_min_trades=int(env.get("EMP_GATE_MIN_TRADES") or 2),
            gate_max_null_p_value=float(env.get("EMP_GATE_MAX_NULL_P_VALUE") or 0.05),
            null_genomes=int(env.get("EMP_NULL_GENOMES") or 1000),
            max_champions=int(env.get("EMP_MAX_CHAMPIONS") or 3),
            # --- end walk-forward research ---
        )
