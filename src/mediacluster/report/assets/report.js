/* mediacluster report: canvas map (zoom, pan, hover, filter) and tuning plots. No dependencies. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("mc-data").textContent);
  function dec(b64, T) {
    var s = atob(b64), n = s.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = s.charCodeAt(i);
    return new T(u.buffer);
  }
  var N = D.n, X = dec(D.x, Float32Array), Y = dec(D.y, Float32Array), C = dec(D.c, Int32Array), TI = dec(D.t, Int32Array);
  var colorOf = {}, nameOf = {};
  D.clusters.forEach(function (c) { colorOf[c.id] = c.color; nameOf[c.id] = c.name; });
  colorOf[-1] = D.noise_color; colorOf[-2] = D.outlier_color;
  nameOf[-1] = "noise"; nameOf[-2] = "outlier";

  var state = { filter: null, scale: 1, tx: 0, ty: 0, drawn: 0, highlighted: 0, redraws: 0 };
  window.mcReport = state;

  var canvas = document.getElementById("map"), ctx = canvas.getContext("2d");
  var tip = document.getElementById("tip"), tipimg = document.getElementById("tipimg"), tiptext = document.getElementById("tiptext");
  var W = 0, H = 0, dpr = window.devicePixelRatio || 1;

  // bounds and base transform (data -> css pixels)
  var minx = Infinity, maxx = -Infinity, miny = Infinity, maxy = -Infinity;
  for (var i = 0; i < N; i++) {
    if (X[i] < minx) minx = X[i]; if (X[i] > maxx) maxx = X[i];
    if (Y[i] < miny) miny = Y[i]; if (Y[i] > maxy) maxy = Y[i];
  }
  if (!isFinite(minx)) { minx = 0; maxx = 1; miny = 0; maxy = 1; }
  if (maxx - minx < 1e-9) { maxx = minx + 1; }
  if (maxy - miny < 1e-9) { maxy = miny + 1; }
  var base = { s: 1, ox: 0, oy: 0 };

  // drawing order: noise first, clusters, outliers last (on top)
  var order = new Uint32Array(N), k = 0;
  [-1].forEach(function () { for (var i = 0; i < N; i++) if (C[i] === -1) order[k++] = i; });
  var byLabel = [];  // clustered items grouped by label: one canvas path (one fill) per colour
  for (var i2 = 0; i2 < N; i2++) if (C[i2] >= 0) byLabel.push(i2);
  byLabel.sort(function (a, b) { return C[a] - C[b] || a - b; });
  for (var i5 = 0; i5 < byLabel.length; i5++) order[k++] = byLabel[i5];
  byLabel = null;
  for (var i3 = 0; i3 < N; i3++) if (C[i3] === -2) order[k++] = i3;
  for (var i4 = 0; i4 < N; i4++) if (C[i4] < -2) order[k++] = i4;

  // spatial hash in data space for hover
  var G = 128, cellw = (maxx - minx) / G, cellh = (maxy - miny) / G, cells = new Map();
  for (var j = 0; j < N; j++) {
    var gx = Math.min(G - 1, Math.floor((X[j] - minx) / cellw)), gy = Math.min(G - 1, Math.floor((Y[j] - miny) / cellh));
    var key = gx * G + gy, arr = cells.get(key);
    if (!arr) { arr = []; cells.set(key, arr); }
    arr.push(j);
  }

  function resize() {
    var r = canvas.getBoundingClientRect();
    W = Math.max(200, r.width); H = Math.max(200, r.height);
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    var pad = 16, s = Math.min((W - 2 * pad) / (maxx - minx), (H - 2 * pad) / (maxy - miny));
    base.s = s; base.ox = (W - s * (maxx - minx)) / 2 - s * minx; base.oy = (H - s * (maxy - miny)) / 2 + s * maxy;
    draw();
  }
  function sx(x) { return (base.ox + base.s * x) * state.scale + state.tx; }
  function sy(y) { return (base.oy - base.s * y) * state.scale + state.ty; }
  function dataX(px) { return ((px - state.tx) / state.scale - base.ox) / base.s; }
  function dataY(py) { return -((py - state.ty) / state.scale - base.oy) / base.s; }

  function draw() {
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
    // point size: larger for small collections, growing slowly with zoom
    var base_r = Math.max(1.2, Math.min(4.5, 2.2 * Math.pow(3000 / Math.max(N, 1), 0.25)));
    var r = Math.min(8, base_r * Math.sqrt(state.scale));
    var round = N <= 30000 || r >= 3;  // discs when few or zoomed in, squares (much faster) otherwise
    var f = state.filter, drawn = 0, hi = 0, last = null, open = false;
    function flush() { if (open) { ctx.fill(); open = false; } }
    // pass 1: context (filtered-out points) in pale grey
    if (f !== null) {
      ctx.fillStyle = "#e4e6ea"; ctx.beginPath();
      for (var a = 0; a < N; a++) {
        var i = order[a]; if (C[i] === f) continue;
        var x = sx(X[i]), y = sy(Y[i]);
        if (x < -5 || y < -5 || x > W + 5 || y > H + 5) continue;
        ctx.rect(x - r / 2, y - r / 2, r, r); drawn++;
      }
      ctx.fill();
    }
    for (var b = 0; b < N; b++) {
      var p = order[b], c = C[p];
      if (f !== null && c !== f) continue;
      var px = sx(X[p]), py = sy(Y[p]);
      if (px < -5 || py < -5 || px > W + 5 || py > H + 5) continue;
      var col = colorOf[c] || "#888";
      if (col !== last) {
        flush();
        ctx.fillStyle = col; ctx.globalAlpha = c === -1 ? 0.7 : 1; last = col;
        ctx.beginPath(); open = true;
      }
      if (c === -2) {  // outliers: small dark crosses
        var q = r * 0.9;
        ctx.rect(px - q, py - 0.6, 2 * q, 1.2); ctx.rect(px - 0.6, py - q, 1.2, 2 * q);
      } else if (c === -1 || !round) {
        ctx.rect(px - r / 2, py - r / 2, r, r);
      } else {
        ctx.moveTo(px + r * 0.6, py); ctx.arc(px, py, r * 0.6, 0, 6.2832);
      }
      drawn++; hi++;
    }
    flush(); ctx.globalAlpha = 1;
    state.drawn = drawn; state.highlighted = hi; state.redraws++;
  }

  function setFilter(cid) {
    state.filter = (cid === null || cid === undefined || state.filter === cid) ? null : cid;
    canvas.setAttribute("data-filter", state.filter === null ? "all" : String(state.filter));
    document.querySelectorAll(".card").forEach(function (el) {
      el.classList.toggle("selected", state.filter !== null && Number(el.getAttribute("data-cluster")) === state.filter);
    });
    document.querySelectorAll("#legend .item").forEach(function (el) {
      el.classList.toggle("off", state.filter !== null && Number(el.getAttribute("data-id")) !== state.filter);
    });
    document.getElementById("filter-label").textContent = state.filter === null ? "" :
      "showing: " + (nameOf[state.filter] || state.filter) + " (#" + state.filter + ")";
    draw();
  }
  window.mcReport.setFilter = setFilter;

  // legend
  var legend = document.getElementById("legend");
  var entries = D.clusters.map(function (c) { return [c.id, c.name, c.color, c.size]; });
  var cntN = 0, cntO = 0;
  for (var m = 0; m < N; m++) { if (C[m] === -1) cntN++; else if (C[m] === -2) cntO++; }
  if (cntN) entries.push([-1, "noise", D.noise_color, cntN]);
  if (cntO) entries.push([-2, "outliers", D.outlier_color, cntO]);
  entries.forEach(function (e) {
    var s = document.createElement("span"); s.className = "item"; s.setAttribute("data-id", e[0]);
    var sw = document.createElement("span"); sw.className = "swatch" + (e[0] === -2 ? " outlier" : ""); sw.style.background = e[2];
    s.appendChild(sw); s.appendChild(document.createTextNode(e[1] + " (" + e[3].toLocaleString() + ")"));
    s.addEventListener("click", function () { setFilter(e[0]); });
    legend.appendChild(s);
  });

  document.querySelectorAll(".card").forEach(function (el) {
    el.addEventListener("click", function () {
      setFilter(Number(el.getAttribute("data-cluster")));
      document.getElementById("map-section").scrollIntoView({ behavior: "smooth", block: "start" });
    });
    el.addEventListener("keydown", function (ev) { if (ev.key === "Enter") el.click(); });
  });
  document.getElementById("reset").addEventListener("click", function () {
    state.scale = 1; state.tx = 0; state.ty = 0; setFilter(null);
  });

  // zoom and pan
  canvas.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    var z = Math.exp(-ev.deltaY * 0.0015), ns = Math.max(0.5, Math.min(400, state.scale * z));
    z = ns / state.scale;
    state.tx = mx - (mx - state.tx) * z; state.ty = my - (my - state.ty) * z; state.scale = ns;
    draw();
  }, { passive: false });
  var drag = null;
  canvas.addEventListener("pointerdown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, tx: state.tx, ty: state.ty };
    canvas.classList.add("dragging"); canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointerup", function (ev) {
    drag = null; canvas.classList.remove("dragging");
    try { canvas.releasePointerCapture(ev.pointerId); } catch (e) { /* already released */ }
  });
  var pending = false, lastEv = null;
  canvas.addEventListener("pointermove", function (ev) {
    if (drag) {
      state.tx = drag.tx + ev.clientX - drag.x; state.ty = drag.ty + ev.clientY - drag.y;
      tip.hidden = true;
      if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); }
      return;
    }
    lastEv = ev; hover(ev);
  });
  canvas.addEventListener("pointerleave", function () { tip.hidden = true; });

  function nearest(px, py, maxpx) {
    var dx = dataX(px), dy = dataY(py), rad = maxpx / (base.s * state.scale);
    var gx0 = Math.floor((dx - rad - minx) / cellw), gx1 = Math.floor((dx + rad - minx) / cellw);
    var gy0 = Math.floor((dy - rad - miny) / cellh), gy1 = Math.floor((dy + rad - miny) / cellh);
    var best = -1, bd = rad * rad;
    for (var gx = Math.max(0, gx0); gx <= Math.min(G - 1, gx1); gx++) {
      for (var gy = Math.max(0, gy0); gy <= Math.min(G - 1, gy1); gy++) {
        var arr = cells.get(gx * G + gy); if (!arr) continue;
        for (var q = 0; q < arr.length; q++) {
          var i = arr[q];
          if (state.filter !== null && C[i] !== state.filter) continue;
          var ex = X[i] - dx, ey = Y[i] - dy, d = ex * ex + ey * ey;
          if (d < bd) { bd = d; best = i; }
        }
      }
    }
    return best;
  }
  function hover(ev) {
    var r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    var i = nearest(mx, my, 8);
    if (i < 0) { tip.hidden = true; return; }
    if (TI[i] >= 0) { tipimg.src = "thumbs/" + D.thumbs[TI[i]] + ".jpg"; tipimg.style.display = ""; }
    else { tipimg.removeAttribute("src"); tipimg.style.display = "none"; }
    var c = C[i];
    tiptext.textContent = D.paths[i] + "  \u2014  " + (c >= 0 ? (nameOf[c] || "cluster") + " (#" + c + ")" : nameOf[c]);
    tip.hidden = false;
    var tw = 150, left = mx + 14, top = my + 14;
    if (left + 300 > W) left = Math.max(0, mx - 14 - tw - 150);
    if (top + 190 > H) top = Math.max(0, my - 200);
    tip.style.left = left + "px"; tip.style.top = top + "px";
  }

  window.addEventListener("resize", resize);
  resize();

  // ------------------------------------------------------------------ tuning plots (SVG)
  var NS = "http://www.w3.org/2000/svg";
  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var a in attrs) e.setAttribute(a, attrs[a]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3); }
  function scatter(host, title, pts, xl, yl, line, intX) {
    var w = 440, h = 280, ml = 52, mr = 24, mt = 10, mb = 38;
    var box = document.createElement("div"); box.className = "plot";
    var t = document.createElement("div"); t.className = "title"; t.textContent = title; box.appendChild(t);
    var svg = el("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h }, box);
    host.appendChild(box);
    if (!pts.length) { el("text", { x: 20, y: 40, fill: "#888" }, svg).textContent = "no finished trials"; return; }
    var x0 = Math.min.apply(null, pts.map(function (p) { return p[0]; })), x1 = Math.max.apply(null, pts.map(function (p) { return p[0]; }));
    var y0 = Math.min.apply(null, pts.map(function (p) { return p[1]; })), y1 = Math.max.apply(null, pts.map(function (p) { return p[1]; }));
    if (x1 - x0 < 1e-12) { x0 -= 0.5; x1 += 0.5; } if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
    var py = (y1 - y0) * 0.05; y0 -= py; y1 += py;
    function X_(v) { return ml + (v - x0) / (x1 - x0) * (w - ml - mr); }
    function Y_(v) { return h - mb - (v - y0) / (y1 - y0) * (h - mt - mb); }
    el("line", { x1: ml, y1: h - mb, x2: w - mr, y2: h - mb, stroke: "#999" }, svg);
    el("line", { x1: ml, y1: mt, x2: ml, y2: h - mb, stroke: "#999" }, svg);
    var lastTick = null;
    for (var q = 0; q <= 4; q++) {
      var vx = x0 + (x1 - x0) * q / 4, vy = y0 + (y1 - y0) * q / 4;
      if (intX) vx = Math.round(vx);
      if (!intX || vx !== lastTick) {
        el("text", { x: X_(vx), y: h - mb + 14, "font-size": 10, "text-anchor": "middle", fill: "#555" }, svg).textContent = intX ? String(vx) : fmt(vx);
      }
      lastTick = vx;
      el("text", { x: ml - 4, y: Y_(vy) + 3, "font-size": 10, "text-anchor": "end", fill: "#555" }, svg).textContent = fmt(vy);
      el("line", { x1: ml, y1: Y_(vy), x2: w - mr, y2: Y_(vy), stroke: "#eee" }, svg);
    }
    el("text", { x: (ml + w - mr) / 2, y: h - 6, "font-size": 11, "text-anchor": "middle", fill: "#333" }, svg).textContent = xl;
    el("text", { x: 12, y: (mt + h - mb) / 2, "font-size": 11, "text-anchor": "middle", fill: "#333", transform: "rotate(-90 12 " + (mt + h - mb) / 2 + ")" }, svg).textContent = yl;
    pts.forEach(function (p) {
      var c = el("circle", { cx: X_(p[0]), cy: Y_(p[1]), r: 3.2, fill: p[3] || "#2563eb", "fill-opacity": 0.75 }, svg);
      el("title", {}, c).textContent = p[2];
    });
    if (line && line.length) {
      el("polyline", { points: line.map(function (p) { return X_(p[0]) + "," + Y_(p[1]); }).join(" "), fill: "none", stroke: "#dc2626", "stroke-width": 1.6 }, svg);
    }
  }
  var host = document.getElementById("study-plots");
  if (host && D.study) {
    D.study.studies.forEach(function (st) {
      var maximize = st.directions[0] !== "minimize";
      var done = st.trials.filter(function (t) { return t.state === "complete" && t.value !== null; });
      var pts = done.map(function (t) { return [t.n, t.value, "trial " + t.n + ": " + t.value + "\n" + JSON.stringify(t.params)]; });
      var best = [], b = null;
      done.forEach(function (t) {
        if (b === null || (maximize ? t.value > b : t.value < b)) b = t.value;
        best.push([t.n, b]);
      });
      scatter(host, st.name + ": objective over trials (" + st.trials.length + " trials, red = best so far)", pts, "trial", "objective", best, true);
      var qname = "objective";
      var qc = done.filter(function (t) { return t.coverage !== null && t.coverage !== undefined; }).map(function (t) {
        var has = t.quality !== null && t.quality !== undefined;
        if (has) qname = t.quality_key || "quality";
        var qv = has ? t.quality : t.value;
        return [t.coverage, qv, "trial " + t.n + ": " + qname + " " + qv + ", coverage " + t.coverage];
      });
      if (!qc.length && done.length && done[0].values && done[0].values.length >= 2) {
        qc = done.map(function (t) { return [t.values[1], t.values[0], "trial " + t.n]; });
      }
      if (qc.length) scatter(host, st.name + ": quality vs coverage", qc, "coverage (share clustered)", "quality: " + qname);
      else {
        var p = document.createElement("p"); p.className = "muted";
        p.textContent = "quality vs coverage: the study records no coverage per trial";
        host.appendChild(p);
      }
    });
  }
})();
