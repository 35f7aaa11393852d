/* Stacked bar charts of the admin (Chart.js, vendored): data from a json_script element. */
window.orchStackedBar = function (canvasId, dataId, series) {
  document.addEventListener("DOMContentLoaded", function () {
    const canvas = document.getElementById(canvasId);
    if (!window.Chart || !canvas) return;
    const d = JSON.parse(document.getElementById(dataId).textContent);
    new window.Chart(canvas, {
      type: "bar",
      data: {labels: d.labels, datasets: series.map(function (s) {
        return {label: s.label, data: d[s.key], backgroundColor: s.colour};
      })},
      options: {animation: false, plugins: {legend: {position: "bottom"}},
                scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}},
    });
  });
};
