"""Driving a sandbox processor from outside: start one, wait for it, make it fail, read its ledger.

Used by `make run` (commands/serve.py), the test suite, the bench and `flask simulate`.
"""
import sys
import time

import requests


def argv(port, ledger, host="127.0.0.1"):
    """The command that runs a sandbox processor; its key goes in the environment
    (SANDBOX_PROCESSOR_KEY), not on the command line where `ps` shows it."""
    return [sys.executable, "-m", "sandbox_processor", "--host", host, "--port", str(port),
            "--ledger", str(ledger)]


def wait_ready(url, process=None, timeout=30.0):
    """Wait until the sandbox at `url` answers its health check; RuntimeError if `process`
    exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/_sandbox/healthz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the sandbox processor exited with status {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox processor at {url} did not answer in {timeout:.0f}s")
        time.sleep(0.05)


class SandboxControl:
    """The sandbox's control endpoints (guarded by its key)."""

    def __init__(self, url, key, timeout=10.0):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.session = requests.Session()
        self.session.headers["X-Sandbox-Key"] = key

    def _call(self, method, path, **kwargs):
        response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        response.raise_for_status()
        return response.json()

    def set(self, mode, times=1, delay_s=3):
        """The next `times` refund and charge POSTs (-1: all of them) get `mode`: decline,
        error, timeout_before_commit, timeout_after_commit, slow or normal."""
        return self._call("POST", "/_sandbox/behaviour",
                          json={"mode": mode, "times": times, "delay_s": delay_s})

    def behaviour(self):
        return self._call("GET", "/_sandbox/behaviour")

    def reset(self):
        return self._call("DELETE", "/_sandbox/behaviour")

    def ledger(self, idempotency_key=None, prefix=None):
        """{"refunds": [...], "charges": [...]}, the rows of one key or of keys with a prefix."""
        params = {name: value for name, value in (("idempotency_key", idempotency_key),
                                                  ("prefix", prefix)) if value is not None}
        return self._call("GET", "/_sandbox/ledger", params=params)

    def refunds(self, idempotency_key=None, prefix=None):
        return self.ledger(idempotency_key, prefix)["refunds"]
