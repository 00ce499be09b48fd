"""Forms of the approvals panel: the approval request (the cancel dialog's fields plus a
justification) and an approver's decision."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from blueprints.orders.forms import CancelOrderForm


class ApprovalRequestForm(CancelOrderForm):
    """The seed's approval request form: the cancellation to perform, and why (required)."""

    justification = TextAreaField(
        "Justification", validators=[DataRequired("Tell the approver why this order must be "
                                                   "cancelled."), Length(max=2000)],
        render_kw={"rows": 3, "maxlength": 2000,
                   "placeholder": "Why must this order be cancelled? The approver reads this."})


class DecisionForm(FlaskForm):
    """Approve or reject; the comment is required to reject (checked by the domain)."""

    comment = TextAreaField("Comment", validators=[Optional(), Length(max=2000)])
    next = HiddenField()
