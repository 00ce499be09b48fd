"""`flask` commands: seed-demo, users, tokens, simulate, serve."""
from flask import Blueprint

bp = Blueprint("cli", __name__, cli_group=None)
