/* Bulk cancellation (seed A1): selecting orders on the list and the "Cancel Orders" dialog;
   the job page's live progress. Plain JavaScript plus the page's jQuery/Bootstrap (for the modal).
   Both pages work without it: the list posts to a confirmation page, the job page has Refresh. */
(function () {
  "use strict";

  var POLL_MS = 1500;
  var STATUS_STYLES = {
    queued: "badge-secondary", running: "badge-primary", completed: "badge-success",
    completed_with_errors: "badge-warning", failed: "badge-danger"
  };

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }
  function number(n) { return Number(n).toLocaleString("en-US"); }
  function orders(n) { return number(n) + (n === 1 ? " order" : " orders"); }
  function setText(root, selector, text) {
    $all(root, selector).forEach(function (el) { el.textContent = text; });
  }

  // --- the orders list ------------------------------------------------------------------------

  function setupList(form) {
    var modal = document.getElementById("bulk-cancel-modal");
    var rows = $all(document, ".js-bulk-row");
    var pageBox = document.querySelector(".js-bulk-page");
    var bar = document.querySelector(".js-bulk-bar");
    var opener = document.querySelector(".js-bulk-open");
    var badge = document.querySelector(".js-bulk-badge");
    var hint = document.querySelector(".js-bulk-hint");
    var allMatching = form.querySelector(".js-bulk-all-matching");
    var confirmed = form.querySelector(".js-bulk-confirmed");
    var matchingTotal = parseInt(form.dataset.matchingTotal, 10) || 0;
    var matching = false;  // "all orders matching the filters" rather than the ticked rows

    function ticked() { return rows.filter(function (row) { return row.checked; }).length; }
    function count() { return matching ? matchingTotal : ticked(); }

    function refresh() {
      var checked = ticked();
      var wholePage = rows.length > 0 && checked === rows.length;
      if (!wholePage) { matching = false; }
      allMatching.value = matching ? "1" : "";
      if (pageBox) {
        pageBox.checked = wholePage;
        pageBox.indeterminate = checked > 0 && !wholePage;
      }
      if (bar) {
        bar.classList.toggle("d-none", !(matching || (wholePage && matchingTotal > rows.length)));
        bar.querySelector(".js-bulk-bar-page").classList.toggle("d-none", matching);
        bar.querySelector(".js-bulk-bar-matching").classList.toggle("d-none", !matching);
      }
      var n = count();
      opener.disabled = n === 0;
      opener.querySelector(".js-bulk-menu-count").textContent = n ? " (" + number(n) + ")" : "";
      if (hint) { hint.classList.toggle("d-none", n > 0); }
      badge.textContent = number(n);
      badge.classList.toggle("d-none", n === 0);
    }

    rows.forEach(function (row) { row.addEventListener("change", refresh); });
    if (pageBox) {
      pageBox.addEventListener("change", function () {
        rows.forEach(function (row) { row.checked = pageBox.checked; });
        matching = false;
        refresh();
      });
    }
    document.addEventListener("click", function (event) {
      if (event.target.closest(".js-bulk-select-matching")) {
        event.preventDefault();
        matching = true;
        refresh();
      } else if (event.target.closest(".js-bulk-clear")) {
        event.preventDefault();
        rows.forEach(function (row) { row.checked = false; });
        matching = false;
        refresh();
      }
    });

    function showStep(step) {
      $all(form, ".js-bulk-step-details").forEach(function (el) { el.classList.toggle("d-none", step !== "details"); });
      $all(form, ".js-bulk-step-confirm").forEach(function (el) { el.classList.toggle("d-none", step !== "confirm"); });
    }

    function syncHint() {
      var select = form.querySelector(".js-bulk-reason");
      var hints = JSON.parse((form.querySelector(".js-reason-hints") || {}).textContent || "{}");
      var text = hints[select.value];
      form.querySelector(".js-reason-hint").textContent = text ? "e.g. " + text : "\u00a0";
    }
    form.querySelector(".js-bulk-reason").addEventListener("change", syncHint);

    opener.addEventListener("click", function () {
      var n = count();
      if (!n) { return; }
      confirmed.value = "";
      setText(form, ".js-bulk-count", number(n));
      setText(form, ".js-bulk-noun", n === 1 ? "order" : "orders");
      form.querySelector(".js-bulk-scope").textContent = matching
        ? "Every order matching the list's filters, on all pages"
        : "Selected on this page";
      $all(form, "button").forEach(function (button) { button.disabled = false; });
      showStep("details");
      syncHint();
      $(modal).modal("show");
    });

    // "Continue" (or Enter) moves to the second step; only "Yes, cancel N orders" sends it.
    form.addEventListener("submit", function (event) {
      if (confirmed.value === "y") { return; }
      event.preventDefault();
      var n = count();
      var reason = form.querySelector(".js-bulk-reason");
      form.querySelector(".js-bulk-question").textContent =
        "Cancel " + orders(n) + "? This cannot be undone in bulk.";
      form.querySelector(".js-bulk-reason-label").textContent =
        reason.options[reason.selectedIndex].text;
      form.querySelector(".js-bulk-notify-label").textContent =
        form.querySelector(".js-bulk-notify").checked
          ? "Customers will be notified by e-mail." : "Customers will not be notified.";
      showStep("confirm");
      form.querySelector(".js-bulk-confirm").focus();
    });
    form.querySelector(".js-bulk-back").addEventListener("click", function () { showStep("details"); });
    form.querySelector(".js-bulk-confirm").addEventListener("click", function () {
      confirmed.value = "y";
      $all(form, "button").forEach(function (button) { button.disabled = true; });
      this.innerHTML = '<span class="spinner-border spinner-border-sm mr-1" role="status" aria-hidden="true"></span>Starting…';
      HTMLFormElement.prototype.submit.call(form);
    });
    $(modal).on("hidden.bs.modal", function () { showStep("details"); });

    // Coming back to the list (history), the browser may restore the ticks: show them.
    window.addEventListener("pageshow", refresh);
    refresh();
  }

  // --- a job's page ---------------------------------------------------------------------------

  function setupProgress(card) {
    if (card.dataset.finished) { return; }
    var url = card.dataset.bulkProgress;
    var misses = 0;

    function apply(state) {
      var total = state.total || 1;
      setText(card, "[data-field=percent]", String(state.percent));
      ["processed", "succeeded", "failed", "pending"].forEach(function (name) {
        setText(card, "[data-field=" + name + "]", number(state[name]));
      });
      card.querySelector("[data-bar=succeeded]").style.width = (100 * state.succeeded / total) + "%";
      card.querySelector("[data-bar=failed]").style.width = (100 * state.failed / total) + "%";
      card.querySelector("[role=progressbar]").setAttribute("aria-valuenow", state.percent);
      var moving = state.status === "running";
      $all(card, ".progress-bar").forEach(function (barEl) {
        barEl.classList.toggle("progress-bar-striped", moving);
        barEl.classList.toggle("progress-bar-animated", moving);
      });
      var badge = document.querySelector(".js-bulk-status .badge");
      if (badge && badge.dataset.bulkStatus !== state.status) {
        badge.className = "badge status-badge " + (STATUS_STYLES[state.status] || "badge-light");
        badge.dataset.bulkStatus = state.status;
        badge.textContent = state.status_label;
      }
      setText(card, ".js-bulk-phase", state.finished ? "done" : (state.status === "queued" ? "queued" : "cancelling…"));
    }

    function poll() {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (state) {
          misses = 0;
          apply(state);
          if (state.finished) {
            // The results table, the finish time and "Retry failed" come with the page.
            window.location.reload();
          } else {
            window.setTimeout(poll, POLL_MS);
          }
        })
        .catch(function () {
          // A dropped connection or a restart: keep trying for a while, then leave it to Refresh.
          misses += 1;
          if (misses < 20) { window.setTimeout(poll, POLL_MS * 2); }
        });
    }
    window.setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("bulk-cancel-form");
    if (form) { setupList(form); }
    $all(document, "[data-bulk-progress]").forEach(setupProgress);
  });
})();
