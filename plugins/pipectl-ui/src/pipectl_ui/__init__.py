"""pipectl-ui: ``pipectl ui``, a local web UI over the tracker: every run, live, in a browser.

Nothing is imported here: pipectl imports :mod:`pipectl_ui.plugin` every time it starts, and
the server (Starlette, uvicorn, Jinja2) only when ``pipectl ui`` runs.
"""

__version__ = "0.1.0"
