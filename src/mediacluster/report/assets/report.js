/* mediacluster report: the map (PointMap from pointmap.js: zoom, pan, hover, filter, density
   rendering for large runs) and tuning plots. No dependencies. */
(function () {
  "use strict";
  var T0 = performance.now();
  var D = JSON.parse(document.getElementById("mc-data").textContent);
  var T1 = performance.now();
  function dec(b64, T) {
    var s = atob(b64), n = s.length, u = new Uint8Array(n);
    for (var i = 0; i < n; i++) u[i] = s.charCodeAt(i);
    return new T(u.buffer);
  }
  function coords(k) {  // float32 as is, or 16-bit steps of the extent (large runs)
    if (D[k]) return dec(D[k], Float32Array);
    var q = dec(D[k + "q"], Uint16Array), out = new Float32Array(q.length), lo = D[k + "0"], st = D[k + "s"];
    for (var i = 0; i < q.length; i++) out[i] = lo + q[i] * st;
    return out;
  }
  var N = D.n, C = D.c ? dec(D.c, Int32Array) : Int32Array.from(dec(D.c16, Int16Array));
  var TI = D.t ? dec(D.t, Int32Array) : null, TMAP = D.tmap || null;
  var colorOf = {}, nameOf = {};  // of the level shown
  D.clusters.forEach(function (c) { colorOf[c.id] = c.color; nameOf[c.id] = c.name; });
  colorOf[-1] = D.noise_color; colorOf[-2] = D.outlier_color;
  nameOf[-1] = "noise"; nameOf[-2] = "outlier";
  var drawOrder = [-1].concat(D.clusters.map(function (c) { return c.id; }).sort(function (a, b) { return a - b; }), [-2]);

  var canvas = document.getElementById("map");
  var tip = document.getElementById("tip"), tipimg = document.getElementById("tipimg"), tiptext = document.getElementById("tiptext");
  var XY = [coords("x"), coords("y")];
  var T2 = performance.now();
  var map = window.PointMap(canvas, { n: N, x: XY[0], y: XY[1], c: C, colors: colorOf, order: drawOrder });
  var state = map.state;
  window.mcReport = state;
  state.firstPaintMs = performance.now();  // since navigation start: data parsed, map drawn
  state.startMs = { script: T0, parse: T1 - T0, decode: T2 - T1, map: state.firstPaintMs - T2 };

  function setFilter(cid) {
    var f = (cid === null || cid === undefined || state.filter === cid) ? null : cid;
    canvas.setAttribute("data-filter", f === null ? "all" : String(f));
    document.querySelectorAll(".cards:not([hidden]) .card").forEach(function (el) {
      el.classList.toggle("selected", f !== null && Number(el.getAttribute("data-cluster")) === f);
    });
    document.querySelectorAll("#legend .item").forEach(function (el) {
      el.classList.toggle("off", f !== null && Number(el.getAttribute("data-id")) !== f);
    });
    document.getElementById("filter-label").textContent = f === null ? "" :
      "showing: " + (nameOf[f] || f) + " (#" + f + ")";
    map.setFilter(f);
  }
  state.setFilter = setFilter;
  state.zoom = map.zoom;
  state.screenOf = map.screenOf;

  // legend
  var legend = document.getElementById("legend");
  function buildLegend(clusters) {
    legend.textContent = "";
    var entries = clusters.map(function (c) { return [c.id, c.junk ? c.name + " (junk)" : c.name, c.color, c.size, c.name_sure === false ? c.name_why : null]; });
    var cntN = 0, cntO = 0;
    for (var m = 0; m < N; m++) { if (C[m] === -1) cntN++; else if (C[m] === -2) cntO++; }
    if (cntN) entries.push([-1, "noise", D.noise_color, cntN]);
    if (cntO) entries.push([-2, "outliers", D.outlier_color, cntO]);
    entries.forEach(function (e) {
      var s = document.createElement("span"); s.className = "item"; s.setAttribute("data-id", e[0]);
      var sw = document.createElement("span"); sw.className = "swatch" + (e[0] === -2 ? " outlier" : ""); sw.style.background = e[2];
      s.appendChild(sw);
      if (e[4]) {  // an unsure automatic name: muted, marked and explained, as on its card
        var nm = document.createElement("span"); nm.className = "unsure"; nm.textContent = e[1]; nm.title = e[1] + ": " + e[4];
        var mk = document.createElement("span"); mk.className = "unsure-mark"; mk.textContent = "?"; mk.title = e[4];
        s.appendChild(nm); s.appendChild(mk); s.setAttribute("data-name-sure", "no");
        s.appendChild(document.createTextNode(" (" + e[3].toLocaleString() + ")"));
      } else {
        s.appendChild(document.createTextNode(e[1] + " (" + e[3].toLocaleString() + ")"));
      }
      s.addEventListener("click", function () { setFilter(e[0]); });
      // keyboard: Tab reaches each entry (noise and outliers have no card), Enter / Space filter
      s.tabIndex = 0; s.setAttribute("role", "button");
      s.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); setFilter(e[0]); }
      });
      legend.appendChild(s);
    });
  }
  buildLegend(D.clusters);

  document.querySelectorAll(".card").forEach(function (el) {
    el.addEventListener("click", function () {
      setFilter(Number(el.getAttribute("data-cluster")));
      document.getElementById("map-section").scrollIntoView({ behavior: "smooth", block: "start" });
    });
    el.addEventListener("keydown", function (ev) {
      if (ev.target === el && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); el.click(); }
    });
  });

  // levels of the run's hierarchy: one view per level (labels, legend, cards); the run's own
  // clusters are the view marked current
  var LV = D.levels || null;
  var runView = { C: C, clusters: D.clusters, colorOf: colorOf, nameOf: nameOf, order: drawOrder };
  function viewOf(k) {
    var v = LV.views[k];
    if (!v.c && !v.c16 && !v.file) return runView;
    if (!v.c && !v.c16) return null;  // a large run's level: its labels file is not loaded yet
    if (!v.decoded) {
      var cv = v.c ? dec(v.c, Int32Array) : Int32Array.from(dec(v.c16, Int16Array));
      var co = {}, na = {};
      v.clusters.forEach(function (c) { co[c.id] = c.color; na[c.id] = c.name; });
      v.decoded = { C: cv, clusters: v.clusters, colorOf: co, nameOf: na,
                    order: [-1].concat(v.clusters.map(function (c) { return c.id; }).sort(function (a, b) { return a - b; }), [-2]) };
    }
    return v.decoded;
  }
  window.mcLevel = function (k, labels) {  // a level's labels file arrived
    var v = LV.views[k];
    v.c = labels.c; v.c16 = labels.c16;
    if (state.wantLevel === k) setLevel(k);
  };
  function setLevel(k) {
    k = Number(k);
    if (!LV || k < 0 || k >= LV.views.length) return;
    state.wantLevel = k;
    var v = viewOf(k);
    if (v === null) {
      var f = LV.views[k];
      if (!f.requested) {
        f.requested = true;
        var sc = document.createElement("script"); sc.src = f.file; document.body.appendChild(sc);
      }
      document.getElementById("filter-label").textContent = "loading " + f.label + "\u2026";
      return;
    }
    C = v.C; colorOf = v.colorOf; nameOf = v.nameOf;
    nameOf[-1] = "noise"; nameOf[-2] = "outlier";
    map.setLabels(C, Object.assign({}, colorOf, { "-1": D.noise_color, "-2": D.outlier_color }), v.order);
    LV.current = k;
    state.level = k;
    buildLegend(v.clusters);
    document.querySelectorAll(".cards[data-view]").forEach(function (el) {
      el.hidden = Number(el.getAttribute("data-view")) !== k;
    });
    document.querySelectorAll(".level-select").forEach(function (el) { el.value = String(k); });
    document.getElementById("n-clusters").textContent = String(LV.views[k].n_clusters);
    setFilter(null);
  }
  state.setLevel = setLevel;
  if (LV) {
    state.level = LV.current;
    document.querySelectorAll(".level-select").forEach(function (el) {
      el.addEventListener("change", function () { setLevel(el.value); });
    });
  }
  document.getElementById("reset").addEventListener("click", function () { map.reset(); setFilter(null); });

  // names of items: inline for small runs, else in chunk files loaded when first hovered
  var pathChunks = {};
  window.mcPaths = function (k, names) { pathChunks[k] = names; if (lastHover) hover(lastHover); };
  function shownName(i) {
    if (D.paths) return D.paths[i];
    var pc = D.path_chunks; if (!pc) return "#" + i;
    var k = Math.floor(i / pc.size);
    if (pathChunks[k]) return pathChunks[k][i - k * pc.size];
    if (pathChunks[k] === undefined) {
      pathChunks[k] = null;
      var sc = document.createElement("script"); sc.src = pc.files[k]; document.body.appendChild(sc);
    }
    return "#" + i;
  }
  function thumbOf(i) {
    var t = TI ? TI[i] : (TMAP && TMAP[i] !== undefined ? TMAP[i] : -1);
    if (t >= 0) return "thumbs/" + D.thumbs[t] + ".jpg";
    if (D.originals) {  // no thumbnail made: the browser loads the file itself, on demand
      var p = shownName(i);
      if (p && p.charAt(0) === "/") return "file://" + encodeURI(p).replace(/#/g, "%23").replace(/\?/g, "%3F");
    }
    return null;
  }
  var lastHover = null;
  canvas.addEventListener("pointermove", function (ev) { if (!map.dragging()) { lastHover = ev; hover(ev); } else tip.hidden = true; });
  canvas.addEventListener("pointerleave", function () { tip.hidden = true; lastHover = null; });
  function hover(ev) {
    var r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    var i = map.nearest(mx, my, 8);
    if (i < 0) { tip.hidden = true; return; }
    var src = thumbOf(i);
    if (src) { if (tipimg.getAttribute("src") !== src) tipimg.src = src; tipimg.style.display = ""; }
    else { tipimg.removeAttribute("src"); tipimg.style.display = "none"; }
    var c = C[i];
    tiptext.textContent = shownName(i) + "  \u2014  " + (c >= 0 ? (nameOf[c] || "cluster") + " (#" + c + ")" : nameOf[c]);
    tip.hidden = false;
    var W = r.width, H = r.height, tw = 150, left = mx + 14, top = my + 14;
    if (left + 300 > W) left = Math.max(0, mx - 14 - tw - 150);
    if (top + 190 > H) top = Math.max(0, my - 200);
    tip.style.left = left + "px"; tip.style.top = top + "px";
  }

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
