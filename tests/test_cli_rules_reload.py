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
        assert served.runtime.rules.version == live
        with served.client(DECIDE_KEY) as client:
            assert client.post("/v1/decisions", json=payment()).status_code == 200

        refused = runner.invoke(app, ["rules", "reload", "--url", served.url, "--key", DECIDE_KEY])
        assert refused.exit_code == 2 and "403" in refused.output
