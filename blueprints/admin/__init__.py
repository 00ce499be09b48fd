"""Flask-Admin at /admin, for the admin role only: users, API tokens, sign-ins, stores, products,
stock, settings.

Every change made here is written to the audit trail like any other change.
"""
from datetime import datetime

from flask import abort, current_app, flash, g, redirect, request, url_for
from flask_admin import Admin, AdminIndexView, expose
from flask_admin.actions import action
from flask_admin.contrib.sqla import ModelView
from flask_admin.form import BaseForm
from flask_admin.menu import MenuLink
from flask_admin.theme import Bootstrap4Theme
from flask_login import current_user
from sqlalchemy import func, select, update
from wtforms import PasswordField, SelectChoice, SelectField
from wtforms.validators import Length, Optional, ValidationError

from blueprints.auth import sign_in
from cancellation.audit import AuditContext, record
from models import (
    ApiToken,
    LoginSession,
    Product,
    Role,
    Setting,
    StockLevel,
    Store,
    User,
    db,
    utcnow,
)
from models.setting import DEFAULTS
from models.user import normalise_email

MIN_PASSWORD_LENGTH = 10


def is_admin():
    return current_user.is_authenticated and current_user.is_active \
        and current_user.role == Role.ADMIN.value


class NewPasswordField(PasswordField):
    """Write-only: the view hashes it with set_password; the plain text never lands on the model."""

    def populate_obj(self, obj, name):
        pass


class AdminOnly:
    """Access rule shared by every admin view, the index included."""

    def is_accessible(self):
        return is_admin()

    def inaccessible_callback(self, name, **kwargs):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(403)


class CancelDeskAdminIndex(AdminOnly, AdminIndexView):
    @expose("/")
    def index(self):
        counts = {
            "users": db.session.scalar(select(func.count()).select_from(User)),
            "active_users": db.session.scalar(select(func.count()).select_from(User)
                                              .where(User.active.is_(True))),
            "stores": db.session.scalar(select(func.count()).select_from(Store)),
            "products": db.session.scalar(select(func.count()).select_from(Product)),
        }
        settings = [(key, Setting.get(key), key in _stored_setting_keys())
                    for key in DEFAULTS]
        return self.render("admin/index.html", counts=counts, settings=settings)


def _stored_setting_keys():
    return set(db.session.scalars(select(Setting.key)).all())


def _audit_context():
    return AuditContext(request_id=g.get("request_id"), ip=request.remote_addr, source="admin")


class AuditedModelView(AdminOnly, ModelView):
    """A model view whose every create / update / delete is audited.

    CSRF: the app's CSRFProtect checks every POST here as everywhere else; Flask-Admin's
    templates put Flask-WTF's token (the `csrf_token()` global) into each of its forms — edit,
    create, delete and bulk actions. SecureForm is deliberately not used: its own token would
    sit next to Flask-WTF's under the same field name and fail validation on every save.
    """

    form_base_class = BaseForm
    page_size = 50
    can_view_details = False
    audit_fields = ()

    def snapshot(self, model):
        return {name: _plain(getattr(model, name, None)) for name in self.audit_fields}

    def update_model(self, form, model):
        g.admin_audit_before = self.snapshot(model)
        return super().update_model(form, model)

    def on_model_change(self, form, model, is_created):
        db.session.flush()
        action = "created" if is_created else "updated"
        after = self.snapshot(model)
        after.update(self.extra_audit(form, model, is_created))
        record(current_user, f"admin.{self.model.__tablename__}.{action}",
               target_type=self.model.__tablename__, target_id=_pk(model),
               before=None if is_created else g.get("admin_audit_before"), after=after,
               context=_audit_context())

    def on_model_delete(self, model):
        record(current_user, f"admin.{self.model.__tablename__}.deleted",
               target_type=self.model.__tablename__, target_id=_pk(model),
               before=self.snapshot(model), context=_audit_context())

    def extra_audit(self, form, model, is_created):
        return {}


def _pk(model):
    return getattr(model, "id", None) or getattr(model, "key", None)


def _plain(value):
    if isinstance(value, (list, tuple, set)):
        return sorted(str(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, dict)):
        return value
    return str(value)


class UserView(AuditedModelView):
    """Staff accounts. No deletion (their name is on cancellations and audit events): deactivate.

    The password hash is never shown or edited; "New password" sets it.
    """

    can_delete = False
    column_list = ("email", "name", "role", "stores", "active", "created_at")
    column_labels = {"created_at": "Created"}
    column_searchable_list = ("email", "name")
    column_filters = ("role", "active")
    column_default_sort = ("email", False)
    column_formatters = {"role": lambda v, c, m, p: Role(m.role).label if m.role in
                         {r.value for r in Role} else m.role}
    form_columns = ("email", "name", "role", "stores", "active", "new_password")
    form_overrides = {"role": SelectField}
    form_args = {"role": {"choices": [SelectChoice(r.value, r.label) for r in Role]}}
    form_extra_fields = {
        "new_password": NewPasswordField(
            "New password", validators=[Optional(), Length(min=MIN_PASSWORD_LENGTH, max=200)],
            description=f"At least {MIN_PASSWORD_LENGTH} characters. Leave empty to keep the "
                        "current password."),
    }
    audit_fields = ("email", "name", "role", "active", "stores")

    def on_model_change(self, form, model, is_created):
        model.email = normalise_email(model.email)
        if not model.email or "@" not in model.email:
            raise ValidationError("Enter a valid e-mail address.")
        clash = User.by_email(model.email)
        if clash is not None and clash is not model:
            raise ValidationError(f"Another account already uses {model.email}.")
        if is_created and not form.new_password.data:
            raise ValidationError("Set a password for the new account.")
        if model is current_user._get_current_object() and (
                not model.active or model.role != Role.ADMIN.value):
            raise ValidationError("You cannot deactivate your own account or remove your own "
                                  "admin role; ask another admin.")
        if form.new_password.data:
            model.set_password(form.new_password.data)
        super().on_model_change(form, model, is_created)

    def extra_audit(self, form, model, is_created):
        return {"password_changed": True} if form.new_password.data else {}

    def after_model_change(self, form, model, is_created):
        """A password change ends every sign-in of the account (auth_generation), this one
        too when admins change their own: sign them in again here, as GitHub does, so that
        only their other browsers and tokens are signed out."""
        if is_created or model.id != current_user.id or not form.new_password.data:
            return
        sign_in(model, remember=bool(request.cookies.get(
            current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token"))))


class CredentialView(AdminOnly, ModelView):
    """Read-only lists of credentials with one action that ends them (audited): API tokens the
    way GitHub or Stripe list keys, and panel sign-ins. Nothing is created or edited here."""

    can_create = can_edit = can_delete = False
    can_view_details = False
    page_size = 50
    column_default_sort = ("created_at", True)
    column_formatters = {"user": lambda v, c, m, p: m.user.email if m.user else "—"}
    column_type_formatters = {
        datetime: lambda view, value, name=None: f"{value:%Y-%m-%d %H:%M} UTC",
        type(None): lambda view, value, name=None: "—",
        bool: lambda view, value, name=None: "yes" if value else "no",
    }
    end_action = None  # "auth.token_revoked" or "auth.session_ended"

    def _end(self, ids, end_one):
        ids = [int(i) for i in ids if str(i).isdigit() and int(i) < 2**31][:1000]
        ended = 0
        for row in db.session.scalars(select(self.model).where(self.model.id.in_(ids))):
            if end_one(row):
                record(current_user, self.end_action, target_type=self.model.__tablename__,
                       target_id=row.id, after={"user": row.user.email if row.user else None,
                                                "by": "admin"}, context=_audit_context())
                ended += 1
        db.session.commit()
        return ended


class ApiTokenView(CredentialView):
    column_list = ("user", "name", "prefix", "created_at", "last_used_at", "expires_at",
                   "state")
    column_labels = {"prefix": "Starts with", "created_at": "Created",
                     "last_used_at": "Last used", "expires_at": "Expires"}
    column_searchable_list = ("name", "prefix")
    column_filters = ("revoked", "expires_at")
    end_action = "auth.token_revoked"

    @action("revoke", "Revoke", "Revoke the selected tokens? Clients using them get 401 at "
            "once.")
    def action_revoke(self, ids):
        ended = self._end(ids, lambda row: row.revoke())
        flash(f"{ended} token{'s' if ended != 1 else ''} revoked.", "success")


class LoginSessionView(CredentialView):
    column_list = ("user", "state", "created_at", "expires_at", "ended_at", "remember", "ip",
                   "user_agent")
    column_formatters = dict(
        CredentialView.column_formatters,
        state=lambda v, c, m, p: m.state,
        user_agent=lambda v, c, m, p: (m.user_agent or "—")[:60])
    column_labels = {"created_at": "Signed in", "expires_at": "Expires", "ended_at": "Ended",
                     "remember": "Kept signed in", "ip": "Address", "user_agent": "Browser"}
    column_filters = ("ended_at", "remember")
    end_action = "auth.session_ended"

    @action("end", "Sign out", "Sign the selected sessions out? Their browsers must sign in "
            "again.")
    def action_end(self, ids):
        now = utcnow()

        def end(row):
            return db.session.execute(
                update(LoginSession).where(LoginSession.id == row.id,
                                           LoginSession.ended_at.is_(None))
                .values(ended_at=now)).rowcount == 1

        ended = self._end(ids, end)
        flash(f"{ended} session{'s' if ended != 1 else ''} signed out.", "success")


class StoreView(AuditedModelView):
    can_delete = False  # orders, stock and users refer to stores
    column_list = ("id", "name", "licence_number", "timezone")
    column_searchable_list = ("name", "licence_number")
    form_columns = ("name", "licence_number", "timezone")
    audit_fields = ("name", "licence_number", "timezone")


class ProductView(AuditedModelView):
    can_delete = False  # order lines refer to products
    column_list = ("sku", "name", "price_cents")
    column_labels = {"price_cents": "Price (cents)", "sku": "SKU"}
    column_searchable_list = ("sku", "name")
    column_default_sort = ("sku", False)
    form_columns = ("sku", "name", "price_cents")
    audit_fields = ("sku", "name", "price_cents")


class StockLevelView(AuditedModelView):
    column_list = ("store", "product", "on_hand", "reserved")
    column_labels = {"on_hand": "On hand"}
    column_filters = ("store.name", "product.sku")
    column_sortable_list = ("on_hand", "reserved", ("store", "store.name"),
                            ("product", "product.sku"))
    form_columns = ("store", "product", "on_hand", "reserved")
    audit_fields = ("store_id", "product_id", "on_hand", "reserved")


class SettingView(AuditedModelView):
    """Run-time settings; the key is one of the known ones, the value is JSON."""

    column_list = ("key", "value")
    form_columns = ("key", "value")
    form_overrides = {"key": SelectField}
    form_args = {"key": {"choices": [SelectChoice(k) for k in DEFAULTS]}}
    column_descriptions = {"value": "JSON: a number, true/false, or a quoted string. A key "
                                    "without a row uses its default."}
    audit_fields = ("key", "value")

    def on_model_change(self, form, model, is_created):
        if model.key == "maintenance_mode":
            # One way to switch it: the Maintenance page audits it and releases the queue.
            raise ValidationError("Switch maintenance mode on the Maintenance page.")
        default = DEFAULTS.get(model.key)
        if isinstance(default, bool) and not isinstance(model.value, bool):
            raise ValidationError(f"{model.key} must be true or false.")
        if isinstance(default, int) and not isinstance(default, bool) and (
                isinstance(model.value, bool) or not isinstance(model.value, int)
                or model.value < 0):
            raise ValidationError(f"{model.key} must be a whole number ≥ 0.")
        super().on_model_change(form, model, is_created)


def init_admin(app):
    """Build this app's Admin (never at module level: two apps must not share views)."""
    admin = Admin(
        app, name="Cancel Desk admin", url="/admin",
        theme=Bootstrap4Theme(swatch=app.config.get("FLASK_ADMIN_SWATCH", "default"),
                              fluid=True),
        index_view=CancelDeskAdminIndex(name="Overview", url="/admin"))
    admin.add_view(UserView(User, db, name="Users", endpoint="admin_users",
                            url="/admin/users"))
    admin.add_view(ApiTokenView(ApiToken, db, name="API tokens", endpoint="admin_tokens",
                                url="/admin/tokens"))
    admin.add_view(LoginSessionView(LoginSession, db, name="Sign-ins",
                                    endpoint="admin_sessions", url="/admin/sessions"))
    admin.add_view(StoreView(Store, db, name="Stores", endpoint="admin_stores",
                             url="/admin/stores"))
    admin.add_view(ProductView(Product, db, name="Products", endpoint="admin_products",
                               url="/admin/products"))
    admin.add_view(StockLevelView(StockLevel, db, name="Stock", endpoint="admin_stock",
                                  url="/admin/stock"))
    admin.add_view(SettingView(Setting, db, name="Settings", endpoint="admin_settings",
                               url="/admin/settings"))
    from blueprints.admin.maintenance import init_maintenance_view
    init_maintenance_view(admin, AdminOnly)
    admin.add_link(MenuLink(name="Back to Cancel Desk", endpoint="orders.index"))

    app.extensions["cancel_desk_admin"] = admin
    return admin
