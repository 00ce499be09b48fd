"""`python -m tasks [options]`: a Celery worker for Cancel Desk; the options are `celery worker`'s.

Same worker as `celery -A tasks.worker worker [options]`, lighter: the `celery` command imports
all of its sub-commands (a REPL and a syntax highlighter among them) before it loads the app, and
every pool process, forked from it, carries them for its whole life. This runs Celery's own
`worker` command on the worker's app without them. (Not with --detach, which re-runs `celery`:
run it under a process supervisor.)
"""
import sys
from contextlib import contextmanager


@contextmanager
def _not_importable(*names):
    """Within the block, `import name` fails as if the package were not installed."""
    blocked = [name for name in names if name not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))  # a None entry makes the import raise ImportError
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


# Two optional imports a worker never uses, each loaded in the main process and so present in
# every pool process: Pygments (celery.bin.base colours `celery inspect` replies with it when it
# can, 2 MB) and PyYAML (kombu registers a YAML serializer when it can, 1 MB; Cancel Desk's
# messages are JSON and a worker accepts nothing else). Without them Celery and kombu fall back
# as they do where those are not installed.
with _not_importable("pygments", "yaml"):
    from celery.bin.base import CLIContext
    from celery.bin.worker import worker

    from tasks.worker import celery


def main():
    context = CLIContext(app=celery, no_color=False, workdir=None, quiet=False)
    return worker.main(prog_name="python -m tasks", obj=context, auto_envvar_prefix="CELERY")


if __name__ == "__main__":
    sys.exit(main())
