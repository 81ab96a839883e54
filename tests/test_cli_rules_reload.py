"""`fengkong rules reload` against a running service: a good set is swapped in, a bad
file is refused with its name and leaves the live set, a key without admin is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from api_fixtures import ADMIN_KEY, DECIDE_KEY, Served, payment, settings
from fengkong.cli import app

ROOT = Path(__file__).resolve().parent.parent


def test_reload_command_swaps_good_rules_and_refuses_bad_ones(redis_server, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    with Served(settings(redis_server.url, "tcli", rules_dir=rules)) as served:
        runner = CliRunner()
        ok = runner.invoke(app, ["rules", "reload", "--url", served.url, "--key", ADMIN_KEY])
        assert ok.exit_code == 0, ok.output
        assert "live rules" in ok.output
        live = served.runtime.rules.version

        (rules / "zz_broken.yaml").write_text("rules:\n  - id: broken.rule\n    when: card.count_10m >\n"
                                              "    then: deny\n    score: 10\n", encoding="utf-8")
        bad = runner.invoke(app, ["rules", "reload", "--url", served.url, "--key", ADMIN_KEY])
        assert bad.exit_code == 1, bad.output
        assert "zz_broken.yaml" in bad.output and "not reloaded" in bad.output
        assert "[red]" not in bad.output and "error " in bad.output  # styled, never markup printed as text
        assert served.runtime.rules.version == live
        with served.client(DECIDE_KEY) as client:
            assert client.post("/v1/decisions", json=payment()).status_code == 200

        refused = runner.invoke(app, ["rules", "reload", "--url", served.url, "--key", DECIDE_KEY])
        assert refused.exit_code == 2 and "403" in refused.output


def test_the_file_watcher_audits_a_refused_set_once_and_keeps_the_live_one(redis_server, redis_client, tmp_path):
    """A refused set left on disk is refused (and audited) once by the watcher, not at every
    poll; the live set keeps deciding; fixing the files reloads."""
    import json
    import time

    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    prefix = "twatch"
    with Served(settings(redis_server.url, prefix, rules_dir=rules, rules_watch_s=0.1)) as served:
        live = served.runtime.rules.version
        (rules / "zz_broken.yaml").write_text("rules:\n  - id: broken.rule\n    when: card.count_10m >\n"
                                              "    then: deny\n    score: 10\n", encoding="utf-8")
        time.sleep(1.5)  # about 15 polls

        def file_watch_entries() -> list[dict]:
            entries = [json.loads(v[b"record"]) for _, v in redis_client.xrange(f"{prefix}:v1:audit:changes")]
            return [e for e in entries if e.get("actor") == "file-watch"]

        refused = file_watch_entries()
        assert len(refused) == 1, refused
        result = refused[0]["result"]
        assert result["ok"] is False and result["problems"]
        assert any("zz_broken.yaml" in str(p) for p in result["problems"]), result
        assert served.runtime.rules.version == live
        with served.client(DECIDE_KEY) as client:
            answer = client.post("/v1/decisions", json=payment()).json()
        assert answer["ruleset_version"] == live

        (rules / "zz_broken.yaml").unlink()
        (rules / "zz_extra.yaml").write_text("rules:\n  - id: extra.big_amount\n    description: big\n"
                                             "    when: event.amount >= 999999\n    then: review\n    score: 5\n",
                                             encoding="utf-8")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(file_watch_entries()) < 2:
            time.sleep(0.1)
        entries = file_watch_entries()
        assert len(entries) == 2 and entries[1]["result"]["ok"] is True, entries
