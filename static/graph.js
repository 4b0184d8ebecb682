/* Agent Stream admin: the workflow editor's drawing. The page carries the saved workflow as
   JSON (editor.graph_of); dagre (static/vendor/) lays it out, we draw it as SVG: nodes shaped
   and coloured by kind, edges with their phrases, digit and fallback. A click on a node or an
   edge (or Enter on it) brings its form into view and focuses its first field. Every save
   reloads the page, so the drawing is always the saved workflow. No other dependency. */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var NODE_HEIGHT = 50;
  var NODE_MIN_WIDTH = 110;
  var NODE_PAD = 22;
  var LABEL_LINE = 15;
  var LABEL_PAD = 6;
  var MAX_LABEL = 30;

  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  function clip(text, size) {
    return text.length > size ? text.slice(0, size - 1) + "…" : text;
  }

  // -- what an edge's label says: phrases, then digit and fallback ------------------------------

  function labelLines(edge) {
    var lines = [];
    // one phrase a line, at most three lines of them
    var phrases = edge.phrases.length > 3 ? edge.phrases.slice(0, 2) : edge.phrases;
    phrases.forEach(function (p) {
      lines.push([{ text: clip("“" + p + "”", MAX_LABEL), cls: "edge-phrases" }]);
    });
    if (phrases.length < edge.phrases.length) {
      lines.push([{ text: "+" + (edge.phrases.length - 2) + " more", cls: "edge-more" }]);
    }
    var extra = [];
    if (edge.dtmf) extra.push({ text: "press " + edge.dtmf, cls: "edge-digit" });
    if (edge.fallback) {
      if (extra.length) extra.push({ text: " · ", cls: "" });
      extra.push({ text: "fallback", cls: "edge-fallback" });
    }
    if (extra.length) lines.push(extra);
    if (!lines.length && edge.condition) {
      lines.push([{ text: clip("if " + edge.condition, MAX_LABEL), cls: "edge-condition" }]);
    }
    return lines;
  }

  function describeEdge(edge) {
    var parts = [];
    if (edge.phrases.length) parts.push("says " + edge.phrases.map(function (p) { return "“" + p + "”"; }).join(", "));
    if (edge.dtmf) parts.push("presses " + edge.dtmf);
    if (edge.condition) parts.push("if " + edge.condition);
    if (edge.fallback) parts.push("fallback");
    return "Edge " + edge.from + " → " + edge.to + (parts.length ? ": " + parts.join("; ") : "");
  }

  // -- text measured in the page's own font ------------------------------------------------------

  function measurer(svg) {
    // probes inside the same classes as the drawing, so the stylesheet's font sizes apply
    var probes = el("g", { "class": "graph-probes", transform: "translate(-2000,-2000)" }, svg);
    var node = el("text", {}, el("g", { "class": "graph-node" }, probes));
    var label = el("text", {}, el("g", { "class": "edge-label" }, el("g", { "class": "graph-edge" }, probes)));
    return function (runs, kind) {
      var probe = kind === "node" ? node : label;
      while (probe.firstChild) probe.removeChild(probe.firstChild);
      runs.forEach(function (run) {
        el("tspan", { "class": run.cls }, probe).textContent = run.text;
      });
      return probe.getComputedTextLength();
    };
  }

  // -- shapes --------------------------------------------------------------------------------------

  function shape(kind, w, h, parent) {
    var x = -w / 2, y = -h / 2;
    if (kind === "start") {
      return el("rect", { "class": "shape", x: x, y: y, width: w, height: h, rx: h / 2 }, parent);
    }
    if (kind === "transfer") {
      var c = 14;
      return el("polygon", { "class": "shape", points: [
        [x + c, y], [x + w - c, y], [x + w, 0], [x + w - c, y + h], [x + c, y + h], [x, 0]
      ].join(" ") }, parent);
    }
    if (kind === "end") {
      var k = 10;
      return el("polygon", { "class": "shape", points: [
        [x + k, y], [x + w - k, y], [x + w, y + k], [x + w, y + h - k], [x + w - k, y + h],
        [x + k, y + h], [x, y + h - k], [x, y + k]
      ].join(" ") }, parent);
    }
    return el("rect", { "class": "shape", x: x, y: y, width: w, height: h, rx: 8 }, parent);
  }

  // d3's curveBasis: a smooth path through dagre's edge points
  function basis(points) {
    var d = "", x0 = NaN, y0 = NaN, x1 = NaN, y1 = NaN, state = 0;
    function curve(x, y) {
      d += "C" + [(2 * x0 + x1) / 3, (2 * y0 + y1) / 3, (x0 + 2 * x1) / 3, (y0 + 2 * y1) / 3,
                  (x0 + 4 * x1 + x) / 6, (y0 + 4 * y1 + y) / 6].join(",");
    }
    points.forEach(function (p) {
      if (state === 0) { state = 1; d += "M" + p.x + "," + p.y; }
      else if (state === 1) { state = 2; }
      else {
        if (state === 2) { state = 3; d += "L" + (5 * x0 + x1) / 6 + "," + (5 * y0 + y1) / 6; }
        curve(p.x, p.y);
      }
      x0 = x1; x1 = p.x; y0 = y1; y1 = p.y;
    });
    if (state === 3) curve(x1, y1);
    if (state >= 2) d += "L" + x1 + "," + y1;
    return d;
  }

  // -- a click brings the form into view ----------------------------------------------------------

  var current = null;

  function showForm(id) {
    var form = document.getElementById(id);
    if (!form) return;
    if (current) current.classList.remove("graph-target");
    current = form;
    form.classList.add("graph-target");
    form.scrollIntoView({ block: "start" });
    var field = form.querySelector("fieldset input:not([type=hidden]), fieldset select, fieldset textarea");
    if (field) field.focus({ preventScroll: true });
  }

  function link(parent, formId, label) {
    var a = el("a", { href: "#" + formId, "data-form": formId, "aria-label": label }, parent);
    el("title", {}, a).textContent = label;
    a.addEventListener("click", function (event) {
      event.preventDefault();
      showForm(formId);
    });
    return a;
  }

  // -- the drawing ----------------------------------------------------------------------------------

  function draw(view, graph) {
    var svg = el("svg", { role: "group", "aria-label": view.getAttribute("data-graph-label") || "Workflow" });
    view.appendChild(svg);
    if (!graph.nodes.length) {
      view.removeChild(svg);
      var empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = "No nodes yet.";
      view.appendChild(empty);
      return;
    }
    var measure = measurer(svg);
    var g = new window.dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: "LR", nodesep: 26, ranksep: 70, edgesep: 16, marginx: 14, marginy: 14 });
    g.setDefaultEdgeLabel(function () { return {}; });
    // dagre keeps nodes in plain objects: an id such as "constructor" or "__proto__" would
    // break its layout, so it gets keys of our own ("n0", "n1" ...), the ids kept in a Map
    var keys = new Map();
    graph.nodes.forEach(function (node, position) {
      var width = Math.max(measure([{ text: node.id, cls: "node-id" }], "node"),
                           measure([{ text: node.kind, cls: "node-kind" }], "node"));
      keys.set(node.id, "n" + position);
      g.setNode("n" + position, { width: Math.max(NODE_MIN_WIDTH, width + 2 * NODE_PAD),
                                  height: NODE_HEIGHT, node: node });
    });
    graph.edges.forEach(function (edge) {
      if (!keys.has(edge.from) || !keys.has(edge.to)) return;
      var lines = labelLines(edge);
      var width = 0;
      lines.forEach(function (runs) { width = Math.max(width, measure(runs, "label")); });
      g.setEdge(keys.get(edge.from), keys.get(edge.to), {
        width: lines.length ? width + 2 * LABEL_PAD : 0,
        height: lines.length ? lines.length * LABEL_LINE + LABEL_PAD : 0,
        labelpos: "c", edge: edge, lines: lines
      }, "e" + edge.index);
    });
    window.dagre.layout(g);
    svg.removeChild(svg.querySelector(".graph-probes"));

    var size = g.graph();
    svg.setAttribute("viewBox", "0 0 " + size.width + " " + size.height);
    svg.setAttribute("width", size.width);
    svg.setAttribute("height", size.height);
    var defs = el("defs", {}, svg);
    var marker = el("marker", { id: "graph-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0L10,5L0,10z", "class": "graph-arrow" }, marker);

    var edgesLayer = el("g", { "class": "graph-edges" }, svg);
    var nodesLayer = el("g", { "class": "graph-nodes" }, svg);
    var labelsLayer = el("g", { "class": "graph-edge-labels" }, svg);

    g.edges().forEach(function (key) {
      var data = g.edge(key), edge = data.edge;
      var group = el("g", { "class": "graph-edge" + (edge.fallback ? " fallback" : ""),
                            "data-edge": edge.index, "data-from": edge.from, "data-to": edge.to },
                     edgesLayer);
      el("path", { d: basis(data.points), "marker-end": "url(#graph-arrow)" }, group);
      var labelGroup = el("g", { "class": "graph-edge" + (edge.fallback ? " fallback" : ""),
                                 "data-edge-label": edge.index }, labelsLayer);
      var a = link(labelGroup, "edge-" + edge.index, describeEdge(edge));
      if (!data.lines.length) {  // still a target for a click: a small dot on the edge
        el("circle", { cx: data.x, cy: data.y, r: 5, "class": "edge-dot" }, a);
        return;
      }
      var box = el("g", { "class": "edge-label",
                          transform: "translate(" + (data.x - data.width / 2) + "," + (data.y - data.height / 2) + ")" }, a);
      el("rect", { width: data.width, height: data.height, rx: 4 }, box);
      data.lines.forEach(function (runs, i) {
        var text = el("text", { x: LABEL_PAD, y: LABEL_PAD / 2 + (i + 1) * LABEL_LINE - 4 }, box);
        runs.forEach(function (run) {
          var span = el("tspan", { "class": run.cls }, text);
          span.textContent = run.text;
        });
      });
    });

    g.nodes().forEach(function (key) {
      var data = g.node(key), node = data.node;
      var label = "Node " + node.id + " (" + node.kind + ")" + (node.say ? ": " + node.say : "");
      var a = link(nodesLayer, "node-" + node.index, label);
      a.setAttribute("class", "graph-node kind-" + node.kind);
      a.setAttribute("data-node", node.id);
      var group = el("g", { transform: "translate(" + data.x + "," + data.y + ")" }, a);
      shape(node.kind, data.width, data.height, group);
      el("text", { "class": "node-id", "text-anchor": "middle", y: -3 }, group).textContent = node.id;
      el("text", { "class": "node-kind", "text-anchor": "middle", y: 13 }, group).textContent = node.kind;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-graph]").forEach(function (view) {
      var source = document.getElementById(view.getAttribute("data-graph"));
      if (!source || !window.dagre) return;
      draw(view, JSON.parse(source.textContent));
    });
  });
})();
