"""Every environment variable the project reads, in one place, with embedded-mode defaults.

The embedded mode needs no server and no network: SQLite registry, Parquet files and the bundled sample
data under a local home directory. Production sets the variables (docker-compose passes them through).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
UNIVERSES_DIR = PACKAGE_DIR / "data" / "universes"
SAMPLE_UNIVERSE_FILE = UNIVERSES_DIR / "sample.yaml"
DEFAULT_UNIVERSE_FILE = UNIVERSES_DIR / "default.yaml"

DATA_SOURCES = ("sample", "csv", "yahoo")
BROKERS = ("paper", "ctrader")


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment; build it with `Settings.from_env()` so tests can pass their own."""

    home: Path
    data_dir: Path
    database_url: str
    data_source: str
    universe_file: Path
    csv_dir: Path | None
    redis_url: str
    broker: str

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
        default_universe = SAMPLE_UNIVERSE_FILE if data_source == "sample" else DEFAULT_UNIVERSE_FILE
        broker = env.get("EMP_BROKER", "paper")
        if broker not in BROKERS:
            raise ValueError(f"EMP_BROKER={broker!r} is not one of {', '.join(BROKERS)}")
        csv_dir = env.get("EMP_CSV_DIR")
        return cls(
            home=home,
            data_dir=data_dir,
            database_url=database_url,
            data_source=data_source,
            universe_file=Path(env.get("EMP_UNIVERSE_FILE", default_universe)).resolve(),
            csv_dir=Path(csv_dir).resolve() if csv_dir else None,
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            broker=broker,
        )
