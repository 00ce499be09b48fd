"""Who may do what (SPEC §3): capabilities per role, store scoping, and the cancel decision.

`evaluate_cancel` is the single answer to "may this user cancel this order directly, must they ask,
or may they not at all — and why". The panel, both APIs, previews and bulk jobs all call it.
"""
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select

from cancellation.errors import Blocked, ConcurrentModification, Forbidden, InvalidState, NotFound
from cancellation.reasons import CancellationReason
from models import Order, Role, Setting, Store, db, money, utcnow
from models.order import CANCELLABLE_STATUSES, OrderStatus, ShipmentStatus

# Capabilities are what routes check (one Flask-Principal permission each), never roles.
CAPABILITIES = {
    Role.ADMIN: {
        "view_orders", "cancel_order", "request_cancellation", "approve_cancellation",
        "bulk_cancel", "reinstate_order", "retry_delivery", "reconcile_inventory",
        "view_customer_contact", "view_audit", "use_api_v2", "administer", "view_mailbox",
        "pay_out_cash",
    },
    Role.STORE_MANAGER: {
        "view_orders", "cancel_order", "request_cancellation", "approve_cancellation",
        "bulk_cancel", "reinstate_order", "retry_delivery", "reconcile_inventory",
        "view_customer_contact", "view_audit", "pay_out_cash",
    },
    # Counter staff: they hand cash refunds over and take a balance due at pickup.
    Role.FULFILLMENT: {"view_orders", "cancel_order", "request_cancellation", "pay_out_cash"},
    Role.CUSTOMER_SERVICE: {
        "view_orders", "cancel_order", "request_cancellation", "retry_delivery",
        "view_customer_contact", "pay_out_cash",
    },
    Role.OPS_ENGINEER: {
        "view_orders", "cancel_order", "request_cancellation", "reinstate_order",
        "retry_delivery", "reconcile_inventory", "view_audit", "use_api_v2",
    },
}

APPROVER_ROLES = (Role.ADMIN.value, Role.STORE_MANAGER.value)


def capabilities_of(user):
    try:
        return CAPABILITIES[Role(user.role)]
    except ValueError:
        return set()


def can(user, capability):
    return user is not None and user.is_active and capability in capabilities_of(user)


def store_scope(user):
    """None when the user sees every store, else the set of store ids they work in."""
    return None if user.sees_every_store else (user.store_ids or {-1})


def scoped(query, user, store_column):
    """The store scoping, the one place it is decided: restrict a select() to the rows whose
    `store_column` (a store id column) is a store the user works in."""
    scope = store_scope(user)
    return query if scope is None else query.where(store_column.in_(scope))


def visible_orders(query, user):
    """Restrict a select() of orders to the stores the user works in."""
    return scoped(query, user, Order.store_id)


def visible_stores(user):
    """The stores the user works in (every store for those who see all), by name."""
    return db.session.scalars(scoped(select(Store).order_by(Store.name), user, Store.id)).all()


def can_view_order(user, order):
    return order is not None and (user.sees_every_store or order.store_id in user.store_ids)


def require_visible(user, order):
    """404 for orders that do not exist and for orders of another store alike."""
    if not can_view_order(user, order):
        raise NotFound("Order not found.")
    return order


@dataclass
class Decision:
    """The outcome of the checks: a direct cancel, or one that needs approval (and why)."""

    needs_approval: bool = False
    why: list = field(default_factory=list)


def blockers_of(order, expected_version=None):
    """Every blocker present, as error instances, in the order SPEC §1 lists them."""
    found = []
    if order.billing_hold:
        found.append(Blocked("A billing hold is active on this order; resolve the billing "
                             "issue first.", code="billing_hold_active"))
    if order.shipment_status == ShipmentStatus.IN_TRANSIT.value:
        found.append(Blocked("The shipment is in transit; it cannot be cancelled until it is "
                             "delivered or returned.", code="shipment_in_transit"))
    if expected_version is not None and expected_version != order.version:
        found.append(ConcurrentModification(order.version))
    return found


def check_may_cancel(user, order, reason):
    """403 when the user's role may not cancel (or request a cancel of) this order at all."""
    if not can(user, "request_cancellation"):
        raise Forbidden("You do not have permission to cancel orders.")
    if user.role == Role.CUSTOMER_SERVICE.value and reason is not None \
            and reason != CancellationReason.CUSTOMER_REQUESTED.value:
        raise Forbidden("Customer service may cancel orders only for customer requests "
                        "(reason customer_requested).")


def check_state(order):
    if order.status not in CANCELLABLE_STATUSES:
        raise InvalidState(
            f"Order {order.number} is {order.status} and cannot be cancelled; only pending, "
            "in-progress and on-hold orders can.", details={"status": order.status})


def approval_reasons(user, order):
    """Why this user needs approval to cancel this order; empty when they may cancel directly."""
    role = user.role
    why = []
    manager_or_admin = role in APPROVER_ROLES
    if order.status == OrderStatus.IN_PROGRESS.value and not manager_or_admin:
        why.append("Fulfillment has started; a store manager or admin must approve.")
    threshold = Setting.get("approval_threshold_cents")
    if order.total_cents > threshold and not manager_or_admin:
        why.append(f"The order total {money(order.total_cents)} exceeds the approval threshold "
                   f"of {money(threshold)}.")
    max_age = Setting.get("approval_age_days")
    if utcnow() - order.placed_at > timedelta(days=max_age) and role != Role.ADMIN.value:
        why.append(f"The order was placed more than {max_age} days ago "
                   f"({order.age_days} days); "
                   "only an admin cancels it without approval.")
    if role == Role.FULFILLMENT.value and order.status != OrderStatus.PENDING.value \
            and order.status != OrderStatus.IN_PROGRESS.value:
        why.append("Fulfillment staff cancel directly only pending orders.")
    if not can(user, "cancel_order"):
        why.append("Your role may request cancellations but not perform them.")
    return why


def evaluate_cancel(user, order, *, reason=None, expected_version=None):
    """Run SPEC §1's checks in order; raise the first failure, else return the Decision."""
    require_visible(user, order)
    check_may_cancel(user, order, reason)
    check_state(order)
    blockers = blockers_of(order, expected_version)
    if blockers:
        raise blockers[0]
    why = approval_reasons(user, order)
    return Decision(needs_approval=bool(why), why=why)


def cancel_offer(user, order):
    """What the panel offers on an order: "cancel", "request_approval", or None (nothing).

    Blockers are not consulted: the dialog reports them when submitted, with the reason.
    """
    return cancel_offer_and_why(user, order)[0]


def cancel_offer_and_why(user, order):
    """cancel_offer, with why approval is needed: (offer, approval reasons, maybe empty)."""
    if not (can_view_order(user, order) and can(user, "request_cancellation")
            and order.status in CANCELLABLE_STATUSES):
        return None, []
    why = approval_reasons(user, order)
    return ("request_approval" if why else "cancel"), why
