"""Serve the page without Airflow auth on loopback, for a look at a storage folder:

    PYTHONPATH=include python -m purchasing_power.ui --storage data --port 8765
"""

from __future__ import annotations

import argparse
import os

from purchasing_power.ui import URL_PREFIX


def main(argv: list[str] | None = None) -> int:
    """Serve the page without Airflow auth on 127.0.0.1 (local use and tests)."""
    ap = argparse.ArgumentParser(prog="python -m purchasing_power.ui", description="Serve the Purchasing power page (no auth) on loopback.")
    ap.add_argument("--storage", default=None, help="storage root (default: PURCHASING_POWER_STORAGE or ./data)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args(argv)
    import uvicorn
    from fastapi import FastAPI

    from purchasing_power.ui.app import create_app

    root = FastAPI()
    root.mount(URL_PREFIX, create_app(args.storage and os.path.abspath(args.storage), require_auth=False))
    print(f"http://{args.host}:{args.port}{URL_PREFIX}/", flush=True)
    uvicorn.run(root, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
