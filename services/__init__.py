"""The platform's wiring: the Ray Serve API, the model controller, the metrics endpoint, the
demo application and the ``streamcl`` CLI."""

__all__ = ["cli", "controller", "demo", "metrics_server", "platform", "serve_app", "settings"]
