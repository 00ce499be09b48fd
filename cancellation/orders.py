"""The orders list's query: the orders a user may see, filtered and searched, newest first.

The panel's list, its "select all matching" and API v1's list all read it, so they agree on which
orders match. Fast at a million orders on PostgreSQL (the indexes of models.order and
models.customer, migration a7c3e91f0d52):

- the list's filters and its order (placed_at, id) are served by composite b-tree indexes,
  store first, so a page is an index range and the count an index-only scan;
- the search matches a substring, ignoring case, of the order number, the customer's name and —
  for users who may see customer contact details — e-mail and phone. On PostgreSQL each is an
  ILIKE that a trigram (pg_trgm) GIN index answers; the phone is compared by its digits only,
  so "555-000-1234", "(555) 000 1234" and "5550001234" find "+1 555 000 1234". The customers
  are found first and the orders by `customer_id = ANY(ARRAY(...))`, which PostgreSQL ORs with
  the number's index (a BitmapOr) instead of filtering every order through a subquery.
"""
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import any_, func, or_, select

from cancellation.policy import can, visible_orders
from models import Customer, Order, db

NEWEST_FIRST = (Order.placed_at.desc(), Order.id.desc())
# A phone number as typed: digits and the punctuation people put between them.
PHONE_LIKE = re.compile(r"[0-9\s()+./-]+")
PHONE_MIN_DIGITS = 4  # "the last four digits" finds a customer; fewer would match everyone
LIKE_ESCAPE = "/"


def _pattern(term):
    """`%term%` for LIKE, with the wildcards the user typed matched literally."""
    escaped = (term.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
               .replace("_", LIKE_ESCAPE + "_"))
    return f"%{escaped}%"


def _contains(column, term):
    """Case-insensitive substring: ILIKE on PostgreSQL (what a gin_trgm_ops index serves),
    lower() LIKE lower() elsewhere."""
    return column.ilike(_pattern(term), escape=LIKE_ESCAPE)


def search_condition(term, user):
    """The orders whose number, or whose customer's name (e-mail, phone digits for users who
    may see contact details), contains `term`, ignoring case."""
    customer = [_contains(Customer.name, term)]
    if can(user, "view_customer_contact"):
        customer.append(_contains(Customer.email, term))
        digits = re.sub(r"\D", "", term)
        if PHONE_LIKE.fullmatch(term) and len(digits) >= PHONE_MIN_DIGITS:
            customer.append(Customer.phone_digits.like(f"%{digits}%"))
    customers = select(Customer.id).where(or_(*customer))
    if db.session.get_bind().dialect.name == "postgresql":
        # An InitPlan evaluated once whose array the orders' customer_id index probes; an IN
        # (subquery) would be a hashed SubPlan run as a filter over every order.
        by_customer = Order.customer_id == any_(func.array(customers.scalar_subquery()))
    else:
        by_customer = Order.customer_id.in_(customers)
    return or_(_contains(Order.number, term), by_customer)


def matching_orders(user, filters, *columns):
    """select() of the orders `user` may see (their stores, policy.visible_orders) that match
    `filters` — unordered, unpaged. `filters` has any of: status, store_id, billing_hold,
    shipment_status, payment_status, q (search text), date_from / date_to (dates, both
    inclusive)."""
    query = visible_orders(select(*(columns or (Order,))), user)
    value = {name: getattr(filters, name, None) for name in (
        "status", "store_id", "billing_hold", "shipment_status", "payment_status", "q",
        "date_from", "date_to")}
    for name, column in (("status", Order.status), ("store_id", Order.store_id),
                         ("shipment_status", Order.shipment_status),
                         ("payment_status", Order.payment_status)):
        if value[name]:
            query = query.where(column == value[name])
    if value["billing_hold"] is not None:
        query = query.where(Order.billing_hold == value["billing_hold"])
    if value["date_from"]:
        query = query.where(Order.placed_at >= datetime.combine(value["date_from"], time.min))
    if value["date_to"] and value["date_to"] < date.max:
        query = query.where(Order.placed_at < datetime.combine(
            value["date_to"] + timedelta(days=1), time.min))
    if value["q"]:
        query = query.where(search_condition(value["q"], user))
    return query


FEW = 500  # a search finds a handful of orders: listed from one read of their ids


@dataclass
class OrderPage:
    orders: list  # this page's, newest first
    total: int  # how many match
    page: int  # the page shown (the last one when asked past it, if clamped)
    pages: int
    newest_id: int | None  # see order_page's `newest`


def order_page(user, filters, page, per_page, *, options=(), clamp=True, newest=None):
    """Page `page` of the orders `user` sees that match `filters` (matching_orders), newest
    first, with their count; `clamp` shows the last page for one past it, else it is empty.

    `newest` (a number N, or None for nothing) asks for newest_id, the id "select all matching"
    freezes the selection at: the highest id among the matches when at most N match; beyond, the
    highest id of all orders — a selection that big is refused for its size anyway, and that id
    costs nothing to find.

    A search reads the ids of its matches once, in the list's order (the trigram indexes, then
    the rows), and counts and pages them here when there are at most FEW. Anything else — and a
    search finding more — is counted from the narrowest index of its filters (ix_orders_store_
    status, deduplicated: a few pages for a hundred thousand orders), and the page is read as a
    range of the composite index in the list's order."""
    query = matching_orders(user, filters)
    ids = None
    if getattr(filters, "q", None):
        found = db.session.scalars(query.with_only_columns(Order.id).order_by(*NEWEST_FIRST)
                                   .limit(FEW + 1)).all()
        ids = found if len(found) <= FEW else None
    newest_id = None
    if ids is not None:
        total, newest_id = len(ids), max(ids, default=None)
    else:
        total = db.session.scalar(query.order_by(None).with_only_columns(
            func.count(), maintain_column_froms=True))  # FROM orders, even with no filter
        if newest is not None and total:
            newest_id = db.session.scalar(_newest_of(query) if total <= newest
                                          else select(func.max(Order.id)))
    pages = max((total + per_page - 1) // per_page, 1)
    if clamp:
        page = min(page, pages)
    if ids is None:
        orders = db.session.scalars(query.options(*options).order_by(*NEWEST_FIRST)
                                    .limit(per_page).offset((page - 1) * per_page)).all()
    else:
        shown = ids[(page - 1) * per_page:page * per_page]
        by_id = {order.id: order for order in db.session.scalars(
            select(Order).where(Order.id.in_(shown)).options(*options))} if shown else {}
        orders = [by_id[order_id] for order_id in shown]
    return OrderPage(orders, total, page, pages, newest_id)


def _newest_of(query):
    """max(id) of the few orders `query` finds, read from its filters' index. The OFFSET 0 keeps
    PostgreSQL from answering it by walking the primary key down from the newest order, which
    passes every newer order first when the matches are old ones (archived, say)."""
    ids = query.order_by(None).with_only_columns(Order.id).offset(0).subquery()
    return select(func.max(ids.c.id))
