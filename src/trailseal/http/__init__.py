"""The HTTP edge: the only package that imports the web framework."""

from trailseal.http.app import create_app
from trailseal.http.deps import HttpOptions

__all__ = ["HttpOptions", "create_app"]
