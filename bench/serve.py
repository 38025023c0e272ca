"""Run one of the two benchmark servers under uvicorn with identical settings.

    python bench/serve.py crm|raw PORT LOOP HTTP

``crm``: ``crmcore.api.create_app(BENCH_DEPLOYMENT, database_url=BENCH_DATABASE_URL)``;
``raw``: ``bench/raw_app.py``. One worker, access log off, the given loop/http implementation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    kind, port, loop, http = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if kind == "crm":
        from crmcore.api import create_app

        url = os.environ.get("BENCH_DATABASE_URL") or None
        app = create_app(os.environ["BENCH_DEPLOYMENT"], database_url=url if url and not url.startswith("sqlite") else None)
    else:
        from raw_app import create_raw_app

        app = create_raw_app()
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http=http, workers=1,
                access_log=False, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
