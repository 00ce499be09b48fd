/* "Modify Order" (partial cancellation): the live summary, computed by the server from the
   quantities chosen (GET /orders/:id/modify/preview), and the dialog's review step before the
   items are removed. app.js already handles the reason's customer-request fields and double
   submits (the form is a .js-cancel-form); without JavaScript the form posts as it is. */
(function () {
  "use strict";

  function $all(root, selector) { return Array.prototype.slice.call(root.querySelectorAll(selector)); }
  function one(root, selector) { return root.querySelector(selector); }
  function show(el, visible) { if (el) { el.classList.toggle("d-none", !visible); } }
  function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

  function chosenLines(form) {
    return $all(form, ".js-modify-qty").map(function (input) {
      return { input: input, id: input.dataset.itemId, quantity: input.value.trim() };
    }).filter(function (line) { return line.quantity !== "" && line.quantity !== "0"; });
  }

  function previewUrl(form) {
    var summary = one(form, ".js-modify-summary");
    var params = new URLSearchParams();
    chosenLines(form).forEach(function (line) { params.append("qty-" + line.id, line.quantity); });
    var notify = one(form, ".js-modify-notify");
    params.append("notify_customer", notify && notify.checked ? "y" : "n");
    return summary.dataset.previewUrl + "?" + params.toString();
  }

  function showLineErrors(form, errors) {
    $all(form, ".js-modify-qty").forEach(function (input) {
      var message = errors[input.dataset.itemId] || "";
      input.classList.toggle("is-invalid", !!message);
      var slot = one(form, '.js-line-error[data-item-id="' + input.dataset.itemId + '"]');
      if (slot) { slot.textContent = message; }
    });
  }

  function problemsOf(answer) {
    return (answer.errors || []).concat(answer.blockers || []).map(function (p) { return p.message; });
  }

  function render(form, answer) {
    var summary = one(form, ".js-modify-summary");
    showLineErrors(form, answer.line_errors || {});
    var problem = one(summary, ".js-summary-problem");
    var problems = problemsOf(answer);
    problem.textContent = problems.join(" ");
    show(problem, problems.length > 0);
    var hasLines = answer.units > 0;
    show(one(summary, ".js-summary-empty"), !hasLines);
    show(one(summary, ".js-summary-body"), hasLines);
    if (!hasLines) { return; }
    one(summary, ".js-summary-units").textContent = plural(answer.units, "item");
    one(summary, ".js-summary-refund").textContent = answer.refund_cents > 0
      ? "Refund of $" + answer.refund + " queued" : "Nothing to refund";
    one(summary, ".js-summary-points").textContent = "Restores " +
      plural(answer.points_restored, "redeemed point") + ", reverses " +
      plural(answer.points_reversed, "earned point");
    one(summary, ".js-summary-total").textContent = "$" + answer.totals_after.total;
    show(one(summary, ".js-summary-closes"), answer.closes_order);
    show(one(summary, ".js-summary-reconcile"), (answer.lines || []).some(function (l) { return !l.returns_to_stock; }));
  }

  function fetchPreview(form) {
    var token = (form._previewToken || 0) + 1;
    form._previewToken = token;
    return fetch(previewUrl(form), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        if (token === form._previewToken) {
          form._preview = answer;
          render(form, answer);
        }
        return answer;
      })
      .catch(function () {
        var problem = one(form, ".js-summary-problem");
        problem.textContent = "The summary could not be computed; the server checks everything when you submit.";
        show(problem, true);
        return null;
      });
  }

  function showStep(form, step) {
    $all(form, ".js-modify-step-details").forEach(function (el) { show(el, step === "details"); });
    $all(form, ".js-modify-step-confirm").forEach(function (el) { show(el, step === "confirm"); });
  }

  function fillConfirm(form, answer) {
    var list = one(form, ".js-confirm-lines");
    list.textContent = "";
    (answer.lines || []).forEach(function (line) {
      var item = document.createElement("li");
      item.textContent = line.quantity + " \u00d7 " + line.name + " (" + line.sku + ")";
      list.appendChild(item);
    });
    one(form, ".js-confirm-money").textContent =
      (answer.refund_cents > 0 ? "Refund of $" + answer.refund + "; " : "Nothing to refund; ") +
      "new total $" + answer.totals_after.total + "; " +
      plural(answer.points_restored, "point") + " restored, " + plural(answer.points_reversed, "point") +
      " reversed" + (answer.notification ? "; the customer is notified." : "; the customer is not notified.");
    show(one(form, ".js-confirm-closes"), answer.closes_order);
  }

  function review(form) {
    var problem = one(form, ".js-summary-problem");
    if (!chosenLines(form).length) {
      problem.textContent = "Choose how many of which items to remove.";
      show(problem, true);
      return;
    }
    if (!form.reportValidity()) { return; }
    fetchPreview(form).then(function (answer) {
      if (!answer) { return; }
      if (!answer.ok) {
        if (!problemsOf(answer).length && !Object.keys(answer.line_errors || {}).length) {
          problem.textContent = "These items cannot be removed.";
          show(problem, true);
        }
        return;
      }
      fillConfirm(form, answer);
      showStep(form, "confirm");
      var yes = one(form, ".js-modify-confirm");
      if (yes) { yes.focus(); }
    });
  }

  function setup(form) {
    var timer = null;
    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () { fetchPreview(form); }, 250);
    }
    $all(form, ".js-modify-qty").forEach(function (input) {
      input.addEventListener("input", schedule);
      input.addEventListener("change", schedule);
    });
    var notify = one(form, ".js-modify-notify");
    if (notify) { notify.addEventListener("change", schedule); }
    if (chosenLines(form).length) { fetchPreview(form); }  // the page, shown again after an error

    var reviewButton = one(form, ".js-modify-review");
    if (reviewButton) {
      reviewButton.addEventListener("click", function () { review(form); });
      // Enter in a field reviews instead of submitting unreviewed.
      form.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && event.target.tagName === "INPUT") {
          event.preventDefault();
          review(form);
        }
      });
    }
    var back = one(form, ".js-modify-back");
    if (back) { back.addEventListener("click", function () { showStep(form, "details"); }); }
    var yes = one(form, ".js-modify-confirm");
    if (yes) {
      yes.addEventListener("click", function () {
        var confirmInput = one(form, ".js-confirm-in-progress");
        if (confirmInput) { confirmInput.value = "y"; }  // the review step was that confirmation
        $all(form, "button").forEach(function (button) { button.disabled = true; });
        yes.dataset.originalText = yes.dataset.originalText || yes.innerHTML;
        yes.innerHTML = '<span class="spinner-border spinner-border-sm mr-1" role="status" aria-hidden="true"></span>Working…';
        HTMLFormElement.prototype.submit.call(form);
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    $all(document, ".js-modify-form").forEach(setup);
    var modal = document.getElementById("modify-order-modal");
    if (modal && window.jQuery) {
      window.jQuery(modal).on("show.bs.modal", function () {
        var form = one(modal, "form");
        showStep(form, "details");
        var confirmInput = one(form, ".js-confirm-in-progress");
        if (confirmInput) { confirmInput.value = ""; }
        $all(form, "button").forEach(function (button) {
          button.disabled = false;
          if (button.dataset.originalText) { button.innerHTML = button.dataset.originalText; }
        });
      });
    }
  });
})();
