"""Sessions for the panel (Flask-Login), bearer tokens for the API, identities and error pages."""
from urllib.parse import urlsplit

from flask import (
    Blueprint, flash, g, jsonify, redirect, render_template, request, session, url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_principal import ActionNeed, AnonymousIdentity, Identity, Principal, identity_loaded
from werkzeug.exceptions import HTTPException

from cancellation import CancelDeskError
from cancellation.policy import capabilities_of
from models import ApiToken, User, db

from blueprints.auth.forms import LoginForm, LogoutForm
from blueprints.auth.permissions import is_api_request

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
principal = Principal(use_sessions=False)


class PanelOnlySessions(SecureCookieSessionInterface):
    """The API authenticates by bearer token only: it neither reads nor sets the session cookie,
    which is also why exempting it from CSRF is safe."""

    def open_session(self, app, request):
        if request.path.startswith("/api/"):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if request.path.startswith("/api/"):
            return None
        return super().save_session(app, session, response)


def init_auth(app):
    app.session_interface = PanelOnlySessions()
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"
    principal.init_app(app)
    _register_error_handlers(app)

    @app.context_processor
    def _auth_context():
        from blueprints.auth.permissions import PERMISSIONS
        # g.identity is missing when a request is refused before Principal loads it (a CSRF
        # failure): the error page then shows no capability-gated links instead of failing.
        return {"can": lambda capability: current_user.is_authenticated
                and g.get("identity") is not None and PERMISSIONS[capability].can(),
                "logout_form": LogoutForm()}


@login_manager.user_loader
def _load_user(user_id):
    try:
        user = db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None
    return user if user is not None and user.is_active else None


@login_manager.request_loader
def _load_user_from_token(req):
    if not req.path.startswith("/api/"):
        return None
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return ApiToken.find_user(token.strip())


@principal.identity_loader
def _identity_from_login():
    if current_user.is_authenticated:
        return Identity(current_user.id, "login")
    return AnonymousIdentity()


@identity_loaded.connect
def _add_capabilities(sender, identity):
    if current_user.is_authenticated and identity.id == current_user.id:
        for capability in capabilities_of(current_user):
            identity.provides.add(ActionNeed(capability))


def api_error(http_status, code, message, /, **extra):
    response = jsonify({"error": {"code": code, "message": message, **extra}})
    response.status_code = http_status
    return response


MESSAGES = {
    400: ("validation_error", "The request is malformed."),
    401: ("unauthorized", "Authentication required: send 'Authorization: Bearer <token>'."),
    403: ("forbidden", "You do not have permission to do this."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("payload_too_large", "The request body is too large."),
    415: ("unsupported_media_type", "Send the body as application/json."),
    429: ("rate_limited", "Too many requests: wait for the Retry-After seconds, then retry "
                          "(with the same idempotency key on a POST)."),
}


def _register_error_handlers(app):
    @app.errorhandler(CancelDeskError)
    def _domain_error(exc):
        if is_api_request():
            return api_error(exc.status, exc.code, exc.message, **exc.details)
        return render_template("errors/error.html", status=exc.status, title=exc.code,
                               message=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc):
        if is_api_request():
            code, message = MESSAGES.get(exc.code, ("error", exc.description))
            if exc.code == 400 and exc.description and "CSRF" not in exc.description:
                message = exc.description
            return api_error(exc.code, code, message)
        if exc.code == 401:
            return login_manager.unauthorized()
        return render_template("errors/error.html", status=exc.code, title=exc.name,
                               message=exc.description), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc):
        app.logger.exception("unhandled error (request %s)", g.get("request_id"))
        db.session.rollback()
        if is_api_request():
            return api_error(500, "internal_error", "Something went wrong on our side; nothing "
                             "was changed. Quote request id " + g.get("request_id", "") + ".")
        return render_template("errors/error.html", status=500, title="Something went wrong",
                               message="Nothing was changed. Please try again; if it keeps "
                               "happening, quote request id " + g.get("request_id", "") + "."), 500


def safe_next(target):
    """Only same-site relative paths; anything else (//evil, https://evil) goes to the dashboard."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("orders.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("orders.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        user = User.by_email(form.email.data)
        if user is None or not user.is_active or not user.check_password(form.password.data):
            flash("That e-mail and password do not match an active account.", "danger")
            return render_template("auth/login.html", form=form), 401
        session.clear()
        login_user(user, remember=form.remember.data)
        flash(f"Welcome back, {user.name}.", "success")
        return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if LogoutForm().validate_on_submit():
        logout_user()
        session.clear()
        flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
