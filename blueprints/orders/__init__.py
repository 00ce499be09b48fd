"""The orders panel: list, detail, the cancel dialog, retries and manual reconciliation."""
from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("orders", __name__)


@bp.get("/")
@login_required
def index():
    return render_template("orders/list.html")
