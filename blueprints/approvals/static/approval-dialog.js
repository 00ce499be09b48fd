/* The orders list's shared cancel dialog, turned into the approval request form for rows whose
   data-approval-why lists why this user must ask (SPEC §3, seed A2). app.js fills and opens the
   dialog from the row (and points the form at the row's data-action); this runs right after it
   and switches the dialog's mode. Without JavaScript the row links to the full-page form. */
(function () {
  "use strict";

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  function setMode(modal, why) {
    var approval = Array.isArray(why) && why.length > 0;
    modal.classList.toggle("approval-mode", approval);
    $all(modal, ".js-approval-only").forEach(function (el) { el.classList.toggle("d-none", !approval); });
    $all(modal, ".js-cancel-only").forEach(function (el) { el.classList.toggle("d-none", approval); });
    var list = modal.querySelector(".js-approval-why");
    if (list) {
      list.textContent = "";
      (why || []).forEach(function (reason) {
        var item = document.createElement("li");
        item.textContent = reason;
        list.appendChild(item);
      });
    }
    var justification = modal.querySelector(".js-justification");
    if (justification) { justification.required = approval; }
    var submit = modal.querySelector(".js-confirm-cancel");
    if (submit) {
      submit.classList.toggle("btn-primary", approval);
      submit.classList.toggle("btn-danger", !approval);
      submit.dataset.originalText = submit.innerHTML;
    }
    // Asking for approval cancels nothing yet: no "fulfillment has started" second step.
    if (approval) { modal.dataset.status = ""; }
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest(".js-open-cancel");
    var modal = document.getElementById("cancel-order-modal");
    if (!opener || !modal) { return; }
    var row = opener.closest("[data-order-row]");
    if (!row) { return; }
    var why = null;
    try {
      why = row.dataset.approvalWhy ? JSON.parse(row.dataset.approvalWhy) : null;
    } catch (e) {
      why = null;
    }
    setMode(modal, why);
  }, true);
})();
