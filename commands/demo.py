"""Demo data for `flask seed-demo` and `make run`: 2 stores, a catalogue, customers, ~4,000 orders.

Everything is generated from one seeded random.Random (each order from a child generator of
its own), so every seed gives the same data set apart from the dates, which follow today (and,
through the order of events, a few loyalty redemptions). Rows are written with bulk INSERTs and
explicit ids, which is why a whole seed takes a few seconds even on SQLite.

The data keeps the invariants the domain relies on:
- every (store, product) stock row reserves exactly the open quantity of that product over the
  store's open orders, and holds free stock on top;
- a few products have no stock row in one store, so cancelling an order with them raises the
  "inventory reconciliation" flag;
- a customer's loyalty balance is the sum of their ledger entries, and every order's points
  earned / redeemed have matching entries;
- an already-cancelled order is cancelled by the domain's own writer (`cancellation/effects.py`),
  at its time in the past and by the member of staff who did it: items cancelled, a Cancellation
  with its items, refund booked, loyalty restored / reversed, stock released, an entry in the
  hash-chained audit log — and its refund and notice then marked delivered, as the workers would
  have done at the time.
"""
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, select, text, update

from cancellation import effects
from cancellation.audit import AuditContext
from cancellation.locks import lock_orders, plans_for
from cancellation.service import CancelRequest
from models import (
    PROCESSOR_TENDERS,
    Customer,
    LoyaltyEntry,
    Notification,
    Order,
    OrderItem,
    Payment,
    Product,
    Refund,
    StockLevel,
    Store,
    User,
    db,
    user_stores,
    utcnow,
)
from models.order import CANCELLABLE_STATUSES

DEMO_PASSWORD = "demo-password"
SEED = 420
DAYS = 120
ORDER_TARGET = 4000
CUSTOMER_COUNT = 800
TAX_RATE = 0.15

STORES = [
    {"id": 1, "name": "Downtown", "licence_number": "C10-0000123-LIC",
     "timezone": "America/Los_Angeles", "prefix": "DT", "first_number": 100001},
    {"id": 2, "name": "Uptown", "licence_number": "C10-0000456-LIC",
     "timezone": "America/Los_Angeles", "prefix": "UP", "first_number": 200001},
]

# (email, name, role, store ids)
USERS = [
    ("admin@demo.test", "Alex Admin", "admin", []),
    ("manager@demo.test", "Morgan Reyes", "store_manager", [1]),
    ("manager2@demo.test", "Jordan Park", "store_manager", [2]),
    ("fulfillment@demo.test", "Sam Whitaker", "fulfillment", [1]),
    ("support@demo.test", "Casey Nguyen", "customer_service", [1]),
    ("ops@demo.test", "Riley Ops", "ops_engineer", []),
]

# (sku, name, price in cents, relative popularity)
PRODUCTS = [
    ("FL-BD-35", "Blue Dream Flower 3.5g", 3500, 10),
    ("FL-BD-70", "Blue Dream Flower 7g", 6500, 5),
    ("FL-OG-35", "OG Kush Flower 3.5g", 4000, 9),
    ("FL-GSC-35", "Girl Scout Cookies Flower 3.5g", 4200, 8),
    ("FL-SD-35", "Sour Diesel Flower 3.5g", 3800, 7),
    ("FL-GG-70", "Gorilla Glue #4 Flower 7g", 7000, 4),
    ("FL-WC-35", "Wedding Cake Flower 3.5g", 4500, 6),
    ("FL-GL-280", "Granddaddy Purple Flower 28g", 22000, 1),
    ("PR-JH-1", "Jack Herer Pre-Roll 1g", 1200, 9),
    ("PR-IND-5", "Indica Pre-Roll 5-Pack 2.5g", 3500, 6),
    ("PR-INF-1", "Infused Diamond Pre-Roll 1g", 2200, 4),
    ("ED-GUM-100", "Watermelon Gummies 100mg (10 x 10mg)", 2000, 10),
    ("ED-GUM-CBD", "Sleep Gummies 1:1 CBD:THC 100mg", 2400, 5),
    ("ED-CHOC-100", "Dark Chocolate Bar 100mg", 2200, 5),
    ("ED-MINT-100", "Peppermint Mints 100mg", 1800, 3),
    ("ED-SELTZ-10", "Lemon Seltzer 10mg (4-pack)", 1600, 3),
    ("VP-CRT-05", "Live Resin Vape Cartridge 0.5g", 3500, 8),
    ("VP-CRT-10", "Distillate Vape Cartridge 1g", 4500, 6),
    ("VP-AIO-05", "All-in-One Disposable Vape 0.5g", 3000, 6),
    ("CN-BDR-1", "Live Rosin Badder 1g", 6000, 3),
    ("CN-SHT-1", "Shatter 1g", 3000, 3),
    ("CN-DIA-1", "THCa Diamonds 1g", 5500, 2),
    ("TN-CBD-30", "CBD Tincture 1000mg 30ml", 6000, 3),
    ("TN-THC-30", "THC Tincture 500mg 30ml", 5000, 3),
    ("TP-BLM-2", "CBD Relief Balm 2oz", 3500, 2),
    ("TP-LOT-4", "Cooling Body Lotion 4oz", 4000, 1),
    ("AC-GRD-4", "Aluminium Grinder 4-Piece", 2500, 2),
    ("AC-PAP-KS", "King Size Rolling Papers", 400, 4),
    ("AC-BAT-510", "510 Vape Battery", 2000, 2),
    ("AC-JAR-UV", "UV Glass Stash Jar", 1500, 1),
]
# Products with no stock row in one store: cancelling an order holding them raises the
# "inventory reconciliation" flag.
MISSING_STOCK = {1: ["TP-LOT-4"], 2: ["CN-DIA-1", "AC-JAR-UV"]}

FIRST_NAMES = """James Mary Michael Patricia Robert Jennifer John Linda David Elizabeth
William Barbara Richard Susan Joseph Jessica Thomas Sarah Christopher Karen Charles Lisa
Daniel Nancy Matthew Betty Anthony Sandra Mark Margaret Donald Ashley Steven Kimberly Andrew
Emily Paul Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Melissa Timothy Deborah
Ronald Stephanie Jason Rebecca George Sharon Edward Laura Jeffrey Cynthia Ryan Amy Jacob
Kathleen Nicholas Angela Gary Shirley Eric Brenda Jonathan Emma Stephen Anna Larry Pamela
Justin Nicole Scott Samantha Brandon Katherine Benjamin Christine Samuel Helen Gregory Debra
Alexander Rachel Patrick Carolyn Frank Janet Raymond Maria Jack Olivia Dennis Heather Jerry
Catherine Tyler Diane Aaron Julie Jose Victoria Adam Kelly Nathan Christina Henry Lauren
Zachary Joan Douglas Evelyn Peter Judith Kyle Megan Noah Andrea Ethan Cheryl Jeremy Hannah
Walter Jacqueline Christian Martha Keith Madison Roger Teresa Terry Gloria Austin Sara Sean
Janice Gerald Ann Carl Kathryn Harold Abigail Dylan Sophia Arthur Frances Lawrence Jean
Jordan Alice Jesse Judy Bryan Isabella Billy Julia Bruce Grace Gabriel Amber Joe Denise
Logan Danielle Alan Marilyn Juan Beverly Albert Charlotte Willie Natalie Elijah Theresa
Wayne Diana Randy Brittany Vincent Doris Mason Kayla Roy Alexis Ralph Lori Bobby Marie
Russell Mia Bradley Luis Camila Diego Sofia Mateo Valentina Hiroshi Yuki Wei Mei Priya Arjun
Aisha Omar Leila Tariq Nia Malik Imani Santiago""".split()

LAST_NAMES = """Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez
Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez
Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright
Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell
Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart
Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly
Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza
Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell
Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez
Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno
West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro
Marshall Owens Harrison Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen
Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva
Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose
Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols Stephens
Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce Vazquez
Hansen Peters Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll
Lane Riley Andrews Alvarado Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena
Richards Contreras Willis Carpenter Lawrence Sandoval Yamamoto Tanaka Singh Shah Okafor
Mensah Kowalski Novak Larsen Lindqvist""".split()

EMAIL_DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]
AREA_CODES = ["213", "310", "323", "424", "562", "626", "747", "818"]

CANCEL_REASONS = [
    ("customer_requested", 40, ["Customer changed their mind.", "Found a better price elsewhere.",
                                "No longer needed.", "Ordered the wrong size."]),
    ("inventory_issues", 18, ["Item out of stock at pick time.", "Inventory count discrepancy.",
                              "Batch failed quality check."]),
    ("payment_problems", 12, ["Card declined at pickup.", "Payment method invalid.",
                              "Possible fraud: billing address mismatch."]),
    ("regulatory_compliance", 8, ["Daily purchase limit exceeded.",
                                  "ID could not be verified at pickup."]),
    ("operational_issues", 10, ["No delivery driver available.", "POS outage during pickup."]),
    ("duplicate_order", 12, ["Customer submitted the order twice.",
                             "Duplicate created by a checkout retry."]),
]
REQUEST_CHANNELS = ["phone", "email", "in_store", "chat"]


def database_is_empty():
    """True when no store, user, product, customer or order exists yet."""
    for model in (Store, User, Product, Customer, Order):
        if db.session.scalar(select(func.count()).select_from(model)):
            return False
    return True


@dataclass
class Plan:
    """Every row to insert, as plain dicts keyed by table."""

    rows: dict = field(default_factory=lambda: defaultdict(list))

    def add(self, model, **values):
        self.rows[model].append(values)
        return values


def _local_to_utc(day, hour, minute):
    """A wall-clock time in the stores' zone (America/Los_Angeles) as naive UTC."""
    try:
        from zoneinfo import ZoneInfo

        local = datetime(day.year, day.month, day.day, hour, minute,
                         tzinfo=ZoneInfo("America/Los_Angeles"))
        return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    except Exception:  # noqa: BLE001 - no tz database on this machine: PST is close enough
        return datetime(day.year, day.month, day.day, hour, minute) + timedelta(hours=8)


class DemoBuilder:
    """Builds the whole demo data set in memory; `write()` inserts it."""

    def __init__(self, seed=SEED, now=None):
        self.rng = random.Random(seed)
        self.now = (now or utcnow()).replace(microsecond=0)
        self.plan = Plan()
        self.order_id = 0
        self.item_id = 0
        self.cancellation_id = 0
        self.numbers = {store["id"]: store["first_number"] for store in STORES}
        self.stock_missing = set()
        self.points = defaultdict(int)
        self.unbooked = defaultdict(int)  # points the cancellations will settle (cancel())
        self.ledger = []  # (customer, order, placed_at, points, kind, note, cancellation)

    # -- reference data ------------------------------------------------------------------------

    def build_reference(self):
        for store in STORES:
            self.plan.add(Store, id=store["id"], name=store["name"],
                          licence_number=store["licence_number"], timezone=store["timezone"])
        from werkzeug.security import generate_password_hash

        for user_id, (email, name, role, stores) in enumerate(USERS, start=1):
            self.plan.add(User, id=user_id, email=email, name=name, role=role, active=True,
                          password_hash=generate_password_hash(DEMO_PASSWORD),
                          created_at=self.now - timedelta(days=DAYS + 30))
            for store_id in stores:
                self.plan.rows[user_stores].append({"user_id": user_id, "store_id": store_id})
        self.products = []
        for product_id, (sku, name, price, weight) in enumerate(PRODUCTS, start=1):
            self.plan.add(Product, id=product_id, sku=sku, name=name, price_cents=price)
            self.products.append((product_id, sku, price, weight))
        by_sku = {sku: product_id for product_id, sku, _p, _w in self.products}
        for store_id, skus in MISSING_STOCK.items():
            self.stock_missing.update((store_id, by_sku[sku]) for sku in skus)
        self.build_customers()

    def build_customers(self):
        rng = self.rng
        self.customers = []
        used_emails = set()
        for customer_id in range(1, CUSTOMER_COUNT + 1):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = None
            if rng.random() < 0.9:
                local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{last[0]}",
                                    f"{first}_{last}"]).lower()
                email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
                while email in used_emails:
                    email = f"{local}{rng.randint(1, 99)}@{rng.choice(EMAIL_DOMAINS)}"
                used_emails.add(email)
            phone = None
            if email is None or rng.random() < 0.93:
                phone = f"+1 {rng.choice(AREA_CODES)} 555 {rng.randint(100, 199):04d}"
            self.customers.append({
                "id": customer_id, "name": f"{first} {last}", "email": email, "phone": phone,
                "home_store": 1 if rng.random() < 0.55 else 2,
                "loyalty": rng.random() < 0.65,
            })

    # -- orders ----------------------------------------------------------------------------------

    def pick_lines(self, big=False):
        rng = self.rng
        count = rng.choices([1, 2, 3, 4, 5], weights=[30, 30, 20, 12, 8])[0]
        if big:
            count = max(count, 3)
        weights = [w for _id, _sku, _p, w in self.products]
        chosen = {}
        while len(chosen) < count:
            product_id, _sku, price, _w = rng.choices(self.products, weights=weights)[0]
            quantity = rng.choices([1, 2, 3], weights=[70, 22, 8])[0]
            if big:
                quantity = rng.randint(3, 6)
            chosen[product_id] = (quantity, price)
        return [(pid, qty, price) for pid, (qty, price) in chosen.items()]

    def status_for(self, age_days):
        """Old orders are mostly done; recent ones mostly open; a few open ones have gone stale."""
        rng = self.rng
        if age_days < 2:
            weights = {"pending": 45, "in_progress": 22, "on_hold": 10, "completed": 18,
                       "cancelled": 5}
        elif age_days < 7:
            weights = {"pending": 14, "in_progress": 10, "on_hold": 6, "completed": 62,
                       "cancelled": 8}
        elif age_days < 30:
            weights = {"pending": 1.5, "in_progress": 1, "on_hold": 2, "completed": 87,
                       "cancelled": 8.5}
        elif age_days < 60:
            weights = {"pending": 0.8, "on_hold": 1.5, "completed": 75, "archived": 14,
                       "cancelled": 8}
        else:
            weights = {"pending": 0.4, "on_hold": 0.8, "completed": 20, "archived": 71,
                       "cancelled": 8}
        return rng.choices(list(weights), weights=list(weights.values()))[0]

    def placed_at(self, age_days):
        day = (self.now - timedelta(days=age_days)).date()
        moment = _local_to_utc(day, self.rng.randint(9, 20), self.rng.randint(0, 59))
        # Today's orders can't be placed later than now.
        return min(moment, self.now - timedelta(minutes=self.rng.randint(5, 600)))

    def build_orders(self):
        rng = self.rng
        drafts = []
        # Recurring series: weekly, 3-6 orders, same customer, store and basket.
        for series_no in range(1, 61):
            customer = rng.choice(self.customers)
            length = rng.randint(3, 6)
            ends_days_ago = rng.choice([0, 1, 2, 3, 4, 5, 6] * 3 + list(range(7, DAYS - 40)))
            lines = self.pick_lines()
            delivery = rng.random() < 0.7
            series_id = f"SUB-{series_no:04d}"
            for position in range(1, length + 1):
                age = ends_days_ago + 7 * (length - position)
                status = self.status_for(age)
                if status == "cancelled" and position == length:
                    status = "pending"
                drafts.append({"age": age, "customer": customer, "store": customer["home_store"],
                               "lines": lines, "status": status, "delivery": delivery,
                               "series_id": series_id, "series_position": position})
        # One-off orders, busier on recent days and on weekends.
        while len(drafts) < ORDER_TARGET:
            age = min(int(rng.expovariate(1 / 55)), DAYS - 1)
            if rng.random() < 0.35:
                age = rng.randint(0, 6)
            customer = rng.choice(self.customers)
            store = customer["home_store"] if rng.random() < 0.85 else 3 - customer["home_store"]
            big = rng.random() < 0.03
            drafts.append({"age": age, "customer": customer if rng.random() < 0.97 else None,
                           "store": store, "lines": self.pick_lines(big=big),
                           "status": self.status_for(age), "delivery": rng.random() < 0.25,
                           "series_id": None, "series_position": None})
        for draft in drafts:
            draft["placed_at"] = self.placed_at(draft["age"])
            # Each order draws from its own generator: the sort below depends on the clock, and
            # must not change what the dice say about any one order.
            draft["rng"] = random.Random(rng.getrandbits(64))
        # Ids and numbers follow time, so "newest first" is also "highest id first".
        drafts.sort(key=lambda d: d["placed_at"])
        for draft in drafts:
            self.add_order(draft)
        self.add_guaranteed_cases()

    def add_order(self, draft):
        rng = draft.get("rng") or random.Random(self.rng.getrandbits(64))
        status, customer, lines = draft["status"], draft["customer"], draft["lines"]
        self.order_id += 1
        order_id = self.order_id
        store = STORES[draft["store"] - 1]
        number = f"{store['prefix']}-{self.numbers[store['id']]}"
        self.numbers[store["id"]] += 1
        placed_at = draft["placed_at"]

        subtotal = sum(quantity * price for _pid, quantity, price in lines)
        discount = 0
        if rng.random() < 0.12:  # promotion: 10% or 20% off
            discount = subtotal * rng.choice([10, 20]) // 100
        points_redeemed = 0
        in_loyalty = customer is not None and customer["loyalty"]
        balance = self.points[customer["id"]] if customer else 0
        if in_loyalty and balance >= 100 and rng.random() < 0.25:
            points_redeemed = min(balance // 100, rng.randint(1, 4)) * 100
            discount += points_redeemed // 20 * 100  # 100 points = $5.00
        discount = min(discount, subtotal)
        tax = round((subtotal - discount) * TAX_RATE)
        total = subtotal - discount + tax

        paid = True
        if status == "pending" or (status == "cancelled" and rng.random() < 0.3):
            paid = rng.random() < 0.6
        # How dispensaries are paid: mostly cash, then debit (PIN debit / cashless ATM), some
        # card, and split tenders — cash with debit, or store credit first.
        tenders = []
        if paid:
            mix = rng.choices(["cash", "debit", "card", "cash+debit", "store_credit+cash"],
                              weights=[45, 25, 12, 12, 6])[0]
            if mix == "store_credit+cash" and customer is None:
                mix = "cash+debit"
            tenders = mix.split("+")
        method = tenders[0] if tenders else None
        points_earned = total // 100 if in_loyalty and paid else 0

        shipment = "not_shipped"
        if status in ("completed", "archived"):
            shipment = "delivered" if draft["delivery"] else "not_shipped"
        elif status == "in_progress":
            if draft["delivery"]:
                shipment = "in_transit" if rng.random() < 0.55 else "not_shipped"
            elif rng.random() < 0.4:
                shipment = "ready_for_pickup"
        billing_hold = False
        if status == "on_hold":
            billing_hold = rng.random() < 0.45
        elif status in ("pending", "in_progress"):
            billing_hold = rng.random() < 0.03

        order = self.plan.add(
            Order, id=order_id, number=number, store_id=store["id"],
            customer_id=customer["id"] if customer else None, status=status,
            placed_at=placed_at, updated_at=placed_at, subtotal_cents=subtotal,
            tax_cents=tax, discount_cents=discount, total_cents=total,
            payment_status="paid" if paid else "unpaid", paid_cents=total if paid else 0,
            refunded_cents=0, payment_method=method, points_earned=points_earned,
            points_redeemed=points_redeemed, billing_hold=billing_hold, shipment_status=shipment,
            series_id=draft["series_id"], series_position=draft["series_position"],
            previous_status=None, cancelled_at=None, version=1)
        if tenders:
            first = total if len(tenders) == 1 else total * rng.randint(20, 70) // 100
            amounts = (first,) if len(tenders) == 1 else (first, total - first)
            for n, (tender, cents) in enumerate(zip(tenders, amounts, strict=True)):
                if cents > 0:
                    self.plan.add(Payment, order_id=order_id, tender=tender, amount_cents=cents,
                                  refunded_cents=0, created_at=placed_at,
                                  processor_reference=(f"pay_{number}_{n}"
                                                       if tender in PROCESSOR_TENDERS else None))
        items = []
        for product_id, quantity, price in lines:
            self.item_id += 1
            items.append(self.plan.add(OrderItem, id=self.item_id, order_id=order_id,
                                       product_id=product_id, quantity=quantity,
                                       unit_price_cents=price, cancelled_quantity=0))
        if customer is not None:
            if points_redeemed:
                self.book_points(customer, order, -points_redeemed, "redeemed",
                                 f"Redeemed on {number}")
            if points_earned:
                self.book_points(customer, order, points_earned, "earned", f"Earned on {number}")
        if status == "cancelled":
            self.cancel(order, customer, rng)
        return order

    def book_points(self, customer, order, points, kind, note, cancellation_id=None, at=None):
        self.points[customer["id"]] += points
        self.plan.add(LoyaltyEntry, customer_id=customer["id"], order_id=order["id"],
                      cancellation_id=cancellation_id, points=points, kind=kind, note=note,
                      created_at=at or order["placed_at"])

    def cancel(self, order, customer, rng):
        """Leave the order open, as it was when it was cancelled, and note who cancels it, when
        and why: `cancel_history` cancels it through the domain's writer once it is written."""
        cancelled_at = order["placed_at"] + timedelta(minutes=rng.randint(10, 60 * 20))
        cancelled_at = min(cancelled_at, self.now - timedelta(minutes=1))
        previous = rng.choices(["pending", "on_hold", "in_progress"], weights=[70, 18, 12])[0]
        reason, _w, notes = rng.choices(CANCEL_REASONS, weights=[r[1] for r in CANCEL_REASONS])[0]
        store_staff = {1: [1, 2, 5], 2: [1, 3]}[order["store_id"]]
        actor_id = rng.choice(store_staff)
        if reason == "customer_requested" and order["store_id"] == 1:
            actor_id = 5  # customer service logs customer requests at Downtown
        request_contact = request_channel = requested_at = None
        if reason == "customer_requested":
            request_channel = rng.choice(REQUEST_CHANNELS)
            request_contact = (customer and (customer["phone"] if request_channel == "phone"
                                             else customer["email"] or customer["phone"])
                               ) or "walk-in customer"
            requested_at = cancelled_at - timedelta(minutes=rng.randint(2, 45))
        order.update(status=previous, shipment_status="not_shipped", billing_hold=False)
        if customer is not None:  # what the cancellation will give back and take back, so that
            # later orders redeem only what the customer will have (the writer books it)
            settled = order["points_redeemed"] - order["points_earned"]
            self.points[customer["id"]] += settled
            self.unbooked[customer["id"]] += settled
        self.cancellations.append({
            "order_id": order["id"], "at": cancelled_at, "actor_id": actor_id,
            "source": rng.choices(["panel", "api_v1"], weights=[85, 15])[0],
            # staff untick "notify customer" when there is no address to write to
            "request": CancelRequest(
                reason=reason, notes=rng.choice(notes), request_contact=request_contact,
                request_channel=request_channel, requested_at=requested_at,
                notify_customer=bool(customer and customer["email"])),
            "delivered_at": cancelled_at + timedelta(seconds=rng.randint(2, 40)),
            "gateway_reference": f"sim_re_{rng.getrandbits(64):016x}"})

    def add_guaranteed_cases(self):
        """Make sure the cases worth trying exist in both stores whatever the dice said."""
        rng = self.rng
        for store in (1, 2):
            customers = [c for c in self.customers if c["home_store"] == store and c["email"]]
            recent = [("pending", False, "not_shipped", False),
                      ("in_progress", False, "in_transit", True),
                      ("on_hold", True, "not_shipped", False),
                      ("pending", False, "not_shipped", False)]
            for status, hold, shipment, delivery in recent:
                draft = {"age": 0, "customer": rng.choice(customers), "store": store,
                         "lines": self.pick_lines(), "status": status, "delivery": delivery,
                         "series_id": None, "series_position": None,
                         "placed_at": self.now - timedelta(minutes=rng.randint(10, 240))}
                order = self.add_order(draft)
                order.update(billing_hold=hold, shipment_status=shipment)
            # An open order older than 30 days and a big open order (approval territory).
            for age, big in ((rng.randint(35, 80), False), (1, True)):
                draft = {"age": age, "customer": rng.choice(customers), "store": store,
                         "lines": self.pick_lines(big=big), "status": "pending",
                         "delivery": False, "series_id": None, "series_position": None,
                         "placed_at": self.placed_at(age)}
                order = self.add_order(draft)
                order.update(billing_hold=False, shipment_status="not_shipped")
            # An open order holding a product with no stock row in this store.
            missing = [pid for (sid, pid) in self.stock_missing if sid == store]
            price = {pid: price for pid, _sku, price, _w in self.products}
            draft = {"age": 0, "customer": rng.choice(customers), "store": store,
                     "lines": [(missing[0], 1, price[missing[0]]), (1, 1, price[1])],
                     "status": "pending", "delivery": False, "series_id": None,
                     "series_position": None,
                     "placed_at": self.now - timedelta(minutes=rng.randint(10, 240))}
            order = self.add_order(draft)
            order.update(billing_hold=False, shipment_status="not_shipped")

    # -- derived rows ----------------------------------------------------------------------------

    def build_stock(self):
        """Reserve exactly the open quantities; put free stock on top."""
        open_orders = {o["id"]: o["store_id"] for o in self.plan.rows[Order]
                       if o["status"] in CANCELLABLE_STATUSES}
        reserved = defaultdict(int)
        for item in self.plan.rows[OrderItem]:
            store_id = open_orders.get(item["order_id"])
            if store_id is not None:
                reserved[store_id, item["product_id"]] += (item["quantity"]
                                                           - item["cancelled_quantity"])
        for store in STORES:
            for product_id, _sku, price, weight in self.products:
                key = (store["id"], product_id)
                if key in self.stock_missing:
                    continue
                free = self.rng.randint(4, 12) * weight + self.rng.randint(0, 20)
                if price > 10000:
                    free = self.rng.randint(3, 10)
                self.plan.add(StockLevel, store_id=store["id"], product_id=product_id,
                              on_hand=reserved[key] + free, reserved=reserved[key])

    def build_customers_rows(self):
        for customer in self.customers:
            self.plan.add(Customer, id=customer["id"], name=customer["name"],
                          email=customer["email"], phone=customer["phone"],
                          loyalty_points=(self.points[customer["id"]]
                                          - self.unbooked[customer["id"]]))

    def build(self):
        self.cancellations = []
        self.build_reference()
        self.build_orders()
        self.build_stock()
        self.build_customers_rows()
        return self.plan


# Parents before children (foreign keys are enforced on SQLite too).
INSERT_ORDER = [Store, User, user_stores, Product, Customer, StockLevel, Order, OrderItem,
                Payment, LoyaltyEntry]
EXPLICIT_IDS = ["stores", "users", "products", "customers", "orders", "order_items"]


def _insert(target, rows, chunk=2000):
    for start in range(0, len(rows), chunk):
        batch = rows[start:start + chunk]
        if hasattr(target, "__table__"):
            db.session.execute(insert(target), batch)
        else:
            db.session.execute(target.insert(), batch)


def _advance_sequences():
    """Rows were inserted with explicit ids: move PostgreSQL's sequences past them."""
    if db.engine.dialect.name != "postgresql":
        return
    for table in EXPLICIT_IDS:
        db.session.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"))


def seed_demo(seed=SEED, now=None):
    """Insert the demo data set into an empty database and commit. Returns counts by table."""
    builder = DemoBuilder(seed=seed, now=now)
    plan = builder.build()
    for target in INSERT_ORDER:
        _insert(target, plan.rows[target])
    _advance_sequences()
    db.session.commit()
    cancel_history(builder.cancellations)
    counts = {getattr(t, "__tablename__", getattr(t, "name", str(t))): len(plan.rows[t])
              for t in INSERT_ORDER}
    counts["cancellations"] = len(builder.cancellations)
    return counts


def cancel_history(cancellations):
    """Cancel the demo's cancelled orders through the domain's writer, oldest first, each at its
    time and by its member of staff — consecutive ones of one person and channel together — and
    mark their refunds and notices delivered shortly after, as the workers would have."""
    cancellations = sorted(cancellations, key=lambda c: (c["at"], c["order_id"]))
    users = {user.id: user for user in db.session.scalars(select(User))}
    delivered = []
    start = 0
    while start < len(cancellations):
        end = start + 1
        key = (cancellations[start]["actor_id"], cancellations[start]["source"])
        while (end < len(cancellations)
               and (cancellations[end]["actor_id"], cancellations[end]["source"]) == key):
            end += 1
        run = cancellations[start:end]
        orders = lock_orders([c["order_id"] for c in run])
        plans = [plans_for([(orders[c["order_id"]], c["request"], None)], now=c["at"])[0]
                 for c in run]
        effects.write(plans, users[key[0]], AuditContext(source=key[1]), dispatch=False)
        db.session.commit()
        delivered += zip(run, plans, strict=True)
        start = end
    _delivered_long_ago(delivered)


def _delivered_long_ago(done):
    """Card and debit refunds paid by the processor seconds after their cancellation; cash handed
    over at the counter within hours (the last day's cash still waits there, so the payouts queue
    has work in it); store credit was given at once. Notices sent."""
    waiting_since = max((c["at"] for c, _plan in done), default=None)
    waiting_since = waiting_since - timedelta(hours=20) if waiting_since else None
    paid, cash, notices = [], [], []
    for c, plan in done:
        for n, (allocation, refund_id) in enumerate(zip(plan.refunds, plan.refund_ids,
                                                        strict=True)):
            if allocation.tender in PROCESSOR_TENDERS:
                paid.append({"b_id": refund_id, "b_ref": f"{c['gateway_reference']}{n}",
                             "b_at": c["at"], "b_done": c["delivered_at"]})
            elif allocation.tender == "cash" and c["at"] < waiting_since:
                cash.append({"b_id": refund_id, "b_at": c["at"],
                             "b_done": c["at"] + timedelta(minutes=20 + c["order_id"] % 200),
                             "b_by": c["actor_id"], "b_drawer": f"Drawer {1 + c['order_id'] % 3}"})
        if plan.notification_id:
            notices.append({"b_id": plan.notification_id, "b_at": c["at"],
                            "b_done": c["delivered_at"]})
    for model, rows, values in (
            (Refund, paid, {"gateway_reference": bindparam("b_ref"),
                            "succeeded_at": bindparam("b_done")}),
            (Refund, cash, {"succeeded_at": bindparam("b_done"), "drawer": bindparam("b_drawer"),
                            "paid_out_by_id": bindparam("b_by")}),
            (Notification, notices, {"sent_at": bindparam("b_done")})):
        if rows:
            table = model.__table__
            db.session.execute(
                update(table).where(table.c.id == bindparam("b_id"))
                .values(status="succeeded", attempts=1, dispatched_at=bindparam("b_at"),
                        updated_at=bindparam("b_done"), **values), rows)
    db.session.commit()


def add_open_orders(store_id, count, seed=None):
    """`count` fresh pending orders for a demo store, to try a bulk cancellation of thousands:
    1-3 lines of products the store stocks, paid by card, most with a customer; their stock is
    reserved (and put on hand), as for every open order. Returns their numbers (first, last)."""
    rng = random.Random(seed)
    store = next((s for s in STORES if s["id"] == store_id), None)
    if store is None or db.session.get(Store, store_id) is None:
        raise ValueError(f"no demo store {store_id}")
    products = db.session.execute(
        select(Product.id, Product.price_cents).join(
            StockLevel, (StockLevel.product_id == Product.id) & (StockLevel.store_id == store_id))
        .order_by(Product.id)).all()
    customers = db.session.scalars(select(Customer.id).order_by(Customer.id)).all()
    numbers = db.session.scalars(select(Order.number).where(Order.store_id == store_id)).all()
    next_number = 1 + max((int(n.rsplit("-", 1)[1]) for n in numbers
                           if n.rsplit("-", 1)[-1].isdigit()), default=store["first_number"] - 1)
    now = utcnow().replace(microsecond=0)
    orders, reserved = [], defaultdict(int)
    for offset in range(count):
        lines = rng.sample(products, k=rng.randint(1, min(3, len(products))))
        quantities = [rng.randint(1, 3) for _ in lines]
        subtotal = sum(q * price for q, (_pid, price) in zip(quantities, lines, strict=True))
        tax = round(subtotal * TAX_RATE)
        orders.append(Order(
            number=f"{store['prefix']}-{next_number + offset}", store_id=store_id,
            customer_id=rng.choice(customers) if customers and rng.random() < 0.7 else None,
            status="pending", placed_at=now - timedelta(minutes=rng.randint(1, 600)),
            subtotal_cents=subtotal, tax_cents=tax, total_cents=subtotal + tax,
            payment_status="paid", paid_cents=subtotal + tax, payment_method="card",
            payments=[Payment(tender="card", amount_cents=subtotal + tax,
                              processor_reference=f"pay_{store['prefix']}_{next_number + offset}")],
            items=[OrderItem(product_id=pid, quantity=q, unit_price_cents=price)
                   for q, (pid, price) in zip(quantities, lines, strict=True)]))
        for q, (pid, _price) in zip(quantities, lines, strict=True):
            reserved[pid] += q
    db.session.add_all(orders)
    for product_id, quantity in sorted(reserved.items()):
        db.session.execute(
            StockLevel.__table__.update()
            .where(StockLevel.store_id == store_id, StockLevel.product_id == product_id)
            .values(on_hand=StockLevel.on_hand + quantity,
                    reserved=StockLevel.reserved + quantity))
    db.session.commit()
    return orders[0].number, orders[-1].number
