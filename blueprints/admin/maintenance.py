"""The admin's maintenance switch (/admin/maintenance): see and turn maintenance mode on or off.

Admin only like every /admin view; the form is Flask-WTF (CSRF) with a required confirmation;
the switch itself is `cancellation.maintenance.switch`, audited there.
"""
from flask import flash, g, redirect, request, url_for
from flask_admin import BaseView, expose
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField
from wtforms.validators import AnyOf, DataRequired

from cancellation import maintenance
from cancellation.audit import AuditContext
from models import AuditEvent, CancelJob, Order, db


class MaintenanceForm(FlaskForm):
    turn = HiddenField(validators=[AnyOf(["on", "off"])])
    confirm = BooleanField("I confirm", validators=[DataRequired(
        "Tick the confirmation to switch maintenance mode.")])


class MaintenanceView(BaseView):
    """Admin only (the shared AdminOnly rule is mixed in by init_maintenance_view)."""

    @expose("/", methods=["GET"])
    def index(self):
        on = maintenance.is_on(fresh=True)
        return self._render(MaintenanceForm(formdata=None, turn="off" if on else "on"), on)

    @expose("/", methods=["POST"])
    def update(self):
        form = MaintenanceForm()
        if not form.validate_on_submit():
            return self._render(form, maintenance.is_on(fresh=True)), 400
        on = form.turn.data == "on"
        context = AuditContext(request_id=g.get("request_id"), ip=request.remote_addr,
                               source="admin")
        changed = maintenance.switch(current_user, on, context)
        if not changed:
            flash(f"Maintenance mode was already {'on' if on else 'off'}.", "info")
        elif on:
            flash("Maintenance mode is on: cancellations are now queued, approvals and "
                  "reinstatements wait.", "warning")
        else:
            flash(f"Maintenance mode is off: the {maintenance.queued_count()} queued "
                  "cancellation(s) are being processed by the workers.", "success")
        return redirect(url_for(".index"))

    def _render(self, form, on):
        queued = db.session.execute(
            select(CancelJob, Order.number).join(Order, Order.id == CancelJob.order_id)
            .where(CancelJob.status == maintenance.QUEUED)
            .order_by(CancelJob.created_at, CancelJob.id).limit(50)).all()
        history = db.session.scalars(
            select(AuditEvent).where(AuditEvent.action == "settings.maintenance_mode")
            .order_by(AuditEvent.seq.desc()).limit(10)).all()
        return self.render("admin/maintenance.html", form=form, on=on, queued=queued,
                           queued_total=maintenance.queued_count(), history=history)


def init_maintenance_view(admin, access_rule):
    """Add the view to this app's Admin, with the access rule every admin view shares."""
    view_class = type("AdminMaintenanceView", (access_rule, MaintenanceView), {})
    admin.add_view(view_class(name="Maintenance", endpoint="admin_maintenance",
                              url="/admin/maintenance"))
