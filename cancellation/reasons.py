"""Cancellation reason categories (the CMS document's table plus the runbook's code)."""
import enum


class CancellationReason(str, enum.Enum):
    CUSTOMER_REQUESTED = "customer_requested"
    INVENTORY_ISSUES = "inventory_issues"
    PAYMENT_PROBLEMS = "payment_problems"
    REGULATORY_COMPLIANCE = "regulatory_compliance"
    OPERATIONAL_ISSUES = "operational_issues"
    DUPLICATE_ORDER = "duplicate_order"
    OPERATIONAL_REQUEST = "operational_request"

    @property
    def label(self):
        return LABELS[self]

    @property
    def examples(self):
        return EXAMPLES[self]


LABELS = {
    CancellationReason.CUSTOMER_REQUESTED: "Customer requested",
    CancellationReason.INVENTORY_ISSUES: "Inventory issues",
    CancellationReason.PAYMENT_PROBLEMS: "Payment problems",
    CancellationReason.REGULATORY_COMPLIANCE: "Regulatory compliance",
    CancellationReason.OPERATIONAL_ISSUES: "Operational issues",
    CancellationReason.DUPLICATE_ORDER: "Duplicate order",
    CancellationReason.OPERATIONAL_REQUEST: "Operational request (runbook)",
}

EXAMPLES = {
    CancellationReason.CUSTOMER_REQUESTED: "Changed mind, found better price, no longer needed",
    CancellationReason.INVENTORY_ISSUES: "Out of stock, inventory discrepancy, quality issues",
    CancellationReason.PAYMENT_PROBLEMS: "Payment declined, invalid method, fraud suspected",
    CancellationReason.REGULATORY_COMPLIANCE: "Purchase limit exceeded, restricted product, "
                                              "age verification failed",
    CancellationReason.OPERATIONAL_ISSUES: "Staff shortage, system issues, delivery unavailable",
    CancellationReason.DUPLICATE_ORDER: "Customer submitted twice, system error created duplicate",
    CancellationReason.OPERATIONAL_REQUEST: "Cancelled by an operator following the runbook",
}

REASON_CODES = [reason.value for reason in CancellationReason]

REQUEST_CHANNELS = ("phone", "email", "in_store", "chat")


def label_for(code):
    try:
        return CancellationReason(code).label
    except ValueError:
        return code
