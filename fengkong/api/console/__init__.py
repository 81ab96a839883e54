"""The web console a risk team uses daily, served by `fengkong serve` at ``/console``.

Server-rendered pages (Jinja2 templates inside the package) with htmx and a few
lines of our own JS shipped as static files (nothing is fetched at run time), English
and Chinese labels (`i18n`). It is a sub-application mounted on the service: its
signed-cookie sessions (Starlette's `SessionMiddleware`) are its own middleware, so
the service's fast layer (`fengkong.api.fastpath`), which refuses middleware on the
app it would skip, is untouched, and the payment flow's routes never run console code.

People log in with per-user accounts (`fengkong.accounts`, argon2id hashes); roles:
viewer reads every page; analyst also claims and resolves cases, edits the lists and
dry-runs rules; admin also manages users and reloads rules. Every POST carries the
session's CSRF token; every action is written to the change audit with the user.
docs/console.md is the reference.
"""

from fengkong.api.console.app import create_console

__all__ = ["create_console"]
