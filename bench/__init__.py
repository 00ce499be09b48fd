"""The benchmark harness of `make bench` (`python -m bench` from the repository root).

A tool, not a part of the app: it is not in pyproject's packages and is never installed. It
drives the real processes (gunicorn, a Celery worker) against a database of its own; see
bench/run.py for what it measures and its knobs (BENCH_*).
"""
