"""Which database to use: the one the operator names, else SQLite in the data directory."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

#: The file the embedded default keeps in the data directory.
SQLITE_FILE = "fengkong.sqlite3"


def database_url(explicit: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL to connect to.

    ``explicit`` is ``FENGKONG_DATABASE_URL`` when set; a plain ``postgresql://`` URL is
    given the psycopg 3 driver (the one this project installs), so operators can paste
    the URL their platform hands out. With nothing set, SQLite in ``data_dir``.
    """
    if explicit:
        url = make_url(explicit)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if not (url.drivername.startswith("postgresql") or url.drivername.startswith("sqlite")):
            raise ValueError(f"FENGKONG_DATABASE_URL: {url.drivername!r} is not supported "
                             "(use postgresql://... or sqlite:///path)")
        return url.render_as_string(hide_password=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / SQLITE_FILE).resolve()}"


def redacted(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    return make_url(url).render_as_string(hide_password=True)
