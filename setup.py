"""Packaging for emp-pipeline: the Evolving Market Predator as a Dagster project."""

from setuptools import find_packages, setup

setup(
    name="emp-pipeline",
    version="0.1.0",
    description="Evolving Market Predator on Dagster: market data, regimes, evolved strategies, live trading",
    python_requires=">=3.11",
    packages=find_packages(exclude=["emp_pipeline_tests*", "benchmarks*"]),
    include_package_data=True,
    package_data={
        "emp_pipeline": [
            "data/sample/*",
            "data/sample/macro/*",
            "data/universes/*.yaml",
            "registry/alembic.ini",
            "registry/migrations/*.py",
            "registry/migrations/*.mako",
            "registry/migrations/versions/*.py",
        ]
    },
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-postgres>=0.29,<0.30",
        "dagster-webserver>=1.13,<1.14",
        "sqlalchemy>=2.0.30",
        "alembic>=1.13",
        "psycopg2-binary>=2.9.9",
        "redis>=5.0",
        "yfinance>=0.2.50",
        "pandas>=2.2",
        "numpy>=1.26",
        "pyarrow>=15",
        "numba>=0.60",
        "pyyaml>=6.0",
        "exchange-calendars>=4.5",
        "matplotlib>=3.8",
        "requests>=2.31",
        "cryptography>=42",
        "websockets>=13",
        "prometheus-client>=0.20",
        "threadpoolctl>=3.5",  # one BLAS thread in the GA (evolution.evolve): its products are small
        "arch>=7.0",  # superior predictive ability test (arch.bootstrap.SPA) of each period's candidates
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "hypothesis>=6.100",
            "ruff>=0.6",
            "playwright>=1.40",
            "pip-audit>=2.7",  # `make audit`: known vulnerabilities of the locked set (constraints.txt)
        ],
        # The production image: runs are containers started by the daemon's Docker run launcher.
        "deploy": ["dagster-docker>=0.29,<0.30"],
        "bench": ["vectorbt>=0.26"],
    },
    entry_points={"console_scripts": ["emp=emp_pipeline.cli:main"]},
)
