"""The admin web UI (``GET /ui/`` on the admin listener): static files in ``static/``
and the read endpoints it polls, all behind the admin token like the rest of ``/admin/``
(docs/operations.md, "Admin UI")."""
