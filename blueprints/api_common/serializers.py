"""JSON shapes of the API, shared by v1 and v2 so both describe an order the same way."""
from typing import NamedTuple

from cancellation.policy import can
from cancellation.privacy import mask_email, mask_phone, redact
from models import isoformat, money


class Viewer(NamedTuple):
    """Who an answer is shaped for (whether it shows contact details), read from the signed-in
    user before a commit expires it: serialising after the commit reads no user again."""

    id: int
    role: str
    is_active: bool

    @classmethod
    def of(cls, user):
        return cls(user.id, user.role, user.is_active)


def customer_dict(customer, viewer):
    if customer is None:
        return None
    full = can(viewer, "view_customer_contact")
    return {"id": customer.id, "name": customer.name,
            "email": customer.email if full else mask_email(customer.email),
            "phone": customer.phone if full else mask_phone(customer.phone),
            "loyalty_points": customer.loyalty_points,
            "store_credit": money(customer.store_credit_cents)}


def refund_dict(refund):
    return {"id": refund.id, "amount": money(refund.amount_cents), "status": refund.status,
            "method": refund.method, "tender": refund.method, "payment_id": refund.payment_id,
            "attempts": refund.attempts, "gateway_reference": refund.gateway_reference,
            "drawer": refund.drawer,
            "paid_out_by": refund.paid_out_by.name if refund.paid_out_by_id else None,
            "last_error": refund.last_error,
            "created_at": isoformat(refund.created_at),
            "succeeded_at": isoformat(refund.succeeded_at)}


def notification_status(status):
    """Refunds and notices share one delivery state machine; a delivered notice is `sent`."""
    return "sent" if status == "succeeded" else status


def notification_dict(notification):
    return {"id": notification.id, "channel": notification.channel,
            "template": notification.template, "recipient": mask_email(notification.recipient),
            "status": notification_status(notification.status), "attempts": notification.attempts,
            "last_error": notification.last_error, "created_at": isoformat(notification.created_at),
            "sent_at": isoformat(notification.sent_at)}


def cancellation_dict(cancellation):
    return {"id": cancellation.id, "kind": cancellation.kind, "reason": cancellation.reason,
            "notes": cancellation.notes, "actor_id": cancellation.actor_id,
            "source": cancellation.source, "created_at": isoformat(cancellation.created_at),
            "refund_amount": money(cancellation.refund_cents),
            "points_restored": cancellation.points_restored,
            "points_reversed": cancellation.points_reversed,
            "items": [{"order_item_id": line.order_item_id, "product_id": line.product_id,
                       "quantity": line.quantity, "stock_returned": line.stock_returned}
                      for line in cancellation.items]}


def flags_dict(order):
    flags = {"inventory_reconciliation": False, "manual_refund": False,
             "manual_notification": False}
    for c in order.cancellations:
        flags["inventory_reconciliation"] |= c.flag_inventory_reconciliation
        flags["manual_refund"] |= c.flag_manual_refund
        flags["manual_notification"] |= c.flag_manual_notification
    return flags


def order_summary(order):
    return {"id": order.id, "number": order.number, "store_id": order.store_id,
            "status": order.status, "version": order.version,
            "placed_at": isoformat(order.placed_at), "total": money(order.total_cents),
            "payment_status": order.payment_status, "billing_hold": order.billing_hold,
            "shipment_status": order.shipment_status, "customer_id": order.customer_id}


def order_dict(order, viewer):
    return {
        **order_summary(order),
        "subtotal": money(order.subtotal_cents), "tax": money(order.tax_cents),
        "discount": money(order.discount_cents), "paid": money(order.paid_cents),
        "refunded": money(order.refunded_cents), "payment_method": order.payment_method,
        "points_earned": order.points_earned, "points_redeemed": order.points_redeemed,
        "series_id": order.series_id, "cancelled_at": isoformat(order.cancelled_at),
        "customer": customer_dict(order.customer, viewer),
        "items": [item.to_dict() for item in order.items],
        "payments": [payment.to_dict() for payment in order.payments],
        "balance_due": money(order.balance_due_cents),
        "refunds": [refund_dict(r) for r in order.refunds],
        "notifications": [notification_dict(n) for n in order.notifications],
        "cancellations": [cancellation_dict(c) for c in order.cancellations],
        "flags": flags_dict(order),
    }


def approval_dict(approval, viewer):
    """The request as `viewer` may see it: the customer's contact in the requested
    cancellation is masked like everywhere else (any colleague of the store can read it)."""
    return {"id": approval.id, "order_id": approval.order_id, "status": approval.status,
            "requested_by": approval.requested_by_id, "why": approval.why,
            "justification": approval.justification,
            "requested_cancellation": redact(approval.payload,
                                             can(viewer, "view_customer_contact")),
            "created_at": isoformat(approval.created_at)}
