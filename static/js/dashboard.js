/* Dashboard charts: Chart.js (vendored into static/vendor at install time) draws the numbers the
   server already put in the tables; the page works without it. */
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || typeof window.Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#2f7d4a", "#17a2b8", "#e0a800", "#6f42c1", "#dc3545", "#fd7e14", "#20c997",
                 "#6c757d", "#007bff", "#e83e8c"];
  var reduced = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.font.size = 11;
  Chart.defaults.color = "#6b7480";
  if (reduced) { Chart.defaults.animation = false; }

  function integerAxis() {
    return { beginAtZero: true, ticks: { precision: 0 }, grid: { color: "#eef0f3" } };
  }

  function config(kind, series) {
    if (kind === "doughnut") {
      return {
        type: "doughnut",
        data: { labels: series.labels, datasets: [{ data: series.counts,
                 backgroundColor: palette.slice(0, series.counts.length), borderWidth: 1 }] },
        options: { maintainAspectRatio: false, cutout: "58%",
                   plugins: { legend: { position: "right", labels: { boxWidth: 10 } } } }
      };
    }
    if (kind === "line") {
      return {
        type: "line",
        data: { labels: series.labels, datasets: [{ label: "Cancellations", data: series.counts,
                 borderColor: "#2f7d4a", backgroundColor: "rgba(47,125,74,.12)", fill: true,
                 tension: 0.25, pointRadius: series.counts.length > 45 ? 0 : 2 }] },
        options: { maintainAspectRatio: false, plugins: { legend: { display: false } },
                   scales: { y: integerAxis(), x: { grid: { display: false },
                             ticks: { autoSkip: true, maxTicksLimit: 12, maxRotation: 0 } } } }
      };
    }
    return {
      type: "bar",
      data: { labels: series.labels, datasets: [{ label: "Cancellations", data: series.counts,
               backgroundColor: "#2f7d4a", borderRadius: 3, maxBarThickness: 28 }] },
      options: { indexAxis: "y", maintainAspectRatio: false,
                 plugins: { legend: { display: false } },
                 scales: { x: integerAxis(), y: { grid: { display: false } } } }
    };
  }

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var series = data[canvas.getAttribute("data-chart")];
    if (!series) { return; }
    if (!series.counts.length) {
      canvas.parentNode.innerHTML = '<div class="chart-empty">No cancellations in this period</div>';
      return;
    }
    canvas.chart = new Chart(canvas, config(canvas.getAttribute("data-kind"), series));
  });
}());
