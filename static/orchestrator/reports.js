/* Charts of the measurement report, drawn with the vendored Chart.js from the page's #report-data. */
(function () {
  "use strict";
  var MODEL_COLOURS = {
    first: "#2563eb", last: "#dc2626", linear: "#16a34a", time_decay: "#d97706", position_based: "#7c3aed"
  };

  function canvas(id) { return document.getElementById(id); }

  function creditChart(data) {
    var el = canvas("chart-credit");
    if (!el || !data.channels.length) { return; }
    var chart = new Chart(el, {
      type: "bar",
      data: {
        labels: data.channels,
        datasets: data.models.map(function (m) {
          return { label: m.label, data: data.credit[m.key], backgroundColor: MODEL_COLOURS[m.key] };
        })
      },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { y: { beginAtZero: true, title: { display: true, text: "conversions credited" } } }
      }
    });
    document.querySelectorAll(".rep-measure").forEach(function (button) {
      button.addEventListener("click", function () {
        var measure = button.getAttribute("data-measure");
        document.querySelectorAll(".rep-measure").forEach(function (b) { b.classList.toggle("active", b === button); });
        chart.data.datasets.forEach(function (ds, i) { ds.data = data[measure][data.models[i].key]; });
        chart.options.scales.y.title.text = measure === "value" ? "value credited" : "conversions credited";
        chart.update();
      });
    });
  }

  function horizontal(id, rows, first, second) {
    var el = canvas(id);
    if (!el || !rows.length) { return; }
    new Chart(el, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r.label; }),
        datasets: [
          { label: first[1], data: rows.map(function (r) { return r[first[0]]; }), backgroundColor: "#2563eb" },
          { label: second[1], data: rows.map(function (r) { return r[second[0]]; }), backgroundColor: "#16a34a" }
        ]
      },
      options: { indexAxis: "y", maintainAspectRatio: false, animation: false, scales: { x: { beginAtZero: true } } }
    });
  }

  function liftChart(holdout) {
    var el = canvas("chart-lift");
    if (!el || !holdout) { return; }
    var pct = function (x) { return x === null || x === undefined ? null : Math.round(x * 1000) / 10; };
    var datasets = [{
      type: "bar", label: "conversion rate (%)",
      data: [pct(holdout.exposed_rate), pct(holdout.held_out_rate), null],
      backgroundColor: ["#2563eb", "#9ca3af", "transparent"]
    }];
    if (holdout.ci95) {
      datasets.push({
        type: "bar", label: "lift, 95 % interval (points)",
        data: [null, null, [pct(holdout.ci95[0]), pct(holdout.ci95[1])]],
        backgroundColor: "rgba(22, 163, 74, 0.35)", borderColor: "#16a34a", borderWidth: 1
      });
      datasets.push({
        type: "scatter", label: "lift (points)",
        data: [{ x: "lift", y: pct(holdout.lift) }], backgroundColor: "#15803d", pointRadius: 5
      });
    }
    new Chart(el, {
      data: { labels: ["exposed", "held out", "lift"], datasets: datasets },
      options: { maintainAspectRatio: false, animation: false, scales: { y: { title: { display: true, text: "%" } } } }
    });
  }

  function trendChart(trend) {
    var el = canvas("chart-trend");
    if (!el || !trend.length) { return; }
    new Chart(el, {
      type: "line",
      data: {
        labels: trend.map(function (r) { return r.day; }),
        datasets: [
          { label: "entrants", data: trend.map(function (r) { return r.entered; }), borderColor: "#2563eb", yAxisID: "y" },
          { label: "conversions", data: trend.map(function (r) { return r.conversions; }), borderColor: "#16a34a", yAxisID: "y" },
          { label: "value", data: trend.map(function (r) { return r.value; }), borderColor: "#d97706", yAxisID: "y2", borderDash: [4, 3] }
        ]
      },
      options: {
        maintainAspectRatio: false, animation: false,
        scales: { y: { beginAtZero: true }, y2: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false } } }
      }
    });
  }

  function draw() {
    var node = document.getElementById("report-data");
    if (!node || typeof Chart === "undefined") { return; }
    var data = JSON.parse(node.textContent);
    creditChart(data);
    horizontal("chart-funnel", data.funnel, ["entered", "entrants"], ["reached", "sends that reached"]);
    horizontal("chart-sequences", data.sequences, ["entrants", "entrants"], ["converted", "converted"]);
    liftChart(data.holdout);
    trendChart(data.trend);
    document.body.setAttribute("data-charts", "drawn");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
