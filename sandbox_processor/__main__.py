"""`python -m sandbox_processor --host 127.0.0.1 --port N --ledger PATH.sqlite --key SECRET`."""
import argparse
import logging
import os
import signal
import sys

from werkzeug.serving import make_server

from sandbox_processor.server import create_app


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox_processor",
                                     description="A sandbox payment processor for Cancel Desk.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ledger", required=True, help="SQLite file of the ledger")
    parser.add_argument("--key", default=os.environ.get("SANDBOX_PROCESSOR_KEY"),
                        help="shared signing key (default: $SANDBOX_PROCESSOR_KEY)")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("a key is required: --key or SANDBOX_PROCESSOR_KEY")
    # One line per request on stderr (werkzeug's access log) and the ledger's own lines.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="[sandbox-processor] %(message)s")
    server = make_server(args.host, args.port, create_app(args.ledger, args.key), threaded=True)
    # SIGTERM (how `make run` and the tests stop it) ends serve_forever like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.getLogger("sandbox_processor").info(
        "listening on http://%s:%s, ledger %s", args.host, server.server_port, args.ledger)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
