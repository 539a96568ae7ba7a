"""A local Prometheus for ``streamcl up --prometheus``: scrapes the platform's one metrics URL
with streamcl's alert and recording rules loaded (Debian package ``prometheus``, installed by
``make install``)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml
from pydantic import SecretStr

from streaming.broker import die_with_parent
from streaming.errors import ConfigError, StreamclError

log = logging.getLogger(__name__)

RULES_FILE = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "streamcl-rules.yml"


def prometheus_binary() -> str:
    found = os.environ.get("STREAMCL_PROMETHEUS_BIN") or shutil.which("prometheus")
    if not found:
        raise ConfigError(
            "prometheus not found: install the Debian package `prometheus` (make install does) "
            "or set STREAMCL_PROMETHEUS_BIN"
        )
    return found


def scrape_config(
    metrics_url: str, scrape_interval_s: float, rules: Path | None, credentials_file: Path | None = None
) -> dict:
    """Prometheus's configuration: one job scraping ``metrics_url``, with the bearer token read
    from ``credentials_file`` when the metrics URL needs one (``STREAMCL_METRICS_TOKEN``)."""
    target = metrics_url.split("://", 1)[-1].split("/", 1)[0]
    job: dict = {"job_name": "streamcl", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
    if credentials_file is not None:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(credentials_file)}
    config: dict = {
        "global": {"scrape_interval": f"{scrape_interval_s:g}s", "evaluation_interval": f"{scrape_interval_s:g}s"},
        "scrape_configs": [job],
    }
    if rules is not None:
        config["rule_files"] = [str(rules)]
    return config


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600 from creation on)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


class LocalPrometheus:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is its web address."""

    def __init__(
        self,
        metrics_url: str,
        data_dir: Path,
        port: int = 9095,
        host: str = "127.0.0.1",
        scrape_interval_s: float = 5.0,
        rules: Path | None = RULES_FILE,
        token: SecretStr | None = None,
    ) -> None:
        """``token``: the metrics URL's bearer token (``STREAMCL_METRICS_TOKEN``), if it needs one."""
        self.metrics_url = metrics_url
        self.token = token
        self.data_dir = Path(data_dir)
        self.url = f"http://{host}:{port}"
        self.address = f"{host}:{port}"
        self.scrape_interval_s = scrape_interval_s
        self.rules = rules if rules is not None and rules.is_file() else None
        if rules is not None and self.rules is None:
            log.warning("rules file %s not found: Prometheus runs without streamcl's alert rules", rules)
        self._proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        """Write ``prometheus.yml`` in the data dir (the token, if any, in a 0600 file beside it,
        never inline) and return its path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        credentials = None
        if self.token is not None:
            credentials = self.data_dir / "metrics-token"
            write_private(credentials, self.token.get_secret_value())
        config = self.data_dir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(scrape_config(self.metrics_url, self.scrape_interval_s, self.rules, credentials))
        )
        return config

    def start(self, timeout_s: float = 60.0) -> LocalPrometheus:
        binary = prometheus_binary()
        host, port = self.address.rsplit(":", 1)
        with socket.socket() as probe:  # another Prometheus (a system service) must not pass for ours
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                raise ConfigError(
                    f"cannot start Prometheus on {self.address}: {exc.strerror} (set STREAMCL_PROMETHEUS_PORT)"
                ) from None
        config = self.write_config()
        log_file = open(self.data_dir / "prometheus.log", "ab")  # noqa: SIM115 - lives with the process
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'data'}",
                f"--web.listen-address={self.address}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2d",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc.poll() is not None:
                tail = (self.data_dir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise StreamclError(f"prometheus exited with {self._proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200 and self._proc.poll() is None:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise StreamclError(f"prometheus did not become ready on {self.url} in {timeout_s:.0f}s")
            time.sleep(0.3)

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
