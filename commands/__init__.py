"""The `flask` commands: seed-demo, demo-orders, users, tokens, simulate, serve.

Tools, not a part of the web app: the app factory adds them to `app.cli` (register). The
benchmark harness is not here either: it is `bench/` at the top of the repository (`make bench`),
outside the installed packages."""
import json
import os
from datetime import timedelta

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from models import ApiToken, Order, Role, Store, User, db, utcnow

# Every command runs inside an app context (AppGroup wraps them); register adds them to app.cli.
cli = AppGroup("cancel-desk")

ROLES = [role.value for role in Role]


def register(app):
    """Add the commands to the app's `flask` CLI (called by create_app)."""
    for command in cli.commands.values():
        app.cli.add_command(command)


def demo_seeding_allowed(app):
    """Demo data (and its well-known password) only where DEMO_MODE is on, never in production."""
    return bool(app.config.get("DEMO_MODE")) and \
        os.environ.get("CANCEL_DESK_ENV", "development") != "production"


@cli.command("seed-demo")
def seed_demo_command():
    """Fill an EMPTY database with the demo stores, catalogue, customers, orders and users."""
    from commands.demo import DEMO_PASSWORD, USERS, database_is_empty, seed_demo

    if not demo_seeding_allowed(current_app):
        raise click.ClickException(
            "demo data is only seeded in demo mode (development); this configuration has "
            "DEMO_MODE off. Set DEMO_MODE=1 deliberately if you really want it here.")
    if not database_is_empty():
        click.echo("The database already holds data; demo data is only seeded into an empty "
                   "database. Nothing was changed.")
        return
    counts = seed_demo()
    click.echo("Seeded demo data:")
    for table in ("stores", "products", "stock_levels", "customers", "orders", "order_items",
                  "cancellations", "loyalty_entries", "users"):
        click.echo(f"  {table:<16} {counts[table]:>6}")
    by_status = db.session.execute(
        select(Order.status, func.count()).group_by(Order.status).order_by(Order.status)).all()
    click.echo("  orders by status: " + ", ".join(f"{s} {n}" for s, n in by_status))
    click.echo(f"Logins (password {DEMO_PASSWORD}):")
    for email, _name, role, stores in USERS:
        where = ", ".join(db.session.get(Store, s).name for s in stores) or "all stores"
        click.echo(f"  {email:<24} {role:<17} {where}")


@cli.command("demo-orders")
@click.option("--store", "store_id", type=int, default=1, show_default=True,
              help="the demo store: 1 Downtown, 2 Uptown")
@click.option("--count", type=click.IntRange(1, 20000), default=2000, show_default=True)
def demo_orders_command(store_id, count):
    """Add COUNT fresh pending orders to a demo store (to try a bulk cancel of thousands)."""
    from commands.demo import add_open_orders

    if not demo_seeding_allowed(current_app):
        raise click.ClickException("demo orders are only added in demo mode (development).")
    try:
        first, last = add_open_orders(store_id, count)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Added {count} pending orders to store {store_id}: {first} … {last}.")


# -- users ---------------------------------------------------------------------------------------

users_cli = AppGroup("users", help="Create and list staff accounts.")
cli.add_command(users_cli)


@users_cli.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option("--store", "stores", multiple=True, type=int,
              help="Store id the user works in; repeat for several.")
@click.option("--password", help="Prompted (hidden, twice) when not given.")
def create_user(email, name, role, stores, password):
    """Create a staff account."""
    if User.by_email(email) is not None:
        raise click.ClickException(f"a user with e-mail {email} already exists")
    store_rows = []
    for store_id in stores:
        store = db.session.get(Store, store_id)
        if store is None:
            raise click.ClickException(f"no store with id {store_id}")
        store_rows.append(store)
    if role in (Role.STORE_MANAGER.value, Role.FULFILLMENT.value,
                Role.CUSTOMER_SERVICE.value) and not store_rows:
        click.echo(f"Warning: a {role} without --store sees no orders.", err=True)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password must be at least 8 characters")
    user = User(email=email, name=name, role=role, active=True)
    user.set_password(password)
    user.stores = store_rows
    db.session.add(user)
    db.session.commit()
    click.echo(f"Created user {user.id}: {user.email} ({role}"
               + (f"; stores {', '.join(s.name for s in store_rows)}" if store_rows else "")
               + ")")


@users_cli.command("list")
def list_users():
    """List staff accounts."""
    users = db.session.scalars(select(User).order_by(User.id)).all()
    if not users:
        click.echo("No users yet. Create one with `flask users create`.")
        return
    click.echo(f"{'id':>4}  {'email':<30} {'role':<17} {'active':<6} stores")
    for user in users:
        click.echo(f"{user.id:>4}  {user.email:<30} {user.role:<17} "
                   f"{'yes' if user.active else 'no':<6} "
                   f"{', '.join(s.name for s in user.stores) or '-'}")


# -- tokens --------------------------------------------------------------------------------------

tokens_cli = AppGroup("tokens", help="Issue API bearer tokens.")
cli.add_command(tokens_cli)


@tokens_cli.command("create")
@click.option("--email", required=True, help="The user the token acts as.")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@click.option("--days", default=None, type=click.IntRange(min=1),
              help="Days until the token expires (default: API_TOKEN_TTL_DAYS, 90).")
def create_token(email, name, days):
    """Issue a token; the plain value is printed once and stored only hashed."""
    days = days or current_app.config["API_TOKEN_TTL_DAYS"]
    user = User.by_email(email)
    if user is None:
        raise click.ClickException(f"no user with e-mail {email}")
    if not user.is_active:
        raise click.ClickException(f"user {email} is deactivated")
    _row, plain = ApiToken.issue(user, name=name, expires_at=utcnow() + timedelta(days=days))
    db.session.commit()
    click.echo(f"Token for {user.email} (expires in {days} days; shown only this once):",
               err=True)
    click.echo(plain)


# -- simulate ------------------------------------------------------------------------------------

simulate_cli = AppGroup("simulate", help="Make the sandbox payment processor or the mail relay "
                                            "fail, to try the failure paths.")
cli.add_command(simulate_cli)


@simulate_cli.command("failures")
@click.option("--kind", required=True, type=click.Choice(["refund", "notification"]))
@click.option("--times", type=click.IntRange(min=1), help="Fail the next N calls.")
@click.option("--always", is_flag=True, help="Fail every call until --off.")
@click.option("--off", is_flag=True, help="Stop failing.")
def simulate_failures(kind, times, always, off):
    """Inject failures into the sandbox payment processor (refunds are declined) or the
    notification channel."""
    from cancellation.adapters import failures_left, set_failures

    _use_running_embedded_redis()
    if kind == "refund":
        _use_running_sandbox()
    chosen = [name for name, on in (("--times", times is not None), ("--always", always),
                                    ("--off", off)) if on]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --times N, --always, --off")
    set_failures(kind, -1 if always else 0 if off else times)
    left = failures_left(kind)
    state = "every call fails" if left < 0 else f"the next {left} call(s) fail" if left \
        else "no failures injected"
    click.echo(f"Simulated {kind} failures: {state}.")


def _use_running_sandbox():
    """Without PAYMENT_PROCESSOR_URL, drive the sandbox processor of a running `flask serve`."""
    from commands.serve import SANDBOX_FILE

    if current_app.config.get("PAYMENT_PROCESSOR_URL"):
        return
    if not SANDBOX_FILE.exists():
        raise click.ClickException("no sandbox payment processor: start `make run` first, or "
                                   "set PAYMENT_PROCESSOR_URL and PAYMENT_PROCESSOR_KEY")
    found = json.loads(SANDBOX_FILE.read_text())
    current_app.config.update(PAYMENT_PROCESSOR_URL=found["url"],
                              PAYMENT_PROCESSOR_KEY=found["key"])


def _use_running_embedded_redis():
    """Without REDIS_URL, talk to the embedded Redis of a running `flask serve` (if any)."""
    from commands.serve import REDIS_URL_FILE

    if os.environ.get("REDIS_URL") or not REDIS_URL_FILE.exists():
        return
    import redis

    url = REDIS_URL_FILE.read_text().strip()
    current_app.extensions["redis"] = redis.Redis.from_url(url, socket_timeout=5,
                                                           socket_connect_timeout=2)


# -- serve ---------------------------------------------------------------------------------------

@cli.command("serve")
def serve_command():
    """Run everything `make run` needs: Redis (embedded unless REDIS_URL is set), migrations,
    demo data on an empty development database, a Celery worker with beat, and gunicorn."""
    from commands.serve import serve

    raise SystemExit(serve())


__all__ = ["register"]
