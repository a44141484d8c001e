"""Write the committed API references: ``docs/openapi.json`` and ``docs/event.schema.json``.

Run ``python -m trailseal.http.reference docs/``; a test fails when the committed files
differ from what the code serves.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import orjson

from trailseal.http.app import create_app
from trailseal.model.schema import EVENT_SCHEMA
from trailseal.service.core import Service


def _dump(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def render_openapi() -> str:
    """The OpenAPI document the service serves at /openapi.json."""
    with tempfile.TemporaryDirectory() as tmp:
        service, _ = Service.open(Path(tmp) / "data")
        try:
            return _dump(create_app(service).openapi())
        finally:
            service.close()


def render_event_schema() -> str:
    """The event JSON Schema served at /v1/schema/event.json."""
    return _dump(EVENT_SCHEMA)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs")
    (target / "openapi.json").write_text(render_openapi())
    (target / "event.schema.json").write_text(render_event_schema())
