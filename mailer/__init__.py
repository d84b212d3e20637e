"""rekindle-mail: the engine that renders and delivers the Rekindle email course."""

__version__ = "0.1.0"
