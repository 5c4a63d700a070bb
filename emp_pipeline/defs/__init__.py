"""The Dagster layer: one folder per concern, each building its Definitions (merged in definitions.py).

Dagster warns about beta parameters every time definitions are built, in every process that loads them (the
code server, the daemon, `dagster job execute`, `emp demo`). Two of them are used on purpose and are not a
user's concern: `backfill_policy` on the daily assets (one run per backfilled range), and `owners`, which
Dagster itself passes when it copies a sensor. Only those two messages are silenced, here, before any
definition is built; any other beta or preview warning still shows.
"""

import warnings

for _message in (
    r"Parameter `backfill_policy` of function `asset` is currently in beta",
    r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
):
    warnings.filterwarnings("ignore", message=_message)
