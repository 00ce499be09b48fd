"""The approval workflow (SPEC §3, seed A2): ask, route to approvers, approve, reject, expire.

A request holds the exact cancellation to perform (`payload`, a CancelRequest). Filing it is
`service.file_approval_request` (called by every entry point that meets "approval required");
after commit a worker routes it: the store managers who could cancel the order themselves and the
admins are told by e-mail, or — when no such manager is active — it is escalated to the admins.
Approving performs the stored cancellation through `service.perform` (the one writer) AS THE
APPROVER, under the approver's own policy; rejecting records the comment. The requester hears
either way. Requests nobody decides expire after the `approval_expiry_hours` setting.

E-mails go through an outbox (ApprovalNotice rows written in the same transaction, delivered by a
worker through the notification adapter with an idempotency key), like customer notifications.
"""
import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from cancellation import outbox
from cancellation.adapters import DeliveryError, notifier
from cancellation.approval_requests import CLOSED, OPEN, lock as _lock, move as _move
from cancellation.audit import SYSTEM, record
from cancellation.errors import (
    Blocked,
    ConcurrentModification,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from cancellation.locks import lock_order, refresh_items
from cancellation.policy import (
    approval_reasons,
    can,
    can_view_order,
    evaluate_cancel,
    visible_orders,
)
from cancellation.reasons import label_for
from cancellation.transactions import after_commit
from models import (
    ApprovalRequest,
    Order,
    Role,
    Setting,
    User,
    db,
    isoformat,
    money,
    user_stores,
    utcnow,
)
from models.cancellation import ApprovalNotice
from models.delivery import DeliveryStatus
from models.order import CANCELLABLE_STATUSES

log = logging.getLogger(__name__)

COMMENT_MAX = 2000

ROUTE_TASK = "cancel_desk.route_approval_request"
NOTICE_TASK = "cancel_desk.deliver_approval_notice"


# --- filing ----------------------------------------------------------------------------------

def check_justification(justification):
    """The seed's approval form: a justification is required."""
    text = (justification or "").strip()
    if not text:
        raise ValidationFailed(
            "A justification is required: tell the approver why this order must be cancelled.",
            details={"fields": [{"field": "justification", "message": "is required"}]})
    if len(text) > COMMENT_MAX or "\x00" in text:
        raise ValidationFailed(
            f"The justification must be at most {COMMENT_MAX} characters of text.",
            details={"fields": [{"field": "justification",
                                 "message": f"must be at most {COMMENT_MAX} characters"}]})
    return text


def request_approval(order_id, actor, request, justification, context):
    """Ask for approval to cancel an order (the approval request form, POST .../approval_request).

    Runs SPEC §1's checks like a cancel does; refuses when the actor may cancel directly.
    Returns (approval, created): asking again joins the actor's open request.
    """
    from cancellation.service import file_approval_request

    request.validate()
    justification = check_justification(justification)
    try:
        order = lock_order(order_id)
        decision = evaluate_cancel(actor, order, reason=request.reason,
                                   expected_version=request.expected_version)
        if not decision.needs_approval:
            raise Blocked(f"You may cancel order {order.number} yourself; no approval is "
                          "needed.", code="approval_not_required")
        existing = _open_request_of(order.id, actor.id)
        approval = file_approval_request(order, actor, request, decision.why, context,
                                         justification=justification)
        if existing is not None and not existing.justification:
            # A request filed by a plain cancel call gets the justification it lacked.
            existing.justification = justification
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return approval, existing is None


def _open_request_of(order_id, user_id):
    return db.session.scalar(select(ApprovalRequest).where(
        ApprovalRequest.order_id == order_id, ApprovalRequest.requested_by_id == user_id,
        ApprovalRequest.status.in_(OPEN)))


def on_filed(approval):
    """Inside the filing transaction: set the expiry; route the request once it is committed."""
    approval.expires_at = approval.created_at + timedelta(
        hours=float(Setting.get("approval_expiry_hours")))
    after_commit(outbox.hand_to_workers, ROUTE_TASK, approval.id)


# --- routing: who is told, or escalation -----------------------------------------------------

def store_approvers(order, exclude_id=None):
    """Active store managers of the order's store who could cancel it themselves right now."""
    managers = db.session.scalars(
        select(User).join(user_stores, user_stores.c.user_id == User.id)
        .where(user_stores.c.store_id == order.store_id,
               User.role == Role.STORE_MANAGER.value, User.active.is_(True))
        .order_by(User.id)).all()
    return [m for m in managers if m.id != exclude_id and not approval_reasons(m, order)]


def active_admins(exclude_id=None):
    return [u for u in db.session.scalars(select(User).where(
        User.role == Role.ADMIN.value, User.active.is_(True)).order_by(User.id))
        if u.id != exclude_id]


def route(approval_id):
    """Worker side, once per request: tell the approvers, or escalate to admins if the store
    has no active manager who could approve it. Safe to run twice."""
    approval = _lock(approval_id)
    if approval is None or approval.status != "pending" or approval.routed_at is not None:
        db.session.rollback()
        return "nothing_to_do"
    order = approval.order
    managers = store_approvers(order, exclude_id=approval.requested_by_id)
    if not managers:
        if not _escalate(approval, "No active store manager of this store can approve it.",
                         routed=True):
            db.session.rollback()
            return "nothing_to_do"
        db.session.commit()
        return "escalated"
    if not _move(approval, "pending", allowed=("pending",), routed_at=utcnow(),
                 only_unrouted=True):
        db.session.rollback()  # another worker routed it, or it was decided meanwhile
        return "nothing_to_do"
    for user in managers + active_admins(exclude_id=approval.requested_by_id):
        _notice(approval, user, "requested")
    db.session.commit()
    return "routed"


def _escalate(approval, because, actor=None, context=SYSTEM, routed=False):
    """pending -> escalated (compare-and-set); False when another caller moved it first."""
    now = utcnow()
    extra = {"routed_at": now} if routed else {}
    if not _move(approval, "escalated", allowed=("pending",), escalated_at=now,
                 status_detail=because, only_unrouted=routed, **extra):
        return False
    admins = active_admins(exclude_id=approval.requested_by_id)
    if not admins:
        log.warning("approval request %s escalated but no active admin exists", approval.id)
    for admin in admins:
        _notice(approval, admin, "escalated")
    record(actor, "approval.escalated", target_type="approval_request", target_id=approval.id,
           store_id=approval.order.store_id, order_id=approval.order_id,
           before={"status": "pending"},
           after={"status": "escalated", "because": because,
                  "admins_notified": [a.id for a in admins]}, context=context)
    return True


# --- deciding --------------------------------------------------------------------------------

def get_visible_request(user, approval_id):
    """The request if the user may see its order (else NotFound, like another store's order)."""
    approval = db.session.get(ApprovalRequest, approval_id)
    if approval is None or not (approval.requested_by_id == user.id
                                or can_view_order(user, approval.order)):
        raise NotFound("Approval request not found.")
    return approval


def check_may_decide(user, approval):
    if not can(user, "approve_cancellation") or not can_view_order(user, approval.order):
        raise Forbidden("You may not decide approval requests for this store.")
    if approval.requested_by_id == user.id:
        raise Forbidden("You cannot decide your own approval request; another approver must.",
                        code="self_approval")


def stale_reason(approval, order):
    """Why the stored cancellation no longer matches the order, or None."""
    if order.status not in CANCELLABLE_STATUSES:
        return (f"Order {order.number} is now {order.status.replace('_', ' ')} and can no "
                "longer be cancelled.")
    if order.version != approval.order_version:
        return (f"Order {order.number} changed after the request was filed (version "
                f"{approval.order_version} → {order.version}); file a new request if it must "
                "still be cancelled.")
    return None


def approve(approval_id, approver, comment, context):
    """Perform the stored cancellation as the approver. Returns the approval (now approved).

    Fails clearly — and leaves the order untouched — when the request is closed, lapsed, stale
    (marked `stale`), or when the approver's own policy would need approval (escalated).
    """
    from cancellation.partial import PartialCancelRequest, resolve_lines
    from cancellation.service import CancelRequest, after_commit as after_cancelled, perform

    comment = _clean_comment(comment, required=False)
    approval = get_visible_request(approver, approval_id)
    check_may_decide(approver, approval)
    try:
        order = lock_order(approval.order_id)
        approval = _lock(approval_id)
        failure = _closed(approval) or _lapsed(approval) or _stale(approval, order, approver,
                                                                   context)
        # A request with items is a partial cancellation (cancellation/partial.py).
        partial = bool(approval.payload.get("items"))
        if failure is None:
            request = (PartialCancelRequest if partial else CancelRequest).from_payload(
                approval.payload)
            request.expected_version = None  # the request's version was checked just above
            decision = evaluate_cancel(approver, order, reason=request.reason)
            if decision.needs_approval:
                failure = _beyond_authority(approval, approver, decision.why, context)
        if failure is not None:
            db.session.commit()  # what the failure recorded (stale, expired, escalated)
            raise failure
        before = {"status": approval.status}
        # Claim the decision first: of an approve and a reject (or two approves) racing, one
        # moves the request and the other gets approval_closed before anything is cancelled.
        if not _move(approval, "approved", decided_by_id=approver.id, decided_at=utcnow(),
                     comment=comment, status_detail=None):
            raise _lost_race(approval)
        if partial:
            refresh_items(order)
        done = perform(order, approver, request, context,
                       lines=resolve_lines(order, request.lines) if partial else None)
        approval.cancellation_id = done.cancellation_id
        record(approver, "approval.approved", target_type="approval_request",
               target_id=approval.id, store_id=order.store_id, order_id=order.id,
               before=before, after={"status": "approved", "comment": comment,
                                     "cancellation_id": done.cancellation_id,
                                     "requested_by": approval.requested_by_id},
               context=context)
        _notice(approval, approval.requested_by, "approved")
        _close_other_requests(order, approval, context)
        db.session.commit()
    except StaleDataError:
        db.session.rollback()
        current = db.session.get(Order, approval.order_id)
        raise ConcurrentModification(current.version if current else None) from None
    except Exception:
        db.session.rollback()
        raise
    after_cancelled(approver, order.store_id, context)
    return approval


def reject(approval_id, approver, comment, context):
    """Record the approver's no, with the comment the requester will read."""
    comment = _clean_comment(comment, required=True)
    approval = get_visible_request(approver, approval_id)
    check_may_decide(approver, approval)
    try:
        approval = _lock(approval_id)
        failure = _closed(approval) or _lapsed(approval)
        if failure is not None:
            db.session.commit()
            raise failure
        before = {"status": approval.status}
        if not _move(approval, "rejected", decided_by_id=approver.id, decided_at=utcnow(),
                     comment=comment):
            raise _lost_race(approval)
        record(approver, "approval.rejected", target_type="approval_request",
               target_id=approval.id, store_id=approval.order.store_id,
               order_id=approval.order_id, before=before,
               after={"status": "rejected", "comment": comment,
                      "requested_by": approval.requested_by_id}, context=context)
        _notice(approval, approval.requested_by, "rejected")
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return approval


def withdraw(approval_id, requester, comment, context):
    """The requester takes their open request back (the customer changed their mind). The
    approvers who were asked are told, so nobody decides it any more."""
    comment = _clean_comment(comment, required=False)
    approval = get_visible_request(requester, approval_id)
    if approval.requested_by_id != requester.id:
        raise Forbidden("Only the person who asked may withdraw an approval request.",
                        code="not_requester")
    try:
        approval = _lock(approval_id)
        failure = _closed(approval) or _lapsed(approval)
        if failure is not None:
            db.session.commit()  # what the failure recorded (expired)
            raise failure
        before = {"status": approval.status}
        now = utcnow()  # the requester's own doing: no "new outcome" badge for it
        if not _move(approval, "withdrawn", decided_at=now, requester_seen_at=now,
                     comment=comment, status_detail=f"Withdrawn by {requester.name}."):
            raise _lost_race(approval)
        record(requester, "approval.withdrawn", target_type="approval_request",
               target_id=approval.id, store_id=approval.order.store_id,
               order_id=approval.order_id, before=before,
               after={"status": "withdrawn", "comment": comment}, context=context)
        told = {n.user_id for n in approval_notices(approval.id, ("requested", "escalated"))}
        for user in db.session.scalars(select(User).where(User.id.in_(told))):
            _notice(approval, user, "withdrawn")
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return approval


def approval_notices(approval_id, events):
    return db.session.scalars(select(ApprovalNotice).where(
        ApprovalNotice.approval_request_id == approval_id,
        ApprovalNotice.event.in_(events))).all()


def _clean_comment(comment, *, required):
    text = (comment or "").strip()
    if required and not text:
        raise ValidationFailed(
            "A comment is required when rejecting: tell the requester why.",
            details={"fields": [{"field": "comment", "message": "is required"}]})
    if len(text) > COMMENT_MAX or "\x00" in text:
        raise ValidationFailed(
            f"The comment must be at most {COMMENT_MAX} characters of text.",
            details={"fields": [{"field": "comment",
                                 "message": f"must be at most {COMMENT_MAX} characters"}]})
    return text or None


def _lost_race(approval):
    """The 409 for the caller whose compare-and-set found the request already moved."""
    return _closed(approval) or Blocked(
        f"Approval request #{approval.id} was changed by someone else at the same moment; "
        "nothing was changed.", code="approval_closed", details={"status": approval.status})


def _closed(approval):
    if approval.status in OPEN:
        return None
    who = f" by {approval.decided_by.name}" if approval.decided_by else ""
    return Blocked(f"Approval request #{approval.id} is already {approval.status}{who}; "
                   "nothing was changed.", code="approval_closed",
                   details={"status": approval.status})


def _lapsed(approval):
    if approval.expires_at is None or approval.expires_at > utcnow():
        return None
    if not _expire(approval):
        return _lost_race(approval)
    return Blocked(f"Approval request #{approval.id} expired on "
                   f"{approval.expires_at:%Y-%m-%d %H:%M} UTC without a decision; the requester "
                   "must file a new one.", code="approval_expired",
                   details={"status": "expired"})


def _stale(approval, order, actor, context):
    why = stale_reason(approval, order)
    if why is None:
        return None
    if not _mark_stale(approval, why, actor, context):
        return _lost_race(approval)
    return Blocked(f"Approval request #{approval.id} is stale: {why} Nothing was cancelled.",
                   code="approval_stale",
                   details={"status": "stale", "current_version": order.version,
                            "requested_version": approval.order_version})


def _mark_stale(approval, why, actor, context):
    before = approval.status
    if not _move(approval, "stale", status_detail=why, decided_at=utcnow()):
        return False
    record(actor, "approval.stale", target_type="approval_request", target_id=approval.id,
           store_id=approval.order.store_id, order_id=approval.order_id,
           before={"status": before}, after={"status": "stale", "why": why}, context=context)
    _notice(approval, approval.requested_by, "stale")
    return True


def _beyond_authority(approval, approver, why, context):
    """The approver's own policy needs approval (a manager and an order over 30 days old)."""
    escalated = approval.status == "pending" and _escalate(
        approval, f"{approver.name} could not approve it: {' '.join(why)}", actor=approver,
        context=context)
    return Forbidden(
        "You cannot approve this cancellation: " + " ".join(why) + " "
        + ("The request was escalated to the admins." if escalated
           else "It waits for an admin."), code="approver_lacks_authority",
        details={"why": why})


def _close_other_requests(order, approved, context):
    """Other open requests for the same order have nothing left to do once it is cancelled."""
    others = db.session.scalars(select(ApprovalRequest).where(
        ApprovalRequest.order_id == order.id, ApprovalRequest.id != approved.id,
        ApprovalRequest.status.in_(OPEN))).all()
    what = "was cancelled" if order.status == "cancelled" else "changed (items cancelled)"
    for other in others:
        _mark_stale(other, f"Order {order.number} {what} when request #{approved.id} "
                    "was approved.", None, context)


# --- expiry and the sweep (Celery beat) ------------------------------------------------------

def _expire(approval):
    before = approval.status
    if not _move(approval, "expired", decided_at=utcnow(),
                 status_detail="Nobody decided it before it expired."):
        return False
    record(None, "approval.expired", target_type="approval_request", target_id=approval.id,
           store_id=approval.order.store_id, order_id=approval.order_id,
           before={"status": before},
           after={"status": "expired", "expires_at": isoformat(approval.expires_at)},
           context=SYSTEM)
    _notice(approval, approval.requested_by, "expired")
    return True


def expire_overdue(limit=500):
    """Mark open requests past their expiry `expired` (audited, requester told)."""
    ids = db.session.scalars(select(ApprovalRequest.id).where(
        ApprovalRequest.status.in_(OPEN), ApprovalRequest.expires_at <= utcnow())
        .order_by(ApprovalRequest.id).limit(limit)).all()
    db.session.rollback()
    expired = 0
    for approval_id in ids:
        approval = _lock(approval_id)
        if (approval is not None and approval.status in OPEN
                and approval.expires_at <= utcnow() and _expire(approval)):
            expired += 1
        db.session.commit()
    return expired


def sweep():
    """Re-dispatch what a lost task left behind: unrouted requests, undelivered notices."""
    now = utcnow()
    stale = now - timedelta(seconds=current_app.config["OUTBOX_STALE_SECONDS"])
    unrouted = db.session.scalars(select(ApprovalRequest.id).where(
        ApprovalRequest.status == "pending", ApprovalRequest.routed_at.is_(None),
        ApprovalRequest.created_at < stale).limit(500)).all()
    max_attempts = current_app.config["DELIVERY_MAX_ATTEMPTS"]
    lost = db.session.scalars(select(ApprovalNotice.id).where(or_(
        (ApprovalNotice.status == DeliveryStatus.PENDING.value)
        & or_(ApprovalNotice.dispatched_at < stale,
              ApprovalNotice.dispatched_at.is_(None) & (ApprovalNotice.created_at < stale)),
        (ApprovalNotice.status == DeliveryStatus.FAILED.value)
        & (ApprovalNotice.next_attempt_at <= now) & (ApprovalNotice.attempts < max_attempts),
        (ApprovalNotice.status == DeliveryStatus.PROCESSING.value)
        & (ApprovalNotice.dispatched_at < stale))).limit(1000)).all()
    db.session.rollback()
    for approval_id in unrouted:
        outbox.hand_to_workers(ROUTE_TASK, approval_id)
    for notice_id in lost:
        outbox.hand_to_workers(NOTICE_TASK, notice_id)
    return {"unrouted": len(unrouted), "notices": len(lost)}


# --- notices: the e-mail outbox --------------------------------------------------------------

def _notice(approval, user, kind):
    """Queue one e-mail about `approval` to `user` (once per request, event and person)."""
    if user is None or not user.email:
        return None
    key = f"approval-{approval.id}-{kind}-user-{user.id}"
    if db.session.scalar(select(ApprovalNotice.id).where(ApprovalNotice.idempotency_key == key)):
        return None
    notice = ApprovalNotice(approval_request_id=approval.id, user_id=user.id, event=kind,
                            recipient=user.email, idempotency_key=key)
    db.session.add(notice)
    db.session.flush()
    after_commit(outbox.hand_to_workers, NOTICE_TASK, notice.id)
    return notice


def notice_message(notice):
    """Subject and body of an approval e-mail: order, amounts, who and why — no customer data."""
    approval = notice.approval_request
    order = approval.order
    requester = approval.requested_by
    reason = label_for(approval.payload.get("reason"))
    summary = [f"Order:   {order.number} ({order.store.name})",
               f"Total:   ${money(order.total_cents)}",
               f"Reason:  {reason}"]
    lines = approval.payload.get("items") or []  # a partial cancellation: which items
    items = {item.id: item for item in order.items} if lines else {}
    for line in lines:
        item = items.get(line["item_id"])
        summary.append(f"Cancel:  {line['quantity']} x "
                       f"{item.product.name if item else 'item #' + str(line['item_id'])}")
    link = f"{current_app.config.get('PUBLIC_BASE_URL', '').rstrip('/')}/approvals"
    if notice.event in ("requested", "escalated"):
        what = f"items of order {order.number}" if lines else f"order {order.number}"
        subject = (f"{'Escalated: ' if notice.event == 'escalated' else ''}Approval needed to "
                   f"cancel {what}")
        body = [f"{requester.name} asks to cancel {what} and needs your approval.",
                ""] + summary + ["", "Why approval is needed:"] + [f"  - {w}" for w in approval.why]
        if notice.event == "escalated" and approval.status_detail:
            body += ["", f"Escalated to admins: {approval.status_detail}"]
        body += ["", "Justification:", f"  {approval.justification or '(none given)'}"]
        if approval.payload.get("notes"):
            body += ["", "Notes:", f"  {approval.payload['notes']}"]
        body += ["", f"Approve or reject it in Cancel Desk: {link}"]
        if approval.expires_at:
            body += [f"It expires on {approval.expires_at:%Y-%m-%d %H:%M} UTC if nobody "
                     "decides."]
        return subject, "\n".join(body)
    decider = approval.decided_by.name if approval.decided_by else "Cancel Desk"
    outcome = {
        "approved": (f"Approved: order {order.number} is cancelled",
                     f"{decider} approved your request #{approval.id}; order {order.number} "
                     "has been cancelled.") if not lines else (
            f"Approved: items of order {order.number} are cancelled",
            f"{decider} approved your request #{approval.id}; the items below were cancelled "
            f"from order {order.number}."),
        "rejected": (f"Rejected: order {order.number} stays open",
                     f"{decider} rejected your request #{approval.id} to cancel order "
                     f"{order.number}. The order was not changed."),
        "expired": (f"Expired: your request to cancel order {order.number}",
                    f"Nobody decided your request #{approval.id} in time and it expired. File a "
                    "new request if the order must still be cancelled."),
        "stale": (f"Outdated: your request to cancel order {order.number}",
                  f"Your request #{approval.id} could not be carried out: "
                  f"{approval.status_detail}"),
        "withdrawn": (f"Withdrawn: no decision needed on order {order.number}",
                      f"{requester.name} withdrew request #{approval.id} to cancel order "
                      f"{order.number}; there is nothing left to decide."),
    }
    subject, opening = outcome.get(notice.event, (f"Update on order {order.number}",
                                                  f"Request #{approval.id} is {approval.status}."))
    body = [opening, ""] + summary
    author = requester.name if notice.event == "withdrawn" else decider
    if approval.comment:
        body += ["", f"Comment from {author}:", f"  {approval.comment}"]
    body += ["", (f"The approvals queue: {link}" if notice.event == "withdrawn"
                  else f"Your requests: {link}")]
    return subject, "\n".join(body)


def deliver_notice(notice_id):
    """Worker side: send one approval e-mail; failures retry with back-off. The outcome is
    written only while this worker's claim holds (compare-and-set on `processing` and its
    attempt): a stale claimer coming back late leaves the takeover's outcome."""
    claim = outbox._take(ApprovalNotice, notice_id)
    if claim is None:
        return "nothing_to_do"
    notice, attempt = claim
    subject, body = notice_message(notice)
    delay = None
    try:
        notifier().send(idempotency_key=notice.idempotency_key, recipient=notice.recipient,
                        subject=subject, body=body)
        values = {"status": DeliveryStatus.SUCCEEDED.value, "last_error": None}
    except DeliveryError as exc:
        values = {"status": DeliveryStatus.FAILED.value, "last_error": str(exc)[:500]}
        if attempt < current_app.config["DELIVERY_MAX_ATTEMPTS"]:
            delay = outbox.backoff_seconds(attempt)
            values["next_attempt_at"] = utcnow() + timedelta(seconds=delay)
    settled = db.session.execute(
        update(ApprovalNotice).where(ApprovalNotice.id == notice.id,
                                     ApprovalNotice.attempts == attempt,
                                     ApprovalNotice.status == DeliveryStatus.PROCESSING.value)
        .values(**values).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if not settled:
        log.warning("approval notice %s was taken over while this worker sent it", notice.id)
        return "nothing_to_do"
    if values["status"] == DeliveryStatus.FAILED.value:
        if delay is not None:
            outbox.hand_to_workers(NOTICE_TASK, notice.id, countdown=delay)
        return "failed"
    return "succeeded"


# --- what the panel lists --------------------------------------------------------------------

def decidable(user):
    """Open requests this user may decide: their stores' (all for admins), not their own."""
    query = (select(ApprovalRequest).join(Order, Order.id == ApprovalRequest.order_id)
             .where(ApprovalRequest.status.in_(OPEN),
                    ApprovalRequest.requested_by_id != user.id))
    if not can(user, "approve_cancellation"):
        return query.where(False)
    query = visible_orders(query, user)
    return query


def queue_of(user, limit=200):
    """The approver's queue, oldest first."""
    return db.session.scalars(decidable(user).options(
        joinedload(ApprovalRequest.order).joinedload(Order.store),
        joinedload(ApprovalRequest.requested_by))
        .order_by(ApprovalRequest.created_at, ApprovalRequest.id).limit(limit)).all()


def requests_of(user, limit=100):
    """The requester's own requests, newest first."""
    return db.session.scalars(select(ApprovalRequest).where(
        ApprovalRequest.requested_by_id == user.id).options(
        joinedload(ApprovalRequest.order).joinedload(Order.store),
        joinedload(ApprovalRequest.decided_by))
        .order_by(ApprovalRequest.created_at.desc(), ApprovalRequest.id.desc())
        .limit(limit)).all()


def badge_counts(user):
    """The navbar badge: requests waiting for this user, and own outcomes not yet seen."""
    waiting = db.session.scalar(select(func.count()).select_from(decidable(user).subquery()))
    unseen = db.session.scalar(select(func.count()).select_from(ApprovalRequest).where(
        ApprovalRequest.requested_by_id == user.id, ApprovalRequest.status.in_(CLOSED),
        ApprovalRequest.requester_seen_at.is_(None)))
    return {"waiting": waiting or 0, "unseen": unseen or 0}


def mark_outcomes_seen(user):
    """The requester opened "My requests": their closed requests' outcomes are seen."""
    changed = db.session.execute(
        update(ApprovalRequest).where(ApprovalRequest.requested_by_id == user.id,
                                      ApprovalRequest.status.in_(CLOSED),
                                      ApprovalRequest.requester_seen_at.is_(None))
        .values(requester_seen_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    db.session.commit()
    return changed
