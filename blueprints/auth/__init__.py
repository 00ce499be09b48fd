"""Sessions for the panel (Flask-Login), bearer tokens for the API, identities and error pages."""
import functools
import secrets
from urllib.parse import urlsplit

import redis
from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_login.signals import user_accessed
from flask_principal import ActionNeed, AnonymousIdentity, Identity, Principal, identity_loaded
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from blueprints.auth.forms import LoginForm, LogoutForm
from blueprints.auth.permissions import is_api_request
from cancellation import CancelDeskError
from cancellation.audit import AuditContext, record
from cancellation.policy import capabilities_of
from cancellation.privacy import mask_email
from cancellation.signin import Lockout, SignInThrottle
from models import ApiToken, LoginSession, User, db
from models.user import normalise_email

bp = Blueprint("auth", __name__)


class CancelDeskLoginManager(LoginManager):
    """Flask-Login with two rules of ours.

    The API authenticates by bearer token only: Flask-Login would otherwise sign an API
    request in by the browser's remember cookie (and prefer it to the bearer token), which
    would make the CSRF-exempt API usable with a browser's ambient cookie.

    A remember cookie that is not even text (a planted `remember_token=…é…`) is no sign-in,
    never an error: Flask-Login's HMAC comparison raises on non-ASCII.
    """

    def _load_user(self):
        if request.path.startswith("/api/"):
            user_accessed.send(current_app._get_current_object())
            return self._update_request_context_with_user(self._load_user_from_request(request))
        return super()._load_user()

    def _load_user_from_remember_cookie(self, cookie):
        try:
            return super()._load_user_from_remember_cookie(cookie)
        except (TypeError, ValueError, UnicodeError):
            return None


login_manager = CancelDeskLoginManager()
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
    _dummy_hash()  # made now, so that the first unknown e-mail takes no longer than the rest

    @app.context_processor
    def _auth_context():
        from blueprints.auth.permissions import PERMISSIONS
        # g.identity is missing when a request is refused before Principal loads it (a CSRF
        # failure): the error page then shows no capability-gated links instead of failing.
        return {"can": lambda capability: current_user.is_authenticated
                and g.get("identity") is not None and PERMISSIONS[capability].can(),
                "logout_form": LogoutForm()}


@login_manager.user_loader
def _load_user(login_token):
    """The session and the remember cookie hold the sign-in's token (User.get_id): it opens
    nothing once signed out, expired, or after a password, role or active-flag change."""
    return LoginSession.find_user(login_token)


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
        return url_for("dashboard.index")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        # Browsers drop tabs and newlines from URLs: "/\t/evil.example" would become "//evil...".
        return url_for("dashboard.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("dashboard.index")
    return target


def signin_throttle():
    config = current_app.config
    return SignInThrottle(current_app.extensions["redis"],
                          per_account=config["LOGIN_MAX_FAILURES_PER_ACCOUNT"],
                          per_address=config["LOGIN_MAX_FAILURES_PER_IP"],
                          per_device=config["LOGIN_MAX_FAILURES_PER_DEVICE"],
                          free=config["LOGIN_FREE_ATTEMPTS"],
                          max_delay_seconds=config["LOGIN_MAX_DELAY_SECONDS"],
                          window_seconds=config["LOGIN_LOCKOUT_SECONDS"])


def _guarded(call):
    """Throttling fails open: a Redis outage must not lock every user out of the panel."""
    try:
        return call()
    except redis.RedisError:
        current_app.logger.warning("login throttling unavailable (Redis)", exc_info=True)
        return None


@functools.cache
def _dummy_hash():
    """A hash of the kind stored for real accounts, checked for unknown e-mails: every answer
    then takes as long as a real password check, so timing does not tell who has an account."""
    return generate_password_hash(secrets.token_urlsafe(16))


def _password_matches(user, password):
    if user is None or not user.password_hash:
        check_password_hash(_dummy_hash(), password or "")
        return False
    matches = user.check_password(password or "")  # inactive accounts too: same time
    return matches and user.is_active


# --- known devices (OWASP's device cookies) --------------------------------------------------

DEVICE_COOKIE = "cd_device"
DEVICE_ACCOUNTS_MAX = 10


def _device_serializer():
    return URLSafeTimedSerializer(current_app.secret_key, salt="cancel-desk.known-device")


def _device_cookie():
    """{"n": device id, "u": [[user id, auth generation], …] of the accounts that signed in
    here} from a valid cookie, or None."""
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw or len(raw) > 1000:
        return None
    try:
        data = _device_serializer().loads(
            raw, max_age=current_app.config["DEVICE_COOKIE_DAYS"] * 86400)
    except BadData:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("n"), str) \
            or not isinstance(data.get("u"), list):
        return None
    return data


def known_device(user):
    """This browser's device id if `user` signed in on it since their last password, role or
    active-flag change, else None (a reset password makes every device a stranger again)."""
    data = _device_cookie()
    if user is None or data is None or [user.id, user.auth_generation] not in data["u"]:
        return None
    return data["n"]


def _remember_device(response, user):
    """After a successful sign-in: this browser becomes a known device of `user`."""
    data = _device_cookie() or {"n": secrets.token_urlsafe(16), "u": []}
    accounts = [entry for entry in data["u"] if not isinstance(entry, list) or not entry
                or entry[0] != user.id][-(DEVICE_ACCOUNTS_MAX - 1):]
    value = _device_serializer().dumps({"n": data["n"],
                                        "u": accounts + [[user.id, user.auth_generation]]})
    response.set_cookie(DEVICE_COOKIE, value,
                        max_age=current_app.config["DEVICE_COOKIE_DAYS"] * 86400,
                        path=url_for("auth.login"), httponly=True, samesite="Lax",
                        secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def check_credentials(email, password, source):
    """(user, None) when the e-mail and password match an active account, (None, lockout)
    while the throttle refuses the attempt (the password is then not even looked at), else
    (None, None). The attempt is counted before the password is checked, so concurrent guesses
    cannot check more than the limits allow; failures are audited. The panel's sign-in and the
    API's token endpoint share the counts; only the panel has known devices."""
    address = request.remote_addr
    user = User.by_email(email)
    device = known_device(user) if source == "panel" else None
    attempt = _guarded(lambda: signin_throttle().attempt(email, address, device))
    if isinstance(attempt, Lockout):
        return None, attempt
    if not _password_matches(user, password):
        _login_failed(attempt, email, address, user, source)
        return None, None
    if attempt is not None:
        _guarded(attempt.succeeded)
    return user, None


def _login_failed(attempt, email, address, user, source):
    """Audit the failure (never the password) and any limit it reached."""
    context = AuditContext(request_id=g.get("request_id"), ip=address, source=source)
    reason = ("unknown_account" if user is None else
              "inactive_account" if not user.is_active else "wrong_password")
    # What was typed for an unknown account may be anything (a password in the wrong box).
    email = user.email if user is not None else mask_email(normalise_email(email)[:254])
    record(None, "auth.login_failed", target_type="user", target_id=getattr(user, "id", None),
           after={"email": email, "reason": reason}, context=context)
    for scope in (attempt.reached if attempt is not None else ()):
        record(None, "auth.login_locked", target_type="user",
               target_id=getattr(user, "id", None),
               after={"email": email, "scope": scope,
                      "minutes": current_app.config["LOGIN_LOCKOUT_SECONDS"] // 60},
               context=context)
    db.session.commit()


def sign_in(user, remember):
    """Start a sign-in (a LoginSession, committed) and put its token in this browser's session
    and, with "Keep me signed in", its remember cookie."""
    config = current_app.config
    LoginSession.start(user, remember=remember, ip=request.remote_addr,
                       user_agent=request.user_agent.string,
                       lifetime=config["REMEMBER_COOKIE_DURATION"] if remember
                       else config["PERMANENT_SESSION_LIFETIME"])
    db.session.commit()
    login_user(user, remember=remember)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        user, lockout = check_credentials(form.email.data, form.password.data, "panel")
        if lockout is not None:
            flash(lockout.message, "danger")
            response = make_response(render_template("auth/login.html", form=form), 429)
            response.headers["Retry-After"] = str(lockout.retry_after)
            return response
        if user is None:
            flash("That e-mail and password do not match an active account.", "danger")
            return render_template("auth/login.html", form=form), 401
        session.clear()
        sign_in(user, remember=bool(form.remember.data))
        flash(f"Welcome back, {user.name}.", "success")
        return _remember_device(redirect(safe_next(request.args.get("next"))), user)
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if LogoutForm().validate_on_submit():
        # Ends this sign-in on the server: a copy of the session or remember cookie taken
        # before no longer opens anything.
        LoginSession.end(getattr(current_user, "login_token", None))
        db.session.commit()
        session.clear()
        logout_user()  # after clear(): it marks the remember cookie for deletion
        flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
