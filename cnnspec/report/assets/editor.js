/* The editor of `cnnspec serve`: the .cnn text, analysed again by the server as it is typed
   (debounced), errors marked at their line and column, the page (report.js) redrawn from each
   good analysis. The text stays in the browser until "save" writes it back to its file. */
(function () {
  "use strict";
  var api = window.cnnspec;
  var source = document.getElementById("source");
  var highlight = document.getElementById("highlight");
  var gutter = document.getElementById("gutter");
  var errors = document.getElementById("errors");
  var status = document.getElementById("editor-status");
  var files = document.getElementById("file-list");
  var drawingBox = document.getElementById("drawing");
  var DEBOUNCE_MS = 300;
  var current = { path: api.payload.open || null, saved: null, error: null, seq: 0, timer: null };

  function esc(s) {
    return String(s).replace(/[&<>]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;" }[c]; });
  }
  function request(method, url, body) {
    var init = { method: method, headers: { "X-Cnnspec": "1" } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(url, init).then(function (r) {
      return r.json().then(function (v) { v.httpStatus = r.status; return v; });
    });
  }

  // -- the text, its error and its line numbers ----------------------------------------------------
  function errorHere() {
    var e = current.error;
    if (!e || !e.line) { return null; }
    var mine = !e.file || e.file === (current.path || "untitled.cnn");
    return mine ? e : null;
  }
  function render() {
    var text = source.value, lines = text.split("\n"), e = errorHere();
    var out = lines.map(function (line, i) {
      if (!e || i + 1 !== e.line) { return esc(line); }
      var start = Math.max(0, Math.min((e.col || 1) - 1, line.length));
      var stop = Math.min(line.length, start + Math.max(1, e.width || 1));
      var marked = start < line.length ? esc(line.slice(start, stop)) : " ";
      return '<span class="error-line">' + esc(line.slice(0, start)) + '<span class="error-mark" title="' +
        esc(e.message).replace(/"/g, "&quot;") + '">' + marked + "</span>" + esc(line.slice(stop)) + "</span>";
    });
    highlight.innerHTML = out.join("\n") + "\n";
    gutter.innerHTML = lines.map(function (_, i) {
      return e && i + 1 === e.line ? '<span class="bad" title="' + esc(e.message).replace(/"/g, "&quot;") + '">' + (i + 1) + "</span>" : String(i + 1);
    }).join("\n") + "\n";
    syncScroll();
    var dirty = current.saved !== null && text !== current.saved;
    status.textContent = (current.path || "untitled.cnn") + (dirty ? " \u2022 unsaved" : current.saved === null ? " (new)" : "");
  }
  function syncScroll() {
    highlight.scrollTop = source.scrollTop;
    highlight.scrollLeft = source.scrollLeft;
    gutter.scrollTop = source.scrollTop;
  }

  // -- analysis ----------------------------------------------------------------------------------
  function schedule() {
    clearTimeout(current.timer);
    current.timer = setTimeout(analyse, DEBOUNCE_MS);
  }
  function analyse() {
    var seq = ++current.seq;
    errors.className = "";
    return request("POST", "/api/analyse", { path: current.path || "untitled.cnn", text: source.value }).then(function (r) {
      if (seq !== current.seq) { return; }              // a newer text is on its way
      if (r.ok) {
        current.error = null;
        drawingBox.classList.remove("stale");
        api.setData(r.data, r.svg, r.note);
        var t = r.data.totals;
        errors.className = "ok";
        errors.textContent = "ok: " + r.data.network + ", " + (r.data.layers.length - 1) + " layers, " +
          t.params.toLocaleString("en-US") + " params, " + t.macs.toLocaleString("en-US") + " MACs" +
          (r.data.warnings.length ? "\n" + r.data.warnings.map(function (w) { return "warning: " + w; }).join("\n") : "");
      } else {
        current.error = r.error;
        drawingBox.classList.add("stale");
        errors.className = "bad";
        errors.textContent = r.error.rendered || r.error.message;
      }
      render();
      document.body.dataset.analysed = String(seq);      // for tests: which analysis is shown
    }).catch(function (err) {
      if (seq !== current.seq) { return; }
      errors.className = "bad";
      errors.textContent = "error: the server did not answer (" + err + ")";
    });
  }

  // -- files -------------------------------------------------------------------------------------
  function open(path) {
    if (current.saved !== null && source.value !== current.saved && !window.confirm("Discard the unsaved changes?")) {
      files.value = current.path || "";
      return;
    }
    request("GET", "/api/file?path=" + encodeURIComponent(path)).then(function (r) {
      if (r.httpStatus !== 200) { errors.className = "bad"; errors.textContent = r.error.rendered; return; }
      current.path = r.path;
      current.saved = r.text;
      source.value = r.text;
      source.scrollTop = 0;
      files.value = r.path;
      render();
      analyse();
    });
  }
  function save() {
    var path = current.path;
    if (!path) {
      path = window.prompt("Save as (a .cnn file inside the served folder):", "untitled.cnn");
      if (!path) { return; }
    }
    request("POST", "/api/save", { path: path, text: source.value }).then(function (r) {
      if (!r.ok) { errors.className = "bad"; errors.textContent = r.error.rendered; return; }
      current.path = path;
      current.saved = source.value;
      render();
      listFiles();
    });
  }
  function listFiles() {
    request("GET", "/api/files").then(function (r) {
      var names = r.files || [];
      if (current.path && names.indexOf(current.path) < 0) { names = [current.path].concat(names); }
      files.innerHTML = (current.path ? "" : '<option value="">untitled.cnn</option>') + names.map(function (n) {
        return '<option value="' + esc(n).replace(/"/g, "&quot;") + '">' + esc(n) + "</option>";
      }).join("");
      files.value = current.path || "";
    });
  }

  // -- keys --------------------------------------------------------------------------------------
  source.addEventListener("input", function () { render(); schedule(); });
  source.addEventListener("scroll", syncScroll);
  source.addEventListener("keydown", function (ev) {
    if (ev.key === "Tab" && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      var s = source.selectionStart, e = source.selectionEnd;
      source.setRangeText("    ", s, e, "end");
      render();
      schedule();
    } else if ((ev.ctrlKey || ev.metaKey) && (ev.key === "s" || ev.key === "S")) {
      ev.preventDefault();
      save();
    }
  });
  document.getElementById("save").addEventListener("click", save);
  files.addEventListener("change", function () { if (files.value) { open(files.value); } });
  window.addEventListener("beforeunload", function (ev) {
    if (current.saved !== null ? source.value !== current.saved : source.value !== api.payload.example) {
      ev.preventDefault();
      ev.returnValue = "";
    }
  });

  api.editor = { analyse: analyse, open: open, save: save, current: current };
  listFiles();
  if (current.path) {
    open(current.path);
  } else {
    source.value = api.payload.example || "";
    render();
    analyse();
  }
})();
