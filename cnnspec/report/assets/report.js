/* cnnspec's network page: the drawing (graphviz SVG) with blocks that fold and unfold, the summary
   table, and the details of the layer clicked, with its receptive field on the input grid.
   Plain ES2017, no library, nothing fetched: the page works from file://. `window.cnnspec` is the
   small API that editor.js (cnnspec serve) and the tests use. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var FOLD_H = 44;                     // height of a folded block's box, in graph units (points)
  var payload = JSON.parse(document.getElementById("cnnspec-data").textContent || "{}");
  var DATA = payload.data || null;
  var state = { selected: null, block: null, unit: null, folded: new Set(), zoom: 1 };
  var byName = {};
  var D = null;                        // the drawing's elements and their original geometry

  // -- formatting -------------------------------------------------------------------------------
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function num(n) { return Number(n).toLocaleString("en-US"); }
  function human(n) {
    var scales = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "K"]];
    for (var i = 0; i < scales.length; i++) {
      if (Math.abs(n) >= scales[i][0]) { return Number((n / scales[i][0]).toPrecision(3)) + scales[i][1]; }
    }
    return String(n);
  }
  function bytes(n) {
    var scales = [[Math.pow(2, 30), "GiB"], [Math.pow(2, 20), "MiB"], [Math.pow(2, 10), "KiB"]];
    for (var i = 0; i < scales.length; i++) {
      if (n >= scales[i][0]) { return (n / scales[i][0]).toFixed(2) + " " + scales[i][1]; }
    }
    return n + " B";
  }
  function shape(s) { return s && s.length ? s.join("x") : "scalar"; }
  function frac(v) { return Array.isArray(v) ? v[0] / v[1] : Number(v); }
  function fracText(v) { return Array.isArray(v) ? (v[1] === 1 ? String(v[0]) : v[0] + "/" + v[1]) : String(v); }
  function value(v, key) {
    if (v === null || v === undefined) { return "none"; }
    if (Array.isArray(v) && key === "pad") { return "(" + v.join(", ") + ")"; }
    if (Array.isArray(v)) { return v.map(function (x) { return value(x); }).join(v.every(function (x) { return typeof x === "number"; }) ? "x" : ", "); }
    if (typeof v === "object") { return Object.keys(v).map(function (k) { return k + "=" + value(v[k], k); }).join(", "); }
    return String(v);
  }
  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function titleOf(g) { var t = g.querySelector("title"); return t ? t.textContent : ""; }
  function blockLabel(path) {
    var b = DATA.blocks[path];
    var args = b ? Object.keys(b.args).map(function (k) { return value(b.args[k]); }).join(", ") : "";
    return path.split(".").pop() + ": " + (b ? b.type : "block") + "(" + args + ")";
  }
  function enclosing(scope) {            // ["a", "b"] -> ["a", "a.b"]
    var out = [];
    for (var i = 1; i <= scope.length; i++) { out.push(scope.slice(0, i).join(".")); }
    return out;
  }

  // -- header ------------------------------------------------------------------------------------
  function renderHeader() {
    document.getElementById("net-name").textContent = DATA ? DATA.network : "";
    document.getElementById("net-file").textContent = DATA && DATA.file ? DATA.file : "";
    var box = document.getElementById("totals");
    var warn = document.getElementById("warnings");
    if (!DATA) { box.textContent = ""; warn.innerHTML = ""; return; }
    var t = DATA.totals, m = t.memory_bytes;
    box.innerHTML = "input <b>" + esc(DATA.input.name) + ": " + shape(DATA.input.shape) + "</b> &middot; <b>" +
      num(t.params) + "</b> params (" + human(t.params) + (t.frozen_params ? ", " + num(t.frozen_params) + " frozen" : "") +
      ") &middot; <b>" + num(t.macs) + "</b> MACs (" + human(t.macs) + ") &middot; " + num(t.activations) +
      " activations &middot; memory: params " + bytes(m.params) + ", forward " + bytes(m.forward) +
      ", training " + bytes(m.training) + " (batch 1, " + esc(DATA.dtype) + ")";
    warn.innerHTML = DATA.warnings.map(function (w) { return "<div>" + esc(w) + "</div>"; }).join("");
  }

  // -- the drawing: geometry ---------------------------------------------------------------------
  function geom(node) {
    if (node.tagName === "path") {
      var tokens = node.getAttribute("d").match(/[A-Za-z]|-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?/gi) || [];
      var segs = [], cur = null;
      tokens.forEach(function (t) {
        if (/[A-Za-z]/.test(t)) { cur = { c: t, v: [] }; segs.push(cur); } else if (cur) { cur.v.push(parseFloat(t)); }
      });
      return { el: node, segs: segs };
    }
    if (node.tagName === "polygon" || node.tagName === "polyline") {
      return { el: node, pts: node.getAttribute("points").trim().split(/[\s,]+/).map(Number) };
    }
    if (node.tagName === "ellipse") {
      return { el: node, cy: parseFloat(node.getAttribute("cy")) };
    }
    return { el: node, y: parseFloat(node.getAttribute("y")) };
  }
  function warpShape(s, f) {              // every point through f (y only)
    if (s.segs) {
      s.el.setAttribute("d", s.segs.map(function (seg) {
        var out = [];
        for (var i = 0; i + 1 < seg.v.length; i += 2) { out.push(seg.v[i] + "," + f(seg.v[i + 1])); }
        return seg.c + out.join(" ");
      }).join(""));
    } else if (s.pts) {
      var out = [];
      for (var i = 0; i + 1 < s.pts.length; i += 2) { out.push(s.pts[i] + "," + f(s.pts[i + 1])); }
      s.el.setAttribute("points", out.join(" "));
    } else if (s.cy !== undefined) {
      s.el.setAttribute("cy", f(s.cy));
    } else if (!isNaN(s.y)) {
      s.el.setAttribute("y", f(s.y));
    }
  }
  function shiftShape(s, f) {             // the whole shape moved by f at its centre (arrowheads)
    if (!s.pts) { warpShape(s, f); return; }
    var ys = s.pts.filter(function (_, i) { return i % 2 === 1; });
    var cy = (Math.min.apply(null, ys) + Math.max.apply(null, ys)) / 2, dy = f(cy) - cy;
    warpShape(s, function (y) { return y + dy; });
  }

  function initDrawing() {
    var host = document.getElementById("drawing");
    var svg = host.querySelector("svg");
    D = { svg: null, nodes: {}, clusters: {}, edges: [], overlay: null };
    if (!svg) {
      if (payload.note || !DATA) { host.innerHTML = '<p class="note">' + esc(payload.note || "no network yet") + "</p>"; }
      return;
    }
    D.svg = svg;
    D.graph = svg.querySelector("g.graph") || svg;
    D.width = parseFloat(svg.getAttribute("width"));
    D.height = parseFloat(svg.getAttribute("height"));
    D.viewBox = (svg.getAttribute("viewBox") || "0 0 " + D.width + " " + D.height).split(/[\s,]+/).map(Number);
    D.unit = /pt$/.test(svg.getAttribute("width") || "") ? "pt" : "px";
    var shift = /translate\(\s*([-\d.e]+)/.exec(D.graph.getAttribute("transform") || "");
    D.dx = shift ? parseFloat(shift[1]) : 0;        // graph x + dx = drawing x
    svg.querySelectorAll("g.node").forEach(function (g) {
      var name = titleOf(g), b = g.getBBox();
      D.nodes[name] = { g: g, top: b.y, bottom: b.y + b.height, cy: b.y + b.height / 2 };
      g.addEventListener("click", function (ev) { ev.stopPropagation(); select(name); });
    });
    svg.querySelectorAll("g.cluster").forEach(function (g) {
      var path = titleOf(g).replace(/^cluster_/, ""), b = g.getBBox();
      var c = { g: g, path: path, top: b.y, bottom: b.y + b.height, left: b.x, right: b.x + b.width, shapes: [] };
      g.querySelectorAll("path, polygon, text").forEach(function (s) { c.shapes.push(geom(s)); });
      c.toggle = toggleButton(b.x + b.width - 17, b.y + 3, "\u2212", "fold " + path, function () { fold(path); });
      g.appendChild(c.toggle);
      D.clusters[path] = c;
    });
    svg.querySelectorAll("g.edge").forEach(function (g) {
      var t = titleOf(g), i = t.indexOf("->");
      var e = { g: g, from: t.slice(0, i), to: t.slice(i + 2), lines: [], heads: [] };
      g.querySelectorAll("path").forEach(function (s) { e.lines.push(geom(s)); });
      g.querySelectorAll("polygon, text").forEach(function (s) { e.heads.push(geom(s)); });
      D.edges.push(e);
    });
    D.overlay = el("g", { "class": "folds" }, D.graph);
  }

  function toggleButton(x, y, label, title, action) {
    var g = el("g", { "class": "fold-toggle", transform: "translate(" + x + "," + y + ")" });
    el("title", {}, g).textContent = title;
    el("rect", { x: 0, y: 0, width: 14, height: 14, rx: 2 }, g);
    var t = el("text", { x: 7, y: 11, "text-anchor": "middle" }, g);
    t.textContent = label;
    g.addEventListener("click", function (ev) { ev.stopPropagation(); action(); });
    return g;
  }

  // -- the drawing: folding ----------------------------------------------------------------------
  function foldedOutermost() {
    return Array.from(state.folded).filter(function (p) {
      if (!DATA.blocks[p]) { return false; }
      var parts = p.split(".");
      for (var i = 1; i < parts.length; i++) { if (state.folded.has(parts.slice(0, i).join("."))) { return false; } }
      return true;
    }).sort();
  }
  function representative(name, folded) {       // the folded block that hides a layer, or the layer
    var L = byName[name];
    if (!L) { return name; }
    var paths = enclosing(L.scope);
    for (var i = 0; i < paths.length; i++) { if (folded.has(paths[i])) { return "block:" + paths[i]; } }
    return name;
  }
  function related(a, b) { return a === b || a.indexOf(b + ".") === 0 || b.indexOf(a + ".") === 0; }

  function layout() {
    if (!D || !D.svg) { return; }
    var outer = foldedOutermost(), folded = new Set(outer);
    var bands = [], boxes = [];
    outer.forEach(function (p) {
      var c = D.clusters[p];
      if (!c) { return; }
      var overlaps = function (top, bottom) { return top < c.bottom - 1 && bottom > c.top + 1; };
      var crowded = Object.keys(D.nodes).some(function (n) {
        var L = byName[n], paths = L ? enclosing(L.scope) : [];
        return paths.indexOf(p) < 0 && representative(n, folded) === n && overlaps(D.nodes[n].top, D.nodes[n].bottom);
      }) || Object.keys(D.clusters).some(function (q) {
        return !related(p, q) && overlaps(D.clusters[q].top, D.clusters[q].bottom);
      });
      var band = { top: c.top, bottom: c.bottom, newH: Math.min(FOLD_H + 12, c.bottom - c.top) };
      if (!crowded) { bands.push(band); }
      boxes.push(c);
    });
    bands.sort(function (a, b) { return a.top - b.top; });
    var f = function (y) {
      var shift = 0;
      for (var i = 0; i < bands.length; i++) {
        var b = bands[i];
        if (y <= b.top) { return y - shift; }
        if (y < b.bottom) { return b.top - shift + (y - b.top) * (b.newH / (b.bottom - b.top)); }
        shift += (b.bottom - b.top) - b.newH;
      }
      return y - shift;
    };
    var saved = bands.reduce(function (s, b) { return s + (b.bottom - b.top) - b.newH; }, 0);
    Object.keys(D.nodes).forEach(function (n) {
      var node = D.nodes[n], hidden = representative(n, folded) !== n;
      node.g.style.display = hidden ? "none" : "";
      node.g.setAttribute("transform", "translate(0," + (f(node.cy) - node.cy) + ")");
    });
    Object.keys(D.clusters).forEach(function (p) {
      var c = D.clusters[p];
      var hidden = enclosing(p.split(".")).some(function (q) { return folded.has(q); });
      c.g.style.display = hidden ? "none" : "";
      c.shapes.forEach(function (s) { warpShape(s, f); });
      c.toggle.setAttribute("transform", "translate(" + (c.right - 17) + "," + (f(c.top) + 3) + ")");
    });
    while (D.overlay.firstChild) { D.overlay.removeChild(D.overlay.firstChild); }
    var placed = {};
    boxes.forEach(function (c) { placed[c.path] = foldedBox(c, f(c.top) + 6); });
    D.edges.forEach(function (e) {
      var a = representative(e.from, folded), b = representative(e.to, folded);
      var from = a.indexOf("block:") === 0 ? placed[a.slice(6)] : null;
      var to = b.indexOf("block:") === 0 ? placed[b.slice(6)] : null;
      e.g.style.display = a === b && from ? "none" : "";
      if (!from && !to) {
        e.lines.forEach(function (s) { warpShape(s, f); });
        e.heads.forEach(function (s) { shiftShape(s, f); });
        return;
      }
      rewire(e, from, to, f);
    });
    var vb = D.viewBox.slice();
    vb[3] = D.viewBox[3] - saved;
    D.svg.setAttribute("viewBox", vb.join(" "));
    D.svg.setAttribute("width", (D.width * state.zoom) + D.unit);
    D.svg.setAttribute("height", ((D.height - saved) * state.zoom) + D.unit);
    highlight();
  }

  function rewire(e, from, to, f) {      // an edge that enters or leaves a folded box: to the box
    var segs = e.lines[0].segs, first = segs[0].v, last = segs[segs.length - 1].v;
    var sx = from ? from.cx : first[0], sy = from ? from.bottom : f(first[1]);
    var ex = to ? to.cx : last[last.length - 2], ey = to ? to.top - 9 : f(last[last.length - 1]);
    var dy = (ey - sy) / 2;
    e.lines[0].el.setAttribute("d", "M" + sx + "," + sy + "C" + sx + "," + (sy + dy) + " " + ex + "," + (ey - dy) +
      " " + ex + "," + ey);
    e.lines.slice(1).forEach(function (s) { s.el.setAttribute("d", ""); });
    e.heads.forEach(function (s) {
      if (to && s.pts) {
        s.el.setAttribute("points", (ex - 3.5) + "," + ey + " " + (ex + 3.5) + "," + ey + " " + ex + "," + (ey + 9) +
          " " + (ex - 3.5) + "," + ey);
      } else {
        shiftShape(s, f);
      }
    });
  }

  function foldedBox(c, y) {
    var b = DATA.blocks[c.path];
    var line1 = blockLabel(c.path);
    var line2 = b ? shape(b.output_shape) + " \u00b7 " + human(b.params) + " params \u00b7 " + human(b.macs) + " MACs \u00b7 " +
      b.layers.length + " layers" : "";
    var width = Math.min(D.viewBox[2] - 8, Math.max(150, 6.2 * Math.max(line1.length, line2.length) + 34));
    var lo = D.viewBox[0] - D.dx + 4, hi = D.viewBox[0] + D.viewBox[2] - D.dx - 4;   // inside the drawing
    var x = Math.max(lo, Math.min((c.left + c.right) / 2 - width / 2, hi - width));
    var g = el("g", { "class": "folded", "data-block": c.path }, D.overlay);
    el("title", {}, g).textContent = c.path + " (folded; click + to unfold)";
    el("rect", { "class": "fold-box", x: x, y: y, width: width, height: FOLD_H, rx: 6 }, g);
    var t1 = el("text", { x: x + width / 2, y: y + 18, "text-anchor": "middle", "font-size": 12, "font-weight": "bold" }, g);
    t1.textContent = line1;
    var t2 = el("text", { x: x + width / 2, y: y + 34, "text-anchor": "middle", "font-size": 10 }, g);
    t2.textContent = line2;
    g.appendChild(toggleButton(x + width - 17, y + 3, "+", "unfold " + c.path, function () { unfold(c.path); }));
    g.addEventListener("click", function (ev) { ev.stopPropagation(); selectBlock(c.path); });
    g.addEventListener("dblclick", function (ev) { ev.stopPropagation(); unfold(c.path); });
    return { cx: x + width / 2, top: y, bottom: y + FOLD_H };
  }

  function fold(path) { state.folded.add(path); refreshFolds(); }
  function unfold(path) {
    state.folded.delete(path);
    Array.from(state.folded).forEach(function (p) { if (path.indexOf(p + ".") === 0) { state.folded.delete(p); } });
    refreshFolds();
  }
  function foldAll() {
    Object.keys(DATA ? DATA.blocks : {}).forEach(function (p) { if (DATA.blocks[p].scope.length === 0) { state.folded.add(p); } });
    refreshFolds();
  }
  function unfoldAll() { state.folded.clear(); refreshFolds(); }
  function refreshFolds() { layout(); foldTable(); }

  function highlight() {
    if (!D || !D.svg) { return; }
    D.svg.querySelectorAll(".selected").forEach(function (g) { g.classList.remove("selected"); });
    var folded = new Set(foldedOutermost());
    var target = state.selected ? representative(state.selected, folded) : (state.block ? "block:" + state.block : null);
    if (target && target.indexOf("block:") === 0) {
      var path = target.slice(6);
      var box = D.overlay.querySelector('g.folded[data-block="' + path.replace(/"/g, '\\"') + '"]');
      if (box) { box.classList.add("selected"); }
    } else if (target && D.nodes[target]) {
      D.nodes[target].g.classList.add("selected");
    }
  }

  // -- the table ---------------------------------------------------------------------------------
  function renderTable() {
    var body = document.querySelector("#summary tbody");
    body.innerHTML = "";
    if (!DATA) { return; }
    var opened = [];
    DATA.layers.forEach(function (L) {
      var scope = L.scope, common = 0;
      while (common < Math.min(scope.length, opened.length) && scope[common] === opened[common]) { common++; }
      for (var depth = common; depth < scope.length; depth++) {
        var path = scope.slice(0, depth + 1).join("."), b = DATA.blocks[path] || { params: 0, macs: 0, activations: 0 };
        var row = body.insertRow();
        row.className = "block";
        row.dataset.block = path;
        row.dataset.inside = JSON.stringify(enclosing(scope.slice(0, depth)));
        row.innerHTML = '<td colspan="3" style="padding-left:' + (10 + 14 * depth) + 'px"><span class="toggle"></span>' +
          esc(blockLabel(path)) + '</td><td class="num">' + (b.params ? "[" + num(b.params) + "]" : "") +
          '</td><td class="num">' + (b.macs ? "[" + num(b.macs) + "]" : "") + '</td><td class="num">' +
          (b.activations ? "[" + num(b.activations) + "]" : "") + "</td><td></td><td></td>";
        row.addEventListener("click", (function (p) {
          return function () { if (state.folded.has(p)) { unfold(p); } else { fold(p); } selectBlock(p); };
        })(path));
      }
      opened = scope;
      var f = L.receptive_field;
      var r = body.insertRow();
      r.className = "layer";
      r.dataset.name = L.name;
      r.dataset.inside = JSON.stringify(enclosing(scope));
      r.innerHTML = '<td style="padding-left:' + (10 + 14 * scope.length) + 'px">' + esc(L.short) + "</td><td>" +
        esc(L.describe) + "</td><td>" + shape(L.output_shape) + '</td><td class="num">' +
        (L.params ? num(L.params) + (L.trainable_params === L.params ? "" : " (frozen)") : "-") + '</td><td class="num">' +
        (L.macs ? num(L.macs) : "-") + '</td><td class="num">' + (L.activations ? num(L.activations) : "-") +
        '</td><td class="num">' + (L.activations ? bytes(L.memory.output) : "-") + "</td><td" +
        (f && !f.aligned ? ' class="unaligned"' : "") + ">" +
        (f ? shape(f.size) + "/" + f.stride.map(fracText).join("x") + (f.aligned ? "" : " !") : "-") + "</td>";
      r.addEventListener("click", function () { select(L.name); });
    });
    foldTable();
  }
  function foldTable() {
    document.querySelectorAll("#summary tbody tr").forEach(function (r) {
      var inside = JSON.parse(r.dataset.inside || "[]");
      r.style.display = inside.some(function (p) { return state.folded.has(p); }) ? "none" : "";
      if (r.dataset.block) { r.querySelector(".toggle").textContent = state.folded.has(r.dataset.block) ? "\u25b8" : "\u25be"; }
      r.classList.toggle("selected", !!state.selected && r.dataset.name === state.selected);
    });
  }

  // -- details -----------------------------------------------------------------------------------
  function row(label, html) { return "<dt>" + esc(label) + "</dt><dd>" + html + "</dd>"; }
  function whereText(w) {
    if (!w) { return ""; }
    return row("defined at", "<code>" + esc((w.file || "<text>") + ":" + w.line + ":" + w.col) + "</code>" +
      (w.source !== null && w.source !== undefined ? '<pre class="source">' + esc(w.source.trim()) + "</pre>" : ""));
  }

  function select(name) {
    if (!byName[name]) { return; }
    if (state.selected !== name) { state.unit = null; }
    state.selected = name;
    state.block = null;
    renderDetails();
    highlight();
    foldTable();
    try { history.replaceState(null, "", "#" + encodeURIComponent(name)); } catch (e) { /* file:// in some browsers */ }
  }
  function selectBlock(path) {
    state.selected = null;
    state.block = path;
    renderDetails();
    highlight();
    foldTable();
  }

  function renderDetails() {
    var box = document.getElementById("details");
    if (state.block && DATA.blocks[state.block]) {
      var b = DATA.blocks[state.block];
      box.innerHTML = "<h2>" + esc(state.block) + '<span class="op">' + esc(blockLabel(state.block).split(": ")[1]) +
        "</span></h2><dl>" + whereText(b.where) + row("layers", num(b.layers.length) + " (" + b.layers.map(function (n) {
          return '<a href="#" data-layer="' + esc(n) + '">' + esc(n.slice(state.block.length + 1)) + "</a>";
        }).join(", ") + ")") + row("output", esc(b.output) + " &middot; " + shape(b.output_shape)) +
        row("parameters", num(b.params)) + row("MACs", num(b.macs) + " (FLOPs " + num(2 * b.macs) + ")") +
        row("activations", num(b.activations) + " values, " + bytes(b.activations * DATA.bytes)) + "</dl>";
      box.querySelectorAll("a[data-layer]").forEach(function (a) {
        a.addEventListener("click", function (ev) { ev.preventDefault(); select(a.dataset.layer); });
      });
      return;
    }
    var L = byName[state.selected];
    if (!L) {
      box.innerHTML = '<p class="hint">Click a layer in the drawing or the table to see its details and its receptive field.</p>';
      return;
    }
    var params = Object.keys(L.param_shapes).map(function (k) { return k + " " + shape(L.param_shapes[k]); }).join(", ");
    var state_ = Object.keys(L.state_shapes).map(function (k) { return k + " " + shape(L.state_shapes[k]); }).join(", ");
    var config = Object.keys(L.config).filter(function (k) { return k !== "weights" || L.config[k] !== null; })
      .map(function (k) { return "<code>" + esc(k) + "=" + esc(value(L.config[k], k)) + "</code>"; }).join(" ");
    var inputs = L.inputs.map(function (n, i) {
      return '<a href="#" data-layer="' + esc(n) + '">' + esc(n) + "</a> " + shape(L.input_shapes[i] || byName[n].output_shape);
    }).join("<br>");
    var f = L.field;
    var fieldText = f ? shape(f.size) + ", jump " + f.stride.map(fracText).join("x") + ", padding " +
      f.padding.map(fracText).join("x") + (f.aligned ? "" : ' <span class="unaligned">(paths not aligned)</span>')
      : (L.output_shape.length >= 2 ? "-" : "the whole input");
    var block = L.scope.length ? enclosing(L.scope).map(function (p) { return esc(blockLabel(p)); }).join(" &rsaquo; ") : "";
    box.innerHTML = "<h2>" + esc(L.name) + '<span class="op">' + esc(L.describe) + "</span></h2><dl>" +
      row("as written", "<code>" + esc(L.call) + "</code>") + whereText(L.where) + (block ? row("block", block) : "") +
      (inputs ? row("inputs", inputs) : "") + row("output", shape(L.output_shape)) +
      (config && L.op !== "input" ? row("arguments", config) : "") +
      row("parameters", L.params ? num(L.params) + " (" + esc(params) + ")" + (L.trainable ? "" : ", frozen") : "none") +
      (state_ ? row("state", esc(state_)) : "") +
      row("MACs", L.macs ? num(L.macs) + " (FLOPs " + num(2 * L.macs) + ")" : "-") +
      row("activations", L.activations ? num(L.activations) + " values" : "none (computed in place)") +
      row("memory", "output " + bytes(L.memory.output) + ", parameters " + bytes(L.memory.params) + " (" + esc(DATA.dtype) + ", per sample)") +
      row("receptive field", fieldText) + "</dl>" + fieldGrids(L);
    box.querySelectorAll("a[data-layer]").forEach(function (a) {
      a.addEventListener("click", function (ev) { ev.preventDefault(); select(a.dataset.layer); });
    });
    var out = box.querySelector("svg.grid.clickable");
    if (out) {
      out.addEventListener("click", function (ev) {
        var r = out.getBoundingClientRect(), dims = JSON.parse(out.dataset.dims), cell = Number(out.dataset.cell);
        var col = Math.floor((ev.clientX - r.left) / cell), rowi = Math.floor((ev.clientY - r.top) / Number(out.dataset.cellH));
        state.unit = dims.length === 2 ? [Math.min(rowi, dims[0] - 1), Math.min(col, dims[1] - 1)] : [Math.min(col, dims[0] - 1)];
        renderDetails();
      });
    }
  }

  // -- receptive field on the input grid ------------------------------------------------------------
  function fieldBox(f, unit, dims) {    // per axis [first, last] (unclipped) and clipped
    var raw = [], clipped = [];
    for (var a = 0; a < dims.length; a++) {
      var first, last;
      if (f.units) {                    // the analysis's exact per-unit field (periodic after upsampling)
        var u = f.units[a], q = Math.floor(unit[a] / u.period), r = unit[a] - q * u.period;
        first = u.low[r] + q * u.shift; last = u.high[r] + q * u.shift;
      } else {
        var lo = unit[a] * frac(f.stride[a]) - frac(f.padding[a]);
        var hi = lo + frac(f.extent[a]) - 1;
        first = Math.ceil(lo - 1e-9); last = Math.floor(hi + 1e-9);
      }
      raw.push([first, last]);
      clipped.push([Math.max(first, 0), Math.min(last, dims[a] - 1)]);
    }
    return { raw: raw, clipped: clipped };
  }
  function grid(dims, opts) {
    var h = dims.length === 2 ? dims[0] : 1, w = dims.length === 2 ? dims[1] : dims[0];
    var margin = opts.margin || 0;
    var cell = Math.min(12, 156 / Math.max(h + 2 * margin, w + 2 * margin));   // pixels per position
    var ch = dims.length === 2 ? cell : Math.max(cell, 16);                     // a sequence: a strip
    var W = (w + 2 * margin) * cell, H = h * ch + 2 * margin * cell, ox = margin * cell, oy = margin * cell;
    var s = '<svg class="grid' + (opts.clickable ? " clickable" : "") + '" width="' + W + '" height="' + H +
      '" data-cell="' + cell + '" data-cell-h="' + ch + '" data-dims="' + esc(JSON.stringify(dims)) +
      '" viewBox="0 0 ' + W + " " + H + '">';
    if (margin) { s += '<rect class="pad" x="0.5" y="0.5" width="' + (W - 1) + '" height="' + (H - 1) + '"/>'; }
    s += '<rect class="frame" x="' + ox + '" y="' + oy + '" width="' + w * cell + '" height="' + h * ch + '"/>';
    if (cell >= 4 && Math.max(h, w) <= 64) {
      for (var i = 1; i < w; i++) { s += '<line class="cell-line" x1="' + (ox + i * cell) + '" y1="' + oy + '" x2="' + (ox + i * cell) + '" y2="' + (oy + h * ch) + '"/>'; }
      for (var j = 1; j < h; j++) { s += '<line class="cell-line" x1="' + ox + '" y1="' + (oy + j * ch) + '" x2="' + (ox + w * cell) + '" y2="' + (oy + j * ch) + '"/>'; }
    }
    function rect(cls, box) {           // box: [[r0, r1], [c0, c1]] (or [[c0, c1]]) in positions, inclusive
      var rows = dims.length === 2 ? box[0] : [0, 0], cols = dims.length === 2 ? box[1] : box[0];
      return '<rect class="' + cls + '" x="' + (ox + cols[0] * cell) + '" y="' + (oy + rows[0] * ch) + '" width="' +
        (cols[1] - cols[0] + 1) * cell + '" height="' + (rows[1] - rows[0] + 1) * ch + '"/>';
    }
    if (opts.boxOut) { s += rect("box-out", opts.boxOut); }
    if (opts.box) { s += rect("box", opts.box); }
    if (opts.unit) {
      s += rect("unit", opts.unit.map(function (u) { return [u, u]; }));
      if (cell < 6) {                   // a ring, so that one small cell can be found
        var cx = ox + ((dims.length === 2 ? opts.unit[1] : opts.unit[0]) + 0.5) * cell;
        var cy = oy + ((dims.length === 2 ? opts.unit[0] : 0) + 0.5) * ch;
        s += '<circle class="unit-ring" cx="' + cx + '" cy="' + cy + '" r="6"/>';
      }
    }
    return s + "</svg>";
  }
  function fieldGrids(L) {
    var input = DATA.input.shape;
    if (input.length < 2) { return ""; }
    var dims = input.slice(1), outDims = L.output_shape.slice(1);
    var all = dims.map(function (n) { return [0, n - 1]; });
    if (!L.field || outDims.length !== dims.length) {
      return '<div class="grids"><figure><figcaption>input ' + shape(input) + ": all of it</figcaption>" +
        grid(dims, { box: all }) + "</figure></div>";
    }
    var unit = state.unit && state.unit.length === outDims.length && state.unit.every(function (u, i) { return u < outDims[i]; })
      ? state.unit : outDims.map(function (n) { return Math.floor((n - 1) / 2); });
    state.unit = unit;
    var b = fieldBox(L.field, unit, dims);
    var margin = Math.min(8, Math.max(0, Math.max.apply(null, b.raw.map(function (r, a) {
      return Math.max(-r[0], r[1] - (dims[a] - 1));
    }))));
    var clipped = b.raw.some(function (r, a) { return r[0] < 0 || r[1] > dims[a] - 1; });
    var outText = b.raw.map(function (r) { return r[0] + ".." + r[1]; }).join(" x ");
    return '<div class="grids"><figure><figcaption>' + esc(L.short) + " " + shape(outDims) + ": unit " + unit.join(",") +
      " (click another)</figcaption>" + grid(outDims, { unit: unit, clickable: true }) + "</figure>" +
      "<figure><figcaption>input " + shape(input) + ": sees " + b.clipped.map(function (r) { return r[0] + ".." + r[1]; }).join(" x ") +
      (clipped ? " (" + outText + " with the padding)" : "") + "</figcaption>" +
      grid(dims, { box: b.clipped, boxOut: clipped ? b.raw.map(function (r, a) {
        return [Math.max(r[0], -margin), Math.min(r[1], dims[a] - 1 + margin)];
      }) : null, margin: clipped ? margin : 0 }) + "</figure></div>";
  }

  // -- data, buttons -----------------------------------------------------------------------------
  function setData(data, svg, note) {
    DATA = data;
    payload.note = note || null;
    byName = {};
    (DATA ? DATA.layers : []).forEach(function (L) { byName[L.name] = L; });
    Array.from(state.folded).forEach(function (p) { if (!DATA || !DATA.blocks[p]) { state.folded.delete(p); } });
    if (svg !== undefined) {
      document.getElementById("drawing").innerHTML = svg || "";
    }
    initDrawing();
    renderHeader();
    renderTable();
    layout();
    if (state.selected && byName[state.selected]) { select(state.selected); } else if (state.block && DATA && DATA.blocks[state.block]) {
      selectBlock(state.block);
    } else { state.selected = null; state.block = null; if (DATA) { renderDetails(); } }
  }

  function zoom(factor) {
    state.zoom = Math.max(0.2, Math.min(4, state.zoom * factor));
    layout();
  }

  document.getElementById("fold-all").addEventListener("click", foldAll);
  document.getElementById("unfold-all").addEventListener("click", unfoldAll);
  document.getElementById("zoom-in").addEventListener("click", function () { zoom(1.25); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(0.8); });

  window.cnnspec = { setData: setData, select: select, selectBlock: selectBlock, fold: fold, unfold: unfold,
                     foldAll: foldAll, unfoldAll: unfoldAll, state: state, payload: payload,
                     data: function () { return DATA; } };
  if (DATA) {
    setData(DATA);
    var wanted = decodeURIComponent((location.hash || "").slice(1));
    if (wanted && byName[wanted]) { select(wanted); }
  }
})();
