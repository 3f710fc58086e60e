"""pipectl-http: the ``http`` extractor, records from JSON HTTP APIs, for pipectl data steps.

Nothing is imported here: pipectl imports :mod:`pipectl_http.plugin` every time it starts, and
the extractor (:mod:`pipectl_http.extractor`, with httpx) only when a pipeline uses it.
"""

__version__ = "0.1.0"
