/* Money at the counter: the "Paid out" confirmation names the drawer typed, and the reinstatement
   window counts down. Loaded as a file (the Content-Security-Policy allows no inline script). */
(function () {
  "use strict";

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }

  // app.js asks window.confirm(data-confirm) on click; keep the question in step with the drawer.
  function syncPayoutConfirm(form) {
    var input = form.querySelector(".js-payout-drawer");
    var button = form.querySelector(".js-payout-button");
    if (!input || !button) { return; }
    var drawer = input.value.trim();
    if (drawer) {
      button.dataset.confirm = "Hand " + form.dataset.amount + " in cash to " + form.dataset.customer +
        " from " + drawer + "?";
    } else {
      delete button.dataset.confirm;  // the browser asks for the drawer first
    }
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function tick(el) {
    var left = Math.floor((Date.parse(el.dataset.deadline) - Date.now()) / 1000);
    if (isNaN(left)) { return false; }
    if (left <= 0) {
      el.textContent = "the window has closed";
      el.classList.add("text-danger");
      $all(document, "[data-closes-with-window]").forEach(function (button) {
        button.disabled = true;
        button.classList.add("disabled");
        button.setAttribute("aria-disabled", "true");
      });
      return false;
    }
    var h = Math.floor(left / 3600), m = Math.floor(left % 3600 / 60), s = left % 60;
    el.textContent = (h ? h + " h " + pad(m) + " min " : m + " min ") + pad(s) + " s left";
    el.classList.toggle("text-danger", left < 600);
    return true;
  }

  document.addEventListener("DOMContentLoaded", function () {
    $all(document, ".js-payout-form").forEach(function (form) {
      var input = form.querySelector(".js-payout-drawer");
      if (input) {
        input.addEventListener("input", function () { syncPayoutConfirm(form); });
        input.addEventListener("change", function () { syncPayoutConfirm(form); });
      }
      syncPayoutConfirm(form);
    });

    var counters = $all(document, ".js-countdown");
    if (counters.length) {
      var run = function () {
        var running = counters.filter(tick);
        counters = running;
        if (!running.length) { window.clearInterval(timer); }
      };
      var timer = window.setInterval(run, 1000);
      run();
    }

    // Take payment: the drawer matters for cash only.
    $all(document, ".js-balance-form").forEach(function (form) {
      var tender = form.querySelector("select[name=tender]");
      var drawer = form.querySelector(".js-balance-drawer");
      if (!tender || !drawer) { return; }
      var sync = function () {
        var cash = tender.value === "cash";
        drawer.classList.toggle("d-none", !cash);
        drawer.querySelector("input").required = cash;
      };
      tender.addEventListener("change", sync);
      sync();
    });
  });
}());
