"""The platform's wiring: the Ray Serve API, the model controller, the metrics endpoint, the
demo application and the ``streamcl`` CLI."""

__all__ = [
    "cli",
    "controller",
    "demo",
    "gate",
    "metrics",
    "metrics_server",
    "platform",
    "serve_app",
    "serving",
    "settings",
]
