/* PointMap: a canvas scatter of up to millions of labelled 2-D points, no dependencies.
 *
 * Level of detail: while more than DISC_MAX points are in view, every frame is rasterised into
 * one ImageData buffer (one pass over the points, one over the pixels): each pixel takes the
 * colour of the last point drawn on it (clusters over noise, outliers on top) and an opacity
 * that grows with the number of points on it (log density), so dense regions read as dense and
 * a million points cost ~20 ms a frame. With few points in view (zoomed in or filtered) they are
 * drawn as discs. Hover: a grid index built once (counting sort), nearest point within a radius.
 *
 *   var map = PointMap(canvas, {n, x, y, c, colors: {label: "#rrggbb"}, order: [labels...]});
 *   map.setFilter(label | null); map.reset(); map.nearest(px, py, radius) -> index | -1
 *   map.setLabels(c, colors, order)    // new labels for the same points (a report's level switch)
 *   map.state: {filter, scale, tx, ty, drawn, highlighted, redraws, mode, lastFrameMs}
 *   map.onchange = function () {...}   // after every frame
 *
 * Used by the report (report.js); the studio can load the same file (mediacluster.report
 * package data, "assets/pointmap.js").
 */
(function (root) {
  "use strict";
  var DISC_MAX = 30000;

  function hexRgb(h) {
    var v = parseInt(h.slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  function PointMap(canvas, D) {
    var N = D.n, X = D.x, Y = D.y, C = D.c;
    var ctx = canvas.getContext("2d");
    var state = { filter: null, scale: 1, tx: 0, ty: 0, drawn: 0, highlighted: 0, redraws: 0, mode: "", lastFrameMs: 0 };
    var W = 0, H = 0, dpr = window.devicePixelRatio || 1;
    var api = { state: state, onchange: null };

    // bounds
    var minx = Infinity, maxx = -Infinity, miny = Infinity, maxy = -Infinity, i;
    for (i = 0; i < N; i++) {
      var xi = X[i], yi = Y[i];
      if (xi < minx) minx = xi; if (xi > maxx) maxx = xi;
      if (yi < miny) miny = yi; if (yi > maxy) maxy = yi;
    }
    if (!isFinite(minx)) { minx = 0; maxx = 1; miny = 0; maxy = 1; }
    if (maxx - minx < 1e-9) maxx = minx + 1;
    if (maxy - miny < 1e-9) maxy = miny + 1;
    var base = { s: 1, ox: 0, oy: 0 };

    // labels, colours, drawing order and the hover index: built by setLabels (again when the
    // report switches level; position and zoom are kept)
    var labelsSeen, order, OX, OY, OC, packed, byCell, start;
    var G = Math.max(16, Math.min(1024, Math.round(Math.sqrt(N / 8)))), cellw = (maxx - minx) / G, cellh = (maxy - miny) / G;
    function setLabels(newC, colors, drawOrder) {
      C = newC; D.colors = colors; D.order = drawOrder;
      // colours: one packed RGBA word per label (little-endian ImageData words: 0xAABBGGRR)
      var rgbOf = {};
      labelsSeen = {};
      Object.keys(colors).forEach(function (k) { rgbOf[k] = hexRgb(colors[k]); });
      function rgb(c) { return rgbOf[c] || [136, 136, 136]; }
      // drawing order: by rank of the label (noise first, clusters, outliers last); stable
      var rank = {}, rankOrder = drawOrder || [], i;
      rankOrder.forEach(function (lab, r) { rank[lab] = r; });
      var R = rankOrder.length + 1, counts = new Int32Array(R + 1);
      var rk = new Int32Array(N);
      for (i = 0; i < N; i++) { var r = rank[C[i]]; if (r === undefined) r = R - 1; rk[i] = r; counts[r + 1]++; labelsSeen[C[i]] = 1; }
      for (i = 1; i <= R; i++) counts[i] += counts[i - 1];
      order = new Uint32Array(N);
      var fill = counts.slice(0, R);
      for (i = 0; i < N; i++) order[fill[rk[i]]++] = i;
      rk = null;
      // the points copied once into drawing order: every frame then reads memory front to back
      OX = new Float32Array(N); OY = new Float32Array(N); OC = new Int32Array(N); packed = new Uint32Array(N);
      for (i = 0; i < N; i++) {
        var o = order[i], q = rgb(C[o]);
        OX[i] = X[o]; OY[i] = Y[o]; OC[i] = C[o]; packed[i] = (q[2] << 16) | (q[1] << 8) | q[0];
      }
      // hover index: G x G grid over the data bounds, points sorted by cell (counting sort)
      var cellOf = new Int32Array(N);
      start = new Int32Array(G * G + 1);
      for (i = 0; i < N; i++) {
        var gx = Math.min(G - 1, Math.floor((OX[i] - minx) / cellw)), gy = Math.min(G - 1, Math.floor((OY[i] - miny) / cellh));
        cellOf[i] = gx * G + gy; start[cellOf[i] + 1]++;
      }
      for (i = 1; i <= G * G; i++) start[i] += start[i - 1];
      byCell = new Uint32Array(N);
      var pos = start.slice(0, G * G);
      for (i = 0; i < N; i++) byCell[pos[cellOf[i]]++] = i;
      api.labels = Object.keys(labelsSeen).map(Number);
    }
    setLabels(C, D.colors, D.order);

    var cnt = null, top = null, img = null, words = null;
    function buffers() {
      var w = canvas.width, h = canvas.height;
      if (!img || img.width !== w || img.height !== h) {
        img = ctx.createImageData(w, h);
        words = new Uint32Array(img.data.buffer);
        cnt = new Uint16Array(w * h);
        top = new Uint32Array(w * h);
      }
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

    function inView() {  // how many points of the current filter are on screen (cheap bound check)
      var ax = state.scale * base.s, bx = base.ox * state.scale + state.tx;
      var ay = -state.scale * base.s, by = base.oy * state.scale + state.ty;
      var f = state.filter, k = 0;
      if (f === null && state.scale <= 1) return N;  // the whole map is in view
      for (var j = 0; j < N; j++) {
        if (f !== null && OC[j] !== f) continue;
        var px = ax * OX[j] + bx, py = ay * OY[j] + by;
        if (px >= 0 && py >= 0 && px < W && py < H && ++k > DISC_MAX) return k;
      }
      return k;
    }

    function drawRaster() {
      buffers();
      var w = canvas.width, h = canvas.height, f = state.filter;
      cnt.fill(0);
      var ax = state.scale * base.s * dpr, bx = (base.ox * state.scale + state.tx) * dpr;
      var ay = -state.scale * base.s * dpr, by = (base.oy * state.scale + state.ty) * dpr;
      // splat size grows with zoom so that points stay visible (1 to 3 device pixels)
      var sp = Math.max(1, Math.min(3, Math.round(dpr * Math.sqrt(state.scale) * Math.max(1, 4 * Math.pow(2000 / Math.max(N, 1), 0.5)))));
      var drawn = 0, hi = 0, ctxCount = 0, a, p;
      var GREY = (234 << 16) | (230 << 8) | 228;
      for (a = 0; a < N; a++) {
        var fx = ax * OX[a] + bx, fy = ay * OY[a] + by;
        if (fx < 0 || fy < 0 || fx >= w || fy >= h) continue;
        var px = fx | 0, py = fy | 0, col = packed[a], ok = f === null || OC[a] === f;
        if (!ok) { col = GREY; ctxCount++; } else hi++;
        drawn++;
        if (sp === 1) {
          p = py * w + px;
          if (!ok && cnt[p] && (top[p] >>> 24) === 1) continue;  // context never covers a highlighted pixel
          if (cnt[p] < 65535) cnt[p]++;
          top[p] = ok ? (col | 16777216) : col;
          continue;
        }
        for (var dy = 0; dy < sp && py + dy < h; dy++) {
          p = (py + dy) * w + px;
          for (var dx = 0; dx < sp && px + dx < w; dx++, p++) {
            if (!ok && cnt[p] && (top[p] >>> 24) === 1) continue;
            if (cnt[p] < 65535) cnt[p]++;
            top[p] = ok ? (col | 16777216) : col;
          }
        }
      }
      // pixels: colour of the top point, opacity from the log of the count
      var maxc = 1;
      for (p = 0; p < cnt.length; p++) if (cnt[p] > maxc) maxc = cnt[p];
      var lm = Math.log(1 + maxc), lut = new Uint8Array(Math.min(maxc, 65535) + 1);
      for (var k = 1; k < lut.length; k++) lut[k] = Math.round(255 * Math.min(1, 0.55 + 0.45 * Math.log(1 + k) / lm));
      for (p = 0; p < cnt.length; p++) {
        var c = cnt[p];
        if (!c) { words[p] = 0xffffffff; continue; }
        var t = top[p], al = lut[c], rr = t & 255, gg = (t >> 8) & 255, bb = (t >> 16) & 255;
        // blend over white: out = white + (colour - white) * alpha
        rr = 255 - (((255 - rr) * al) / 255 | 0); gg = 255 - (((255 - gg) * al) / 255 | 0); bb = 255 - (((255 - bb) * al) / 255 | 0);
        words[p] = 0xff000000 | (bb << 16) | (gg << 8) | rr;
      }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.putImageData(img, 0, 0);
      state.drawn = drawn; state.highlighted = hi; state.mode = "density";
    }

    function drawDiscs() {
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
      var baseR = Math.max(1.2, Math.min(4.5, 2.2 * Math.pow(3000 / Math.max(N, 1), 0.25)));
      var r = Math.min(8, baseR * Math.sqrt(state.scale)), f = state.filter, drawn = 0, hi = 0, last = null, open = false, a;
      function flush() { if (open) { ctx.fill(); open = false; } }
      if (f !== null) {  // context in pale grey
        ctx.fillStyle = "#e4e6ea"; ctx.beginPath();
        for (a = 0; a < N; a++) {
          if (OC[a] === f) continue;
          var x0 = sx(OX[a]), y0 = sy(OY[a]);
          if (x0 < -5 || y0 < -5 || x0 > W + 5 || y0 > H + 5) continue;
          ctx.rect(x0 - r / 2, y0 - r / 2, r, r); drawn++;
        }
        ctx.fill();
      }
      for (a = 0; a < N; a++) {
        var c = OC[a];
        if (f !== null && c !== f) continue;
        var px = sx(OX[a]), py = sy(OY[a]);
        if (px < -5 || py < -5 || px > W + 5 || py > H + 5) continue;
        var col = D.colors[c] || "#888";
        if (col !== last) { flush(); ctx.fillStyle = col; ctx.globalAlpha = c === -1 ? 0.7 : 1; last = col; ctx.beginPath(); open = true; }
        if (c === -2) { var q = r * 0.9; ctx.rect(px - q, py - 0.6, 2 * q, 1.2); ctx.rect(px - 0.6, py - q, 1.2, 2 * q); }
        else if (c === -1) ctx.rect(px - r / 2, py - r / 2, r, r);
        else { ctx.moveTo(px + r * 0.6, py); ctx.arc(px, py, r * 0.6, 0, 6.2832); }
        drawn++; hi++;
      }
      flush(); ctx.globalAlpha = 1;
      state.drawn = drawn; state.highlighted = hi; state.mode = "discs";
    }

    function draw() {
      var t0 = performance.now();
      var many = N > DISC_MAX && inView() > DISC_MAX;
      if (many) drawRaster(); else drawDiscs();
      state.redraws++; state.lastFrameMs = performance.now() - t0;
      if (api.onchange) api.onchange();
    }

    var pending = false;
    function later() { if (!pending) { pending = true; requestAnimationFrame(function () { pending = false; draw(); }); } }

    function nearest(px, py, maxpx) {
      var dx = dataX(px), dy = dataY(py), rad = maxpx / (base.s * state.scale);
      var gx0 = Math.max(0, Math.floor((dx - rad - minx) / cellw)), gx1 = Math.min(G - 1, Math.floor((dx + rad - minx) / cellw));
      var gy0 = Math.max(0, Math.floor((dy - rad - miny) / cellh)), gy1 = Math.min(G - 1, Math.floor((dy + rad - miny) / cellh));
      var best = -1, bd = rad * rad;
      for (var gx = gx0; gx <= gx1; gx++) {
        for (var gy = gy0; gy <= gy1; gy++) {
          var cell = gx * G + gy;
          for (var q = start[cell]; q < start[cell + 1]; q++) {
            var j = byCell[q];
            if (state.filter !== null && OC[j] !== state.filter) continue;
            var ex = OX[j] - dx, ey = OY[j] - dy, d = ex * ex + ey * ey;
            if (d < bd) { bd = d; best = order[j]; }
          }
        }
      }
      return best;
    }

    // zoom and pan
    canvas.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
      var z = Math.exp(-ev.deltaY * 0.0015), ns = Math.max(0.5, Math.min(2000, state.scale * z));
      z = ns / state.scale;
      state.tx = mx - (mx - state.tx) * z; state.ty = my - (my - state.ty) * z; state.scale = ns;
      later();
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
    canvas.addEventListener("pointermove", function (ev) {
      if (!drag) return;
      state.tx = drag.tx + ev.clientX - drag.x; state.ty = drag.ty + ev.clientY - drag.y;
      later();
    });

    api.draw = draw;
    api.resize = resize;
    api.nearest = nearest;
    api.dragging = function () { return drag !== null; };
    api.setFilter = function (f) { state.filter = f; draw(); };
    api.reset = function () { state.scale = 1; state.tx = 0; state.ty = 0; };
    api.zoom = function (factor, mx, my) {  // for scripted checks: zoom about a canvas point
      var ns = Math.max(0.5, Math.min(2000, state.scale * factor)), z = ns / state.scale;
      state.tx = mx - (mx - state.tx) * z; state.ty = my - (my - state.ty) * z; state.scale = ns; draw();
    };
    api.screenOf = function (i) { return [sx(X[i]), sy(Y[i])]; };  // css pixels in the canvas
    api.setLabels = function (c, colors, drawOrder) { setLabels(c, colors, drawOrder); state.filter = null; draw(); };
    window.addEventListener("resize", resize);
    resize();
    return api;
  }

  root.PointMap = PointMap;
})(window);
