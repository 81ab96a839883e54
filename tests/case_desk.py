"""The case desk the case tests run on (a queue with an SLA, a 60-minute grouping
window), on the database each test's `database_url` names, migrated first."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fengkong.cases import service
from fengkong.cases.config import CasesConfig, Queue
from fengkong.db import migrate
from fengkong.db.engine import make_engine, session_factory

T0 = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)
CONFIG = CasesConfig(window_minutes=60, queues=(Queue("card_theft", 4.0, tags=frozenset({"card_theft"})),),
                     default_queue=Queue("general", 24.0))


@pytest.fixture
def desk(database_url):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield service.Desk(sessions=session_factory(engine), config=CONFIG)
    engine.dispose()
