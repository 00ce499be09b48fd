/* Cancel Desk panel behaviour: the cancel dialog, confirmations, no double submits.
   Plain JavaScript plus the jQuery/Bootstrap already on the page; every form also works without it. */
(function () {
  "use strict";

  var CUSTOMER_REQUESTED = "customer_requested";

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  // "now" in the store's time zone, as a datetime-local value (YYYY-MM-DDTHH:MM).
  function storeNow(timeZone) {
    try {
      var parts = {};
      new Intl.DateTimeFormat("en-CA", {
        timeZone: timeZone || undefined, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", hourCycle: "h23"
      }).formatToParts(new Date()).forEach(function (p) { parts[p.type] = p.value; });
      return parts.year + "-" + parts.month + "-" + parts.day + "T" + parts.hour + ":" + parts.minute;
    } catch (e) {
      return "";
    }
  }

  // Show the customer-request fields (and make them required) only for "Customer requested".
  function syncReason(form) {
    var select = form.querySelector(".js-cancel-reason");
    if (!select) { return; }
    var isCustomer = select.value === CUSTOMER_REQUESTED;
    var block = form.querySelector(".js-customer-request");
    if (block) { block.classList.toggle("d-none", !isCustomer); }
    $all(form, ".js-request-required").forEach(function (input) { input.required = isCustomer; });
    var hint = form.querySelector(".js-reason-hint");
    var hintsNode = form.querySelector(".js-reason-hints");
    if (hint && hintsNode) {
      var hints = JSON.parse(hintsNode.textContent || "{}");
      hint.textContent = hints[select.value] ? "e.g. " + hints[select.value] : "\u00a0";
    }
  }

  function showStep(form, step) {
    $all(form, ".js-step-details").forEach(function (el) { el.classList.toggle("d-none", step !== "details"); });
    $all(form, ".js-step-confirm").forEach(function (el) { el.classList.toggle("d-none", step !== "confirm"); });
  }

  function disableSubmitters(form) {
    $all(form, "button[type=submit], .js-confirm-in-progress-button").forEach(function (button) {
      button.disabled = true;
      if (!button.dataset.originalText) { button.dataset.originalText = button.innerHTML; }
      button.innerHTML = '<span class="spinner-border spinner-border-sm mr-1" role="status" aria-hidden="true"></span>Working…';
    });
  }

  function setupCancelForm(form) {
    var select = form.querySelector(".js-cancel-reason");
    if (select) {
      select.addEventListener("change", function () { syncReason(form); });
      syncReason(form);
    }
    var modal = form.closest(".cancel-dialog");
    if (!modal) {
      form.addEventListener("submit", function () { disableSubmitters(form); });
      return;
    }
    var confirmInput = form.querySelector(".js-confirm-in-progress");
    form.addEventListener("submit", function (event) {
      // An order whose fulfillment started needs a second, explicit "yes".
      if (modal.dataset.status === "in_progress" && confirmInput && confirmInput.value !== "y") {
        event.preventDefault();
        showStep(form, "confirm");
        var yes = form.querySelector(".js-confirm-in-progress-button");
        if (yes) { yes.focus(); }
        return;
      }
      disableSubmitters(form);
    });
    var yesButton = form.querySelector(".js-confirm-in-progress-button");
    if (yesButton) {
      yesButton.addEventListener("click", function () {
        confirmInput.value = "y";
        disableSubmitters(form);
        HTMLFormElement.prototype.submit.call(form);
      });
    }
    var back = form.querySelector(".js-step-back");
    if (back) { back.addEventListener("click", function () { showStep(form, "details"); }); }
  }

  // The list's row menu: fill the shared dialog from the row's data-* and open it.
  function openCancelFromRow(row) {
    var modal = document.getElementById("cancel-order-modal");
    if (!modal) { return false; }
    var form = modal.querySelector("form");
    form.reset();
    form.action = row.dataset.action;
    modal.dataset.status = row.dataset.status;
    $all(modal, ".js-order-number").forEach(function (el) { el.textContent = row.dataset.orderNumber; });
    var summary = modal.querySelector(".js-order-summary");
    if (summary) { summary.textContent = row.dataset.summary || ""; }
    form.querySelector("[data-cancel-field=version]").value = row.dataset.version;
    var scope = modal.querySelector(".js-scope");
    if (scope) { scope.classList.toggle("d-none", !row.dataset.series); }
    var requestedAt = form.querySelector(".js-requested-at");
    if (requestedAt) { requestedAt.value = storeNow(row.dataset.storeTz); }
    prepareDialog(modal);
    $(modal).modal("show");
    return true;
  }

  function prepareDialog(modal) {
    var form = modal.querySelector("form");
    var confirmInput = form.querySelector(".js-confirm-in-progress");
    if (confirmInput) { confirmInput.value = ""; }
    $all(form, "button").forEach(function (button) {
      button.disabled = false;
      if (button.dataset.originalText) { button.innerHTML = button.dataset.originalText; }
    });
    showStep(form, "details");
    syncReason(form);
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest(".js-open-cancel");
    if (opener) {
      var row = opener.closest("[data-order-row]");
      if (row && openCancelFromRow(row)) { event.preventDefault(); }
      return;
    }
    // Destructive buttons ask first.
    var confirmable = event.target.closest("[data-confirm]");
    if (confirmable && !window.confirm(confirmable.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.classList.contains("js-cancel-form")) { return; }  // handled above
    if (event.defaultPrevented) { return; }
    $all(form, "[data-disable-on-submit]").forEach(function (button) {
      // Let this submit carry the button, then block a second click.
      window.setTimeout(function () { button.disabled = true; }, 0);
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    // Widths computed by the server (progress bars) come as data-width: the Content-Security-
    // Policy allows no style="..." attribute, but a style set from a script is allowed.
    $all(document, "[data-width]").forEach(function (el) { el.style.width = el.dataset.width + "%"; });
    $all(document, ".js-cancel-form").forEach(setupCancelForm);
    var modal = document.getElementById("cancel-order-modal");
    if (modal) {
      $(modal).on("show.bs.modal", function () {
        if (modal.querySelector("form").getAttribute("action")) { prepareDialog(modal); }
      });
    }
  });
})();
