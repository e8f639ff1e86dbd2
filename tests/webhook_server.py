"""A local HTTP server standing in for the alerts webhook (tests only)."""

from __future__ import annotations

import json


class Webhook:
    """A local HTTP server that records every JSON body POSTed to it (the alerts webhook)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/pp"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, conn_id: str = "pp_alerts") -> dict[str, str]:
        """Environment naming this webhook as the alerts connection."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.url, "PURCHASING_POWER_ALERTS_CONN": conn_id}

    def events(self, event: str) -> list[dict]:
        return [r["body"] for r in self.received if r["body"].get("event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

