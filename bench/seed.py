"""The bench's data: generated from one seeded random.Random and loaded set-based.

Orders and their items are generated and loaded in chunks (COPY on PostgreSQL), so a million
background orders never sit in this process's memory at once. On PostgreSQL the secondary
indexes of the big tables are dropped before the load and built again after it (one sorted
build instead of a million index insertions), and a superuser skips the foreign-key triggers
(the generated rows are consistent by construction).
"""
import random
import time
from dataclasses import dataclass
from datetime import timedelta

CANCELLABLE = ("pending", "in_progress", "on_hold")
PASSWORD = "bench-password-1"
ADMIN_EMAIL = "bench-admin@bench.test"
MANAGER_EMAIL = "bench-manager@bench.test"
ORDER_PREFIX = "BN-"
CHUNK = 50_000  # orders per COPY
# The big tables whose secondary indexes are built after the load (PostgreSQL).
REINDEXED = ("orders", "order_items", "customers", "payments")


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Dataset:
    ranges: dict  # name -> (first id, last id)
    orders: int
    items: int
    admin_id: int = 0
    manager_id: int = 0
    admin_token: str = ""
    manager_token: str = ""

    def ids(self, name):
        first, last = self.ranges[name]
        return list(range(first, last + 1))


ORDER_COLUMNS = ("id", "number", "store_id", "customer_id", "status", "placed_at", "updated_at",
                 "subtotal_cents", "tax_cents", "discount_cents", "total_cents", "payment_status",
                 "paid_cents", "refunded_cents", "payment_method", "points_earned",
                 "points_redeemed", "billing_hold", "shipment_status", "previous_status",
                 "cancelled_at", "version")
ITEM_COLUMNS = ("id", "order_id", "product_id", "quantity", "unit_price_cents",
                "cancelled_quantity")
PAYMENT_COLUMNS = ("id", "order_id", "tender", "amount_cents", "refunded_cents",
                   "processor_reference", "created_at")
# How a dispensary's paid orders are paid (cash+debit: a split tender, part of each).
TENDER_MIX = (("cash", 45), ("debit", 25), ("card", 15), ("cash+debit", 15))
BACKGROUND_STATUSES = (("pending", 15), ("in_progress", 8), ("on_hold", 4), ("completed", 50),
                       ("cancelled", 13), ("archived", 10))
TABLE_COLUMNS = {
    "stores": ("id", "name", "licence_number", "timezone"),
    "products": ("id", "sku", "name", "price_cents"),
    "customers": ("id", "name", "email", "phone", "loyalty_points"),
    "stock_levels": ("id", "store_id", "product_id", "on_hand", "reserved"),
    "orders": ORDER_COLUMNS,
    "order_items": ITEM_COLUMNS,
    "payments": PAYMENT_COLUMNS,
}


def order_number(order_id):
    return f"{ORDER_PREFIX}{order_id:07d}"


def customer_row(customer_id, points):
    """(id, name, email, phone, points): a distinct first + last name per customer (the demo
    data's name lists), so a search by name, e-mail or phone finds one customer's orders."""
    from commands.demo import FIRST_NAMES, LAST_NAMES

    index = customer_id - 1
    first = FIRST_NAMES[index % len(FIRST_NAMES)]
    last = LAST_NAMES[index // len(FIRST_NAMES) % len(LAST_NAMES)]
    email = f"{first}.{last}.{customer_id}@bench.test".lower()
    phone = f"+1 555 {customer_id // 10000:03d} {customer_id % 10000:04d}"
    return customer_id, f"{first} {last}", email, phone, points


def _shape(rng, settings, walk_in=0.15):
    """One order's contents: (customer_id, lines [(product_id, qty, price)], paid, earned,
    redeemed). Prices are a function of the product id. Orders of the cancelled sets always
    have a customer (walk_in=0): a walk-in order's notification has no address and fails."""
    customer = rng.randint(1, settings.customers) if rng.random() >= walk_in else None
    products = rng.sample(range(1, settings.products + 1), rng.randint(1, 4))
    lines = [(p, rng.randint(1, 3), _price(p)) for p in products]
    paid = rng.random() < 0.9
    subtotal = sum(q * price for _, q, price in lines)
    earned = subtotal // 1000 if customer and paid and rng.random() < 0.6 else 0
    redeemed = rng.choice((100, 200, 500)) if customer and rng.random() < 0.2 else 0
    return customer, lines, paid, earned, redeemed


def _price(product_id):
    return 500 + (product_id * 7919 % 60) * 250


class Generator:
    """Every seeded order and item, chunk by chunk, in the column orders above; the id ranges of
    the sets and the stock each store holds reserved for the open orders."""

    def __init__(self, settings, now):
        self.settings, self.now = settings, now
        self.rng = random.Random(settings.seed)
        self.reserved = {}
        self.ranges = {}
        self.orders = self.items = self.payments = 0
        self.next_id = 1
        self._orders, self._items, self._payments = [], [], []

    def _add(self, store, status, placed_at, shape, shipment="not_shipped", hold=False):
        customer, lines, paid, earned, redeemed = shape
        order_id = self.next_id
        self.next_id += 1
        subtotal = sum(q * price for _, q, price in lines)
        tax = round(subtotal * 0.15)
        total = subtotal + tax
        cancelled = status == "cancelled"
        tenders = []
        if paid:
            mix = self.rng.choices([m for m, _ in TENDER_MIX], [w for _, w in TENDER_MIX])[0]
            tenders = mix.split("+")
            first = total if len(tenders) == 1 else total * self.rng.randint(20, 80) // 100
            amounts = (first,) if len(tenders) == 1 else (first, total - first)
            for tender, cents in zip(tenders, amounts, strict=True):
                self.payments += 1
                self._payments.append((
                    self.payments, order_id, tender, cents, cents if cancelled else 0,
                    f"pay_{order_id}_{tender}" if tender != "cash" else None, placed_at))
        self._orders.append((
            order_id, order_number(order_id), store, customer, status, placed_at, placed_at,
            subtotal, tax, 0, total, ("refunded" if cancelled else "paid") if paid
            else "unpaid", total if paid else 0, total if paid and cancelled else 0,
            tenders[0] if paid else None, earned, redeemed, hold, shipment,
            "pending" if cancelled else None, placed_at + timedelta(hours=3) if cancelled
            else None, 1))
        open_ = status in CANCELLABLE
        for product, quantity, price in lines:
            self.items += 1
            self._items.append((self.items, order_id, product, quantity, price,
                                quantity if cancelled else 0))
            if open_:
                key = (store, product)
                self.reserved[key] = self.reserved.get(key, 0) + quantity

    def _flush(self):
        chunk = (self._orders, self._items, self._payments)
        self.orders += len(self._orders)
        self._orders, self._items, self._payments = [], [], []
        return chunk

    def chunks(self):
        """(orders, items, payments) lists of at most CHUNK orders."""
        rng, settings, now = self.rng, self.settings, self.now
        statuses = [s for s, _ in BACKGROUND_STATUSES]
        weights = [w for _, w in BACKGROUND_STATUSES]
        for _ in range(settings.list_orders):
            status = rng.choices(statuses, weights)[0]
            shipment = ("delivered" if status in ("completed", "archived") else
                        "in_transit" if status == "in_progress" and rng.random() < 0.1 else
                        "not_shipped")
            self._add(rng.choice((1, 2)), status,
                      now - timedelta(minutes=rng.randint(60, 120 * 24 * 60)),
                      _shape(rng, settings), shipment=shipment,
                      hold=status in CANCELLABLE and rng.random() < 0.02)
            if len(self._orders) >= CHUNK:
                yield self._flush()
        self.ranges["background"] = (1, self.next_id - 1)

        # (a) and (b): the same shapes, statuses and ages, store 1 (the manager's store);
        # recent, so a store manager cancels them without approval.
        sets = [(rng.choices(CANCELLABLE, (60, 25, 15))[0], rng.randint(60, 20 * 24 * 60),
                 _shape(rng, settings, walk_in=0)) for _ in range(settings.bulk_orders)]
        for name in ("bulk", "floor"):
            first = self.next_id
            for status, age, shape in sets:
                self._add(1, status, now - timedelta(minutes=age), shape)
            self.ranges[name] = (first, self.next_id - 1)
            yield self._flush()
        # (e) the memory of a bulk job against its size: a small and a ten times larger one,
        # shaped like (a).
        for name, count in (("rss_small", settings.rss_orders),
                            ("rss_large", settings.rss_orders * 10)):
            first = self.next_id
            for _ in range(count):
                self._add(1, rng.choices(CANCELLABLE, (60, 25, 15))[0],
                          now - timedelta(minutes=rng.randint(60, 20 * 24 * 60)),
                          _shape(rng, settings, walk_in=0))
                if len(self._orders) >= CHUNK:
                    yield self._flush()
            self.ranges[name] = (first, self.next_id - 1)
        # (c): both stores, cancelled by the admin.
        first = self.next_id
        for _ in range(settings.single_total):
            self._add(rng.choice((1, 2)), rng.choices(CANCELLABLE, (60, 25, 15))[0],
                      now - timedelta(minutes=rng.randint(60, 20 * 24 * 60)),
                      _shape(rng, settings, walk_in=0))
        self.ranges["single"] = (first, self.next_id - 1)
        yield self._flush()

    def stock(self):
        """After chunks(): every product in both stores, reserving exactly the open quantities."""
        rows = []
        for store in (1, 2):
            for product in range(1, self.settings.products + 1):
                held = self.reserved.get((store, product), 0)
                rows.append((len(rows) + 1, store, product, held + self.rng.randint(100, 1000),
                             held))
        return rows

    def customers(self):
        return [customer_row(c, self.rng.randint(1000, 5000))
                for c in range(1, self.settings.customers + 1)]

    def products(self):
        return [(p, f"BP-{p:04d}", f"Bench Product {p}", _price(p))
                for p in range(1, self.settings.products + 1)]


def load_rows(connection, table, rows):
    """COPY on PostgreSQL, an executemany INSERT elsewhere."""
    columns = TABLE_COLUMNS[table]
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor:
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    from sqlalchemy import text

    statement = text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                     f"({', '.join(':' + c for c in columns)})")
    for start in range(0, len(rows), 20_000):
        connection.execute(statement, [dict(zip(columns, row, strict=True))
                                       for row in rows[start:start + 20_000]])


def _drop_secondary_indexes(connection):
    """PostgreSQL: drop the indexes of REINDEXED that back no constraint; their definitions."""
    from sqlalchemy import text

    found = connection.execute(text(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i "
        "WHERE i.schemaname = current_schema() AND i.tablename = ANY(:tables) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname "
        "AND c.connamespace = to_regnamespace(current_schema()))"),
        {"tables": list(REINDEXED)}).all()
    for name, _definition in found:
        connection.execute(text(f'DROP INDEX "{name}"'))
    return [definition for _name, definition in found]


def _skip_foreign_key_checks(connection):
    """PostgreSQL, as a superuser: no RI trigger for the rows of this transaction."""
    from sqlalchemy import text

    if connection.execute(text(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar():
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        return True
    return False


def seed(app, settings):
    from sqlalchemy import text

    from models import ApiToken, AuditChainHead, Store, User, db, utcnow
    from models.audit import GENESIS

    started = time.monotonic()
    generator = Generator(settings, utcnow())
    with app.app_context():
        engine = db.engine
    postgres = engine.dialect.name == "postgresql"
    indexes = []
    with engine.begin() as connection:
        if postgres:
            connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            indexes = _drop_secondary_indexes(connection)
            _skip_foreign_key_checks(connection)
        load_rows(connection, "stores", [
            (1, "Downtown", "BENCH-LIC-1", "America/Los_Angeles"),
            (2, "Uptown", "BENCH-LIC-2", "America/Los_Angeles")])
        load_rows(connection, "products", generator.products())
        load_rows(connection, "customers", generator.customers())
        for number, (orders, items, payments) in enumerate(generator.chunks(), 1):
            load_rows(connection, "orders", orders)
            load_rows(connection, "order_items", items)
            load_rows(connection, "payments", payments)
            if number % 5 == 0:
                log(f"    {generator.orders:,} orders loaded")
        load_rows(connection, "stock_levels", generator.stock())
        loaded = time.monotonic() - started
        if postgres:
            for definition in indexes:
                connection.execute(text(definition))
            for table in TABLE_COLUMNS:
                connection.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"))
    indexed = time.monotonic() - started - loaded
    with app.app_context():
        admin = User(email=ADMIN_EMAIL, name="Bench Admin", role="admin", active=True)
        manager = User(email=MANAGER_EMAIL, name="Bench Manager", role="store_manager",
                       active=True)
        for user in (admin, manager):
            user.set_password(PASSWORD)
        manager.stores = [db.session.get(Store, 1)]
        db.session.add_all([admin, manager])
        if db.session.get(AuditChainHead, 1) is None:
            db.session.add(AuditChainHead(id=1, seq=0, hash=GENESIS))
        db.session.flush()
        _row, admin_token = ApiToken.issue(admin, name="bench")
        _row, manager_token = ApiToken.issue(manager, name="bench")
        data = Dataset(ranges=generator.ranges, orders=generator.orders, items=generator.items,
                       admin_id=admin.id, manager_id=manager.id, admin_token=admin_token,
                       manager_token=manager_token)
        db.session.commit()
        db.session.remove()
    analyze(engine)
    log(f"seeded {data.orders:,} orders, {data.items:,} items, {settings.customers:,} "
        f"customers, {settings.products} products x 2 stores in "
        f"{time.monotonic() - started:.1f}s (rows generated and loaded in {loaded:.1f}s"
        + (f", {len(indexes)} indexes built after in {indexed:.1f}s" if postgres else "") + ")")
    return data


def analyze(engine):
    """Fresh planner statistics (and a vacuumed visibility map on PostgreSQL)."""
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql"
                                else "ANALYZE"))
