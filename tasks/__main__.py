"""`python -m tasks [options]`: a Celery worker for Cancel Desk; the options are `celery worker`'s.

Same worker as `celery -A tasks.worker worker [options]`, lighter: the `celery` command imports
all of its sub-commands (a REPL and a syntax highlighter among them) before it loads the app, and
every pool process, forked from it, carries them for its whole life. This runs Celery's own
`worker` command on the worker's app without them. (Not with --detach, which re-runs `celery`:
run it under a process supervisor.)
"""
import sys

from celery.bin.base import CLIContext
from celery.bin.worker import worker

from tasks.worker import celery


def main():
    context = CLIContext(app=celery, no_color=False, workdir=None, quiet=False)
    return worker.main(prog_name="python -m tasks", obj=context, auto_envvar_prefix="CELERY")


if __name__ == "__main__":
    sys.exit(main())
