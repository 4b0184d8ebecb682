/* Agent Stream admin: the Overview page's charts, drawn with Chart.js (static/vendor/) from
   the figures the page carries as JSON (#overview-data); the same figures are in its tables,
   so the page says everything without this script. */
(function () {
  "use strict";

  var OUTCOME_COLORS = {
    completed: "#2f9e58",
    transferred: "#2457d6",
    failed: "#d0453a",
    live: "#e0a030"
  };
  var PROVIDER_COLORS = ["#2457d6", "#d0453a", "#2f9e58", "#e0a030", "#7b4fd6", "#1f9bb0",
                         "#c2577f", "#6b7280"];
  var GRID = "#eceff3";
  var TEXT = "#5f6b7a";

  function capitalize(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

  function shortDay(day) {
    // 2026-11-05 -> Nov 5 (the days are UTC dates: no time zone may move them)
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec"];
    var parts = day.split("-");
    return months[parseInt(parts[1], 10) - 1] + " " + parseInt(parts[2], 10);
  }

  function axes(stacked, horizontal) {
    var count = { beginAtZero: true, stacked: stacked, grid: { color: GRID },
                  ticks: { precision: 0, color: TEXT } };
    var category = { stacked: stacked, grid: { display: false }, ticks: { color: TEXT } };
    return horizontal ? { x: count, y: category } : { x: category, y: count };
  }

  function options(extra) {
    var base = {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: false }, tooltip: { mode: "index", intersect: false } }
    };
    Object.keys(extra || {}).forEach(function (key) { base[key] = extra[key]; });
    return base;
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) new window.Chart(canvas, config);
  }

  function histogram(id, buckets, label, color) {
    draw(id, {
      type: "bar",
      data: {
        labels: buckets.map(function (b) { return b[0]; }),
        datasets: [{ label: label, data: buckets.map(function (b) { return b[1]; }),
                     backgroundColor: color, borderRadius: 3, maxBarThickness: 48 }]
      },
      options: options({ scales: axes(false, false) })
    });
  }

  function failures(rows) {
    var reasons = [], providers = [];
    rows.forEach(function (row) {
      if (reasons.indexOf(row[0]) < 0) reasons.push(row[0]);
      if (providers.indexOf(row[1]) < 0) providers.push(row[1]);
    });
    draw("chart-failures", {
      type: "bar",
      data: {
        labels: reasons,
        datasets: providers.map(function (provider, i) {
          return {
            label: provider,
            data: reasons.map(function (reason) {
              var found = rows.filter(function (r) { return r[0] === reason && r[1] === provider; });
              return found.length ? found[0][2] : 0;
            }),
            backgroundColor: PROVIDER_COLORS[i % PROVIDER_COLORS.length],
            borderRadius: 3,
            maxBarThickness: 26
          };
        })
      },
      options: options({
        indexAxis: "y",
        scales: axes(true, true),
        plugins: { legend: { display: true, position: "bottom" },
                   tooltip: { mode: "index", intersect: false } }
      })
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var source = document.getElementById("overview-data");
    if (!source || !window.Chart) return;
    var data = JSON.parse(source.textContent);
    window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

    draw("chart-calls", {
      type: "bar",
      data: {
        labels: data.days.map(shortDay),
        datasets: data.outcomes.map(function (outcome) {
          return { label: capitalize(outcome), data: data.calls_per_day[outcome],
                   backgroundColor: OUTCOME_COLORS[outcome] || "#6b7280", borderRadius: 2 };
        })
      },
      options: options({
        scales: axes(true, false),
        plugins: { legend: { display: true, position: "bottom" },
                   tooltip: { mode: "index", intersect: false } }
      })
    });
    histogram("chart-durations", data.durations, "Calls", "#2457d6");
    histogram("chart-latency", data.latencies, "Replies", "#1f9bb0");
    if (data.failures.length) failures(data.failures);
  });
})();
