"""`fengkong serve` end to end: one command starts the embedded Redis, the rules and two
uvicorn workers, prints a development key (saying it is one), decides, and stops
its Redis on exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api_fixtures import RULES_DIR, free_port, payment


def test_serve_starts_everything_with_one_command_and_stops_its_redis(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FENGKONG_")}
    env["FENGKONG_ARTIFACTS_DIR"] = str(tmp_path / "no-artifacts")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from fengkong.cli import app; app()", "serve", "--port", str(port), "--workers", "2",
         "--data-dir", str(tmp_path / "data"), "--rules-dir", str(RULES_DIR)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    lines: list[str] = []
    try:
        key = None
        while key is None:
            line = proc.stdout.readline()
            assert line, "serve exited early:\n" + "".join(lines)
            lines.append(line)
            m = re.search(r"X-API-Key: (\S+)", line)
            if m:
                key = m.group(1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=10) as c:
            for _ in range(300):
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            ev = payment(ip="185.220.101.7")
            first = c.post("/v1/decisions", json=ev).json()
            assert first["decision"] == "review" and not first["degraded"]
            again = [c.post("/v1/decisions", json=ev).json() for _ in range(6)]  # lands on both workers
            assert {a["decision_id"] for a in again} == {first["decision_id"]}
            assert c.get("/v1/rules").status_code == 200  # the dev key has every scope
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        lines.append(proc.stdout.read())  # read() keeps what readline() buffered
    text = "".join(lines)
    assert "DEVELOPMENT KEY" in text and "no API keys are configured" in text
    assert "rules-only" in text and "embedded server" in text, text
    sock = re.search(r"embedded server at unix://(\S+)", text).group(1)
    assert not Path(sock).exists()  # its Redis was stopped
    assert (tmp_path / "data" / "redis").is_dir()
