/* mediacluster studio: map, clusters, galleries, search and edits. No dependencies, no build step.
 *
 * Every string that comes from the run (file names, cluster names, tags) is put into the page as
 * text (textContent / setAttribute), never parsed as HTML. The map draws straight into an
 * ImageData pixel buffer, so 200,000 points redraw in a few milliseconds.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ state and helpers
  const S = {
    info: null, n: 0, X: null, Y: null, L: null, seq: -1, clusters: new Map(), special: [], groups: {}, groupNames: {}, groupClusters: {},
    view: { kind: "none" }, page: 0, pageSize: 60, order: "typical", items: [], total: 0,
    selected: new Set(), resultSet: null, lastClicked: null, tool: "pan", highlight: null, preview: null,
    level: "", levelLabels: null, canUndo: false, canRedo: false,
    scale: 1, tx: 0, ty: 0, drawn: 0, redraws: 0, drawMs: 0, firstPaint: null, errors: [], toasts: [],
    busy: 0, polls: 0,
    checked: new Set(),  // clusters checked for a merge: kept across redraws, filters and refreshes
    itemOpen: null, itemShown: null,  // the item panel's item and the details it shows
    refreshes: [],  // per refresh: its ms, what changed, whether the view was re-rendered (tests, benchmarks)
  };
  window.mcStudio = S;
  // the page's id, sent with each edit: kept in sessionStorage, so a reload is the same page
  const newClient = () => Math.random().toString(36).slice(2, 12);
  let CLIENT = (sessionStorage.getItem("mc-client") || newClient());
  sessionStorage.setItem("mc-client", CLIENT);
  S.client = CLIENT;
  // a tab the browser clones ("Duplicate tab", window.open) starts with a copy of the
  // sessionStorage, so of the id: the clone asks this origin's pages whether one has its id and,
  // if one answers, takes a new one (a reloaded page's old document is gone: nobody answers)
  if (typeof BroadcastChannel === "function") {
    const pages = new BroadcastChannel("mc-client");
    let asking = true;
    pages.onmessage = (ev) => {
      const m = ev.data || {};
      if (m.ask === CLIENT) pages.postMessage({ taken: CLIENT });
      else if (m.taken === CLIENT && asking) {
        CLIENT = newClient(); S.client = CLIENT; asking = false;
        sessionStorage.setItem("mc-client", CLIENT);
      }
    };
    pages.postMessage({ ask: CLIENT });
    setTimeout(() => { asking = false; }, 1000);
  }
  // the person's name (the "your name" box): kept in this browser for every page of every run,
  // sent with each edit as the page id is (percent-encoded: a header holds Latin-1 only)
  const USER_KEY = "mc-user";
  function userName() {
    try { return (localStorage.getItem(USER_KEY) || "").trim(); } catch (e) { return ""; }
  }
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "text") e.textContent = String(v);
        else if (k === "class") e.className = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else if (k === "value") e.value = v;
        else if (k === "checked") e.checked = !!v;
        else if (k === "style") e.style.cssText = v;  // CSSOM: allowed by the page's CSP, unlike a style attribute
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of kids) {
      if (c === null || c === undefined || c === false) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  // keyboard: a clickable row or tile takes the focus (Tab) and Enter / Space act as a click
  // (Shift kept, for a range of tiles)
  function pressable(e) {
    e.tabIndex = 0;
    e.setAttribute("role", "button");
    e.addEventListener("keydown", (ev) => {
      if (ev.target !== e || (ev.key !== "Enter" && ev.key !== " ")) return;
      ev.preventDefault();
      e.dispatchEvent(new MouseEvent("click", { bubbles: true, shiftKey: ev.shiftKey }));
    });
    return e;
  }
  // a tile's "open" button: named after its item for a screen reader ("i" said nothing), out of
  // the Tab order (the tile's own "o" key opens it: one stop a tile, not two), shown on focus
  function openButton(it) {
    return el("button", { class: "open", title: "open", "aria-label": "open " + it.name, tabindex: "-1", text: "i",
      onclick: (ev) => { ev.stopPropagation(); openItem(it.i); } });
  }
  // a list redrawn under the keyboard's focus gives it back to the same entry (attribute ``attr``)
  // (or to the same part of it: a cluster row's open button or its checkbox)
  function keepFocus(box, attr, redraw) {
    const a = document.activeElement;
    const sel = "[" + attr + "]";
    let host = a && box.contains(a) ? a.closest(sel) : null;  // the outermost entry (a row's button carries its id too)
    while (host && host.parentElement && host.parentElement.closest(sel) && box.contains(host.parentElement.closest(sel))) host = host.parentElement.closest(sel);
    const was = host ? host.getAttribute(attr) : null, part = host && a !== host && a.classList.length ? a.classList[0] : null;
    redraw();
    if (was === null) return;
    let e = box.querySelector("[" + attr + '="' + was + '"]');
    if (e && part) e = e.querySelector("." + part) || e;
    if (e) e.focus({ preventScroll: true });
  }
  function fmt(n) { return Number(n).toLocaleString("en-US"); }

  function toast(text, error) {
    const box = $("toast");
    // an error interrupts a screen reader (role alert); the rest waits its turn (the box's polite region)
    const m = el("div", { class: "msg" + (error ? " error" : ""), text: text, role: error ? "alert" : null });
    box.appendChild(m);
    S.toasts.push({ text: String(text), error: !!error });
    if (error) S.errors.push(String(text));
    setTimeout(() => m.remove(), error ? 9000 : 5000);
  }

  async function api(path, opts) {
    opts = opts || {};
    const init = { method: opts.method || "GET", headers: {}, credentials: "same-origin" };
    if (opts.body !== undefined) {
      if (opts.body instanceof FormData) init.body = opts.body;
      else { init.body = JSON.stringify(opts.body); init.headers["Content-Type"] = "application/json"; }
    }
    if (init.method !== "GET") {
      init.headers["X-Mediacluster"] = "1";
      init.headers["X-Mediacluster-Client"] = CLIENT;
      const who = userName();
      if (who) init.headers["X-Mediacluster-User"] = encodeURIComponent(who);
    }
    S.busy++;
    try {
      const r = await fetch(path, init);
      if (!r.ok) {
        let msg = r.status + " " + r.statusText;
        try { const j = await r.json(); if (j && j.error) msg = j.error.message; } catch (e) { /* not JSON */ }
        const err = new Error(msg); err.status = r.status; throw err;
      }
      if (opts.binary) return { buf: await r.arrayBuffer(), headers: r.headers };
      return await r.json();
    } finally { S.busy--; }
  }
  function fail(e) { toast(e.message || String(e), true); }
  function q(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") u.set(k, v);
    return u.toString();
  }
  function thumbURL(i, size) { return "api/items/" + i + "/thumb?size=" + (size || 160); }

  // ------------------------------------------------------------------ colours
  const NOISE_RGB = [185, 188, 194], OUTLIER_RGB = [40, 40, 40];
  function hsl2rgb(h, s, l) {
    const a = s * Math.min(l, 1 - l);
    const f = (n) => { const k = (n + h * 12) % 12; return l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)); };
    return [Math.round(f(0) * 255), Math.round(f(8) * 255), Math.round(f(4) * 255)];
  }
  function rgbOf(id) {
    if (id === -1) return NOISE_RGB;
    if (id < -1) return OUTLIER_RGB;
    const c = S.clusters.get(id);
    if (c && c.junk) return [122, 31, 31];
    return hsl2rgb((id * 0.61803398875) % 1, 0.72, id % 2 ? 0.58 : 0.45);
  }
  function css(rgb) { return "rgb(" + rgb[0] + "," + rgb[1] + "," + rgb[2] + ")"; }
  function colorOf(id) { return css(rgbOf(id)); }
  function u32(rgb, a) { return ((a === undefined ? 255 : a) << 24 | rgb[2] << 16 | rgb[1] << 8 | rgb[0]) >>> 0; }
  let palette = new Uint32Array(0), paletteFaded = new Uint32Array(0);
  function buildPalette() {
    let max = 0;
    for (const id of S.clusters.keys()) if (id > max) max = id;
    if (S.levelLabels) for (let i = 0; i < S.n; i++) if (S.levelLabels[i] > max) max = S.levelLabels[i];
    palette = new Uint32Array(max + 3); paletteFaded = new Uint32Array(max + 3);
    for (let id = -2; id <= max; id++) {
      const c = S.levelLabels ? (id < 0 ? (id === -1 ? NOISE_RGB : OUTLIER_RGB) : hsl2rgb((id * 0.61803398875) % 1, 0.72, id % 2 ? 0.58 : 0.45)) : rgbOf(id);
      palette[id + 2] = u32(c);
      paletteFaded[id + 2] = u32([Math.round(c[0] * 0.15 + 232 * 0.85), Math.round(c[1] * 0.15 + 234 * 0.85), Math.round(c[2] * 0.15 + 238 * 0.85)]);
    }
  }

  // ------------------------------------------------------------------ the map
  const canvas = $("map"), ctx = canvas.getContext("2d");
  let W = 0, H = 0, dpr = 1, image = null, pix = null;
  const base = { s: 1, ox: 0, oy: 0 };
  let bounds = null, grid = null;

  function computeBounds() {
    let minx = Infinity, maxx = -Infinity, miny = Infinity, maxy = -Infinity;
    for (let i = 0; i < S.n; i++) {
      const x = S.X[i], y = S.Y[i];
      if (x < minx) minx = x; if (x > maxx) maxx = x; if (y < miny) miny = y; if (y > maxy) maxy = y;
    }
    if (!isFinite(minx)) { minx = 0; maxx = 1; miny = 0; maxy = 1; }
    if (maxx - minx < 1e-9) maxx = minx + 1;
    if (maxy - miny < 1e-9) maxy = miny + 1;
    bounds = { minx, maxx, miny, maxy };
    // spatial hash (data space) for hover and clicks
    const G = 160, cw = (maxx - minx) / G, ch = (maxy - miny) / G;
    const head = new Int32Array(G * G).fill(-1), next = new Int32Array(S.n);
    for (let i = 0; i < S.n; i++) {
      const gx = Math.min(G - 1, Math.floor((S.X[i] - minx) / cw)), gy = Math.min(G - 1, Math.floor((S.Y[i] - miny) / ch));
      const k = gx * G + gy; next[i] = head[k]; head[k] = i;
    }
    grid = { G, cw, ch, head, next };
  }

  function resize() {
    const r = canvas.getBoundingClientRect();
    dpr = window.devicePixelRatio || 1;
    W = Math.max(100, r.width); H = Math.max(100, r.height);
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    image = ctx.createImageData(canvas.width, canvas.height);
    pix = new Uint32Array(image.data.buffer);
    if (bounds) {
      const pad = 14, b = bounds;
      const s = Math.min((W - 2 * pad) / (b.maxx - b.minx), (H - 2 * pad) / (b.maxy - b.miny));
      base.s = s; base.ox = (W - s * (b.maxx - b.minx)) / 2 - s * b.minx; base.oy = (H - s * (b.maxy - b.miny)) / 2 + s * b.maxy;
    }
    draw();
  }
  function sx(x) { return (base.ox + base.s * x) * S.scale + S.tx; }
  function sy(y) { return (base.oy - base.s * y) * S.scale + S.ty; }
  function dataX(px) { return ((px - S.tx) / S.scale - base.ox) / base.s; }
  function dataY(py) { return -((py - S.ty) / S.scale - base.oy) / base.s; }
  S.screenOf = (i) => [sx(S.X[i]), sy(S.Y[i])];

  let queued = false;
  function redraw() { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; draw(); }); } }

  function draw() {
    if (!pix || !S.X || !S.L) return;
    const t0 = performance.now();
    const cw = canvas.width, chh = canvas.height;
    pix.fill(0xffffffff);
    const n = S.n, X = S.X, Y = S.Y, L = S.levelLabels || S.L;
    const k = base.s * S.scale * dpr, ox = (base.ox * S.scale + S.tx) * dpr, oy = (base.oy * S.scale + S.ty) * dpr;
    let r = n > 100000 ? 1 : n > 20000 ? 2 : n > 3000 ? 3 : 4;
    r = Math.max(1, Math.min(7, Math.round(r * dpr * Math.sqrt(S.scale))));
    const hl = S.highlight, pv = S.preview, sel = S.selected;
    const rs = S.view.kind === "search" && hl === null ? S.resultSet : null;  // search results stand out
    let drawn = 0;
    const plot = (px, py, col, rr) => {
      const x0 = Math.max(0, px - (rr >> 1)), y0 = Math.max(0, py - (rr >> 1));
      const x1 = Math.min(cw, x0 + rr), y1 = Math.min(chh, y0 + rr);
      for (let yy = y0; yy < y1; yy++) { const row = yy * cw; for (let xx = x0; xx < x1; xx++) pix[row + xx] = col; }
    };
    // pass 1: faded context, noise; pass 2: the rest (highlighted cluster on top)
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < n; i++) {
        const lab = L[i], cur = S.L[i];
        const inHl = hl === null ? (rs === null || rs.has(i)) : cur === hl;
        if ((pass === 0) !== (!inHl || lab === -1)) continue;
        const px = (ox + k * X[i]) | 0, py = (oy - k * Y[i]) | 0;
        if (px < -8 || py < -8 || px > cw + 8 || py > chh + 8) continue;
        let col;
        if (pv && cur === pv.cluster && pv.part.has(i)) col = pv.colors[pv.part.get(i)];
        else col = inHl ? palette[lab + 2] : paletteFaded[lab + 2];
        if (col === undefined) col = 0xff888888;
        plot(px, py, col, r);
        drawn++;
      }
    }
    if (sel.size) {
      const dark = 0xff1d1d1d, rr = Math.max(r + 2, 3);
      for (const i of sel) {
        const px = (ox + k * X[i]) | 0, py = (oy - k * Y[i]) | 0;
        if (px < -8 || py < -8 || px > cw + 8 || py > chh + 8) continue;
        plot(px, py, dark, rr);
        plot(px, py, palette[S.L[i] + 2] || 0xff888888, Math.max(1, rr - 2));
      }
    }
    ctx.putImageData(image, 0, 0);
    if (lasso && lasso.length > 1) {
      ctx.save(); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.strokeStyle = "#2f6fde"; ctx.lineWidth = 1.5; ctx.setLineDash([5, 4]);
      ctx.fillStyle = "rgba(47,111,222,0.08)";
      ctx.beginPath(); ctx.moveTo(lasso[0][0], lasso[0][1]);
      for (const p of lasso) ctx.lineTo(p[0], p[1]);
      ctx.closePath(); ctx.fill(); ctx.stroke(); ctx.restore();
    }
    S.drawn = drawn; S.redraws++; S.drawMs = performance.now() - t0;
  }

  function nearest(px, py, maxpx) {
    if (!grid) return -1;
    const dx = dataX(px), dy = dataY(py), rad = maxpx / (base.s * S.scale), b = bounds, G = grid.G;
    const gx0 = Math.max(0, Math.floor((dx - rad - b.minx) / grid.cw)), gx1 = Math.min(G - 1, Math.floor((dx + rad - b.minx) / grid.cw));
    const gy0 = Math.max(0, Math.floor((dy - rad - b.miny) / grid.ch)), gy1 = Math.min(G - 1, Math.floor((dy + rad - b.miny) / grid.ch));
    let best = -1, bd = rad * rad;
    for (let gx = gx0; gx <= gx1; gx++) for (let gy = gy0; gy <= gy1; gy++) {
      for (let i = grid.head[gx * G + gy]; i !== -1; i = grid.next[i]) {
        if (S.highlight !== null && S.L[i] !== S.highlight) continue;
        const ex = S.X[i] - dx, ey = S.Y[i] - dy, d = ex * ex + ey * ey;
        if (d < bd) { bd = d; best = i; }
      }
    }
    return best;
  }

  // pan, zoom, hover, click, lasso
  let drag = null, lasso = null, lassoAdd = false;
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const ns = Math.max(0.5, Math.min(500, S.scale * Math.exp(-ev.deltaY * 0.0015))), z = ns / S.scale;
    S.tx = mx - (mx - S.tx) * z; S.ty = my - (my - S.ty) * z; S.scale = ns;
    redraw();
  }, { passive: false });
  canvas.addEventListener("pointerdown", (ev) => {
    const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    canvas.setPointerCapture(ev.pointerId);
    if (S.tool === "lasso") { lasso = [[x, y]]; lassoAdd = ev.shiftKey; return; }
    drag = { x: ev.clientX, y: ev.clientY, tx: S.tx, ty: S.ty, moved: false };
  });
  canvas.addEventListener("pointermove", (ev) => {
    const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    if (lasso) { lasso.push([x, y]); redraw(); return; }
    if (drag) {
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      S.tx = drag.tx + dx; S.ty = drag.ty + dy; $("tip").hidden = true; redraw(); return;
    }
    hover(x, y);
  });
  canvas.addEventListener("pointerup", (ev) => {
    try { canvas.releasePointerCapture(ev.pointerId); } catch (e) { /* released */ }
    const r = canvas.getBoundingClientRect(), x = ev.clientX - r.left, y = ev.clientY - r.top;
    if (lasso) { const poly = lasso; lasso = null; finishLasso(poly, lassoAdd || ev.shiftKey); return; }
    if (drag && !drag.moved) {
      const i = nearest(x, y, 8);
      if (i >= 0) { openItem(i); if (S.L[i] !== undefined && (S.view.kind !== "cluster" || S.view.id !== S.L[i])) showCluster(S.L[i], i); }
    }
    drag = null;
  });
  canvas.addEventListener("pointerleave", () => { $("tip").hidden = true; });

  let hoverI = -1;
  function hover(x, y) {
    const i = nearest(x, y, 8), tip = $("tip");
    if (i < 0) { tip.hidden = true; hoverI = -1; return; }
    if (i !== hoverI) {
      hoverI = i;
      $("tip-img").src = thumbURL(i, 96);
      tipText(i);
      if (!names.has(i)) {
        api("api/briefs?ids=" + i).then((r) => { for (const it of r.items) names.set(it.i, it.name); if (hoverI === i) tipText(i); }).catch(() => {});
      }
    }
    tip.hidden = false;
    tip.style.left = Math.min(x + 14, W - 210) + "px"; tip.style.top = Math.min(y + 14, H - 130) + "px";
  }
  function tipText(i) {
    const c = S.clusters.get(S.L[i]);
    clear($("tip-text")).appendChild(el("div", null, el("b", { text: itemName(i) }),
      el("div", { class: "muted", text: c ? c.name + " (#" + c.id + ")" : (S.L[i] === -1 ? "unassigned" : "outlier") })));
  }
  const names = new Map();  // item -> file name, filled from every page and search the page sees
  function itemName(i) { return names.get(i) || ("item " + i); }

  function finishLasso(poly, add) {
    if (poly.length < 3) { redraw(); return; }
    let minx = Infinity, maxx = -Infinity, miny = Infinity, maxy = -Infinity;
    for (const p of poly) { minx = Math.min(minx, p[0]); maxx = Math.max(maxx, p[0]); miny = Math.min(miny, p[1]); maxy = Math.max(maxy, p[1]); }
    if (!add) S.selected.clear();
    let got = 0;
    for (let i = 0; i < S.n; i++) {
      if (S.highlight !== null && S.L[i] !== S.highlight) continue;
      const x = sx(S.X[i]), y = sy(S.Y[i]);
      if (x < minx || x > maxx || y < miny || y > maxy) continue;
      let inside = false;
      for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
        const xa = poly[a][0], ya = poly[a][1], xb = poly[b][0], yb = poly[b][1];
        if ((ya > y) !== (yb > y) && x < (xb - xa) * (y - ya) / (yb - ya) + xa) inside = !inside;
      }
      if (inside) { S.selected.add(i); got++; }
    }
    S.lastLasso = got;
    selectionChanged();
    if (S.selected.size) showSelection();
    redraw();
  }

  function setTool(t) {
    S.tool = t;
    $("tool-pan").classList.toggle("on", t === "pan");
    $("tool-lasso").classList.toggle("on", t === "lasso");
    canvas.classList.toggle("lasso", t === "lasso");
  }
  $("tool-pan").addEventListener("click", () => setTool("pan"));
  $("tool-lasso").addEventListener("click", () => setTool("lasso"));
  $("map-reset").addEventListener("click", () => { S.scale = 1; S.tx = 0; S.ty = 0; S.highlight = null; updateMapInfo(); redraw(); });
  function updateMapInfo() {
    const c = S.highlight !== null ? S.clusters.get(S.highlight) : null;
    $("map-info").textContent = fmt(S.n) + " points" + (c ? " \u00b7 showing " + c.name : "")
      + (S.info && S.info.map_pending ? " \u00b7 quick PCA map: the UMAP map is being laid out" : "");
  }

  // ------------------------------------------------------------------ loading and syncing
  async function loadLabels() {
    const r = await api("api/labels", { binary: true });
    S.L = new Int32Array(r.buf);
    return Number(r.headers.get("X-Seq"));
  }
  async function loadClusters() {
    const c = await api("api/clusters");
    S.clusters = new Map(c.clusters.map((e) => [e.id, e]));
    S.special = c.special; S.groups = c.groups || {}; S.groupNames = c.group_names || {}; S.groupClusters = c.group_clusters || {};
    S.canUndo = c.can_undo; S.canRedo = c.can_redo; S.undoTarget = c.undo; S.redoTarget = c.redo;
    $("undo").disabled = !S.canUndo; $("redo").disabled = !S.canRedo;
    carryNotice(c.carry_notice);
    return c.seq;
  }
  // What the last --carry-from into this run carried (level names included) and the level names
  // it could not: a note that stays until closed, once per carry (S.carrySeen: its edit number)
  function carryNotice(n) {
    if (!n || n.edits_seq == null || S.carrySeen === n.edits_seq) return;
    S.carrySeen = n.edits_seq;
    const box = $("toast");
    const old = box.querySelector(".carry-notice");
    if (old) old.remove();
    const m = el("div", { class: "msg carry-notice" });
    const close = el("button", { class: "close", text: "\u00d7", title: "close", "aria-label": "close" });
    close.addEventListener("click", () => m.remove());
    m.appendChild(close);
    m.appendChild(el("div", { class: "carry-text", text: n.text }));
    for (const r of n.level_names || []) {
      m.appendChild(el("div", { class: "carry-rest", text: "not carried: \u201c" + r.name + "\u201d (level_" + r.level + ", group " + r.previous_cluster + "): " + r.reason }));
    }
    box.appendChild(m);
  }
  // What the new state changed against the one the page showed: ``moved``, the clusters whose
  // items changed (an item's cluster before or after, noise and outliers included); ``meta``, the
  // clusters whose name, tags, junk flag, ... changed, or that came or went. Read off the two
  // states, not the events, so an undo (of any edit, by anyone) counts as what it does. Null on
  // the first load.
  function changes(oldL, oldClusters) {
    if (!oldL || oldL.length !== S.L.length) return null;
    const moved = new Set(), meta = new Set(), L = S.L;
    let tags = false;  // a cluster's tags changed (a tag edit: it may have tagged items too)
    for (let i = 0; i < L.length; i++) if (oldL[i] !== L[i]) { moved.add(oldL[i]); moved.add(L[i]); }
    for (const [id, c] of S.clusters) {
      const o = oldClusters.get(id);
      if (o && JSON.stringify(o) === JSON.stringify(c)) continue;
      meta.add(id);
      if (o && JSON.stringify(o.tags) !== JSON.stringify(c.tags)) tags = true;
    }
    for (const id of oldClusters.keys()) if (!S.clusters.has(id)) meta.add(id);
    return { moved: moved, meta: meta, tags: tags, has: (id) => moved.has(id) || meta.has(id) };
  }
  // where the items of a cluster that is gone went (the cluster most of them are in now)
  function wentTo(id, oldL) {
    const count = new Map();
    for (let i = 0; i < oldL.length; i++) if (oldL[i] === id) count.set(S.L[i], (count.get(S.L[i]) || 0) + 1);
    let best = null, n = 0;
    for (const [c, k] of count) if (c >= 0 && S.clusters.has(c) && k > n) { best = c; n = k; }
    return best;
  }
  function clusterText(id) { const c = S.clusters.get(id); return c ? c.name + " (#" + id + ")" : (id === -1 ? "unassigned" : "outlier") + " (#" + id + ")"; }
  function label(id, clusters) { const c = (clusters || S.clusters).get(id); return "#" + id + (c ? " (" + c.name + ")" : ""); }
  // A person's place that refers to what the new state took away is dropped, and said so when
  // another page, process or undo did it (``others``); the rest is kept as it was.
  function dropGone(ch, oldL, oldClusters, others) {
    const say = (t) => { if (others) toast(t); };
    for (const id of Array.from(S.checked)) {
      if (S.clusters.has(id)) continue;
      S.checked.delete(id);
      const to = wentTo(id, oldL);
      say("cluster " + label(id, oldClusters) + ", checked for a merge, no longer exists" + (to !== null ? " (merged into " + label(to) + ")" : "") + ": unchecked");
    }
    const pv = S.preview;
    if (pv && (!S.clusters.has(pv.cluster) || ch.moved.has(pv.cluster))) {
      S.preview = null; $("split-panel").hidden = true;
      say("the split preview of cluster " + label(pv.cluster, oldClusters) + " is out of date: its items changed (edit " + S.seq + "); preview the split again");
    }
    const v = S.view;
    const sc = v.kind === "search" ? v.result.cluster : null;
    if (sc !== null && sc !== undefined && sc >= 0 && !S.clusters.has(sc) && !v.scopeGone) {
      // the results stay (the person's query and place); what they were searched in is gone
      v.scopeGone = true;
      const to = wentTo(sc, oldL);
      say("cluster " + label(sc, oldClusters) + ", the one this search was in, no longer exists" + (to !== null ? " (merged into " + label(to) + ")" : "") + ": its results are shown as they are now");
    }
    if (v.kind === "cluster" && v.id >= 0 && !S.clusters.has(v.id)) {
      const to = wentTo(v.id, oldL);
      if (to !== null) {
        S.view = { kind: "cluster", id: to }; S.page = 0; S.highlight = to;
        say("cluster " + label(v.id, oldClusters) + " you were looking at was merged into " + label(to) + ": showing it");
      } else {
        S.view = { kind: "none" }; S.highlight = null;
        say("cluster " + label(v.id, oldClusters) + " you were looking at no longer exists");
      }
      return true;  // the view changed: render it
    }
    return false;
  }
  // does the view show something the new state changed?
  function viewTouched(ch, oldL, oldSeq) {
    const v = S.view;
    if (ch === null) return true;
    if (v.kind === "cluster") return ch.has(v.id);
    if (v.kind === "selection") { for (const i of S.selected) if (oldL[i] !== S.L[i]) return true; return false; }
    // a group's clusters, or which copy is kept (a keep edit, or its undo, changes neither the
    // labels nor the cluster table: any new edit may have)
    if (v.kind === "dups") return ch.moved.size > 0 || ch.meta.size > 0 || S.seq !== oldSeq;
    return false;  // a search keeps the results it got (its tiles retinted); nothing shown: nothing to fetch
  }
  // the tiles of a view not drawn again (a search's results, a selection): each tile's cluster as
  // it is now, its swatch's colour and name, from the labels and cluster table just fetched (no
  // request; the tiles, their order, the scroll and the focus stay). Returns the tiles changed.
  function retintGrid(ch) {
    let n = 0;
    for (const it of S.items) {
      const now = S.L[it.i];
      if (now === undefined || (now === it.cluster && !ch.meta.has(now))) continue;
      it.cluster = now;  // the view's own list (a search's result): drawn again, it stays right
      const t = $("grid").querySelector('.tile[data-i="' + it.i + '"]');
      if (!t) continue;
      paintTile(t, it);
      n++;
    }
    return n;
  }
  // the open item panel after an edit: its details drawn again when they changed; the picture,
  // the neighbours and the panel's scroll stay. Its cluster and the cluster's name are read off
  // the labels and cluster table just fetched; the item is fetched again only when its tags may
  // have changed, which leaves no trace there: more than one edit since, or one that moved no item
  // and changed no cluster but its tags (a tag edit; an undo of one). An item another page moved
  // is said so.
  async function refreshItem(ch, oldSeq, others) {
    const i = S.itemOpen, was = S.itemShown;
    if (i === null || !was) return;
    let it;
    if (S.seq === oldSeq + 1 && (ch.moved.size || (ch.meta.size && !ch.tags))) {
      const c = S.clusters.get(S.L[i]);
      it = Object.assign({}, was, { cluster: S.L[i], cluster_name: c ? c.name : null });
    } else {
      try { it = await api("api/items/" + i); } catch (e) { return; }  // the next refresh tries again
    }
    if (S.itemOpen !== i || S.itemShown !== was) return;  // another item opened meanwhile
    if (JSON.stringify(itemDetails(it)) === JSON.stringify(itemDetails(was))) return;
    drawItemDetails(it);
    if (others && it.cluster !== was.cluster) toast("item " + it.name + " (open) was moved from " + label(was.cluster) + " to " + label(it.cluster));
  }
  async function refresh(keepView, others) {
    const t0 = performance.now(), oldL = S.L, oldClusters = S.clusters, oldSeq = S.seq;
    const [ls, cs] = await Promise.all([loadLabels(), loadClusters()]);
    S.seq = Math.min(ls, cs);
    const ch = changes(oldL, oldClusters);
    const viewGone = ch === null ? true : dropGone(ch, oldL, oldClusters, others);
    // the map coloured by a coarse level: each item's group there follows the curated clusters
    if (S.level && S.levelLabels && (ch === null || ch.moved.size || ch.meta.size)) {
      const lvl = S.level;
      try {
        const b = (await api("api/levels/" + encodeURIComponent(lvl), { binary: true })).buf;
        if (S.level === lvl) S.levelLabels = new Int32Array(b);  // the person switched meanwhile: theirs wins
      } catch (e) { fail(e); }
    }
    buildPalette(); renderClusters(); renderMoveTargets(); renderScope(); updateCounts(); updateMapInfo();
    const render = !keepView && (viewGone || viewTouched(ch, oldL, oldSeq));
    const retinted = !render && ch ? retintGrid(ch) : 0;
    await Promise.all([render ? renderView() : null, ch ? refreshItem(ch, oldSeq, others) : null]);
    redraw();
    $("sync").textContent = "saved \u00b7 edit " + S.seq;
    S.refreshes.push({ seq: S.seq, ms: performance.now() - t0, rendered: render, retinted: retinted,
      moved: ch ? Array.from(ch.moved) : null, meta: ch ? Array.from(ch.meta) : null });
    if (S.refreshes.length > 50) S.refreshes.shift();
  }
  // one poll at a time: setInterval does not wait for an async poll, and under load (a refresh
  // taking longer than the interval) a second poll saw the edit the first was still refreshing to
  // and refreshed again: the view drawn twice (a button redrawn under the pointer lost its click),
  // each of another page's changes said twice
  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const v = await api("api/version");
      S.polls++;
      if (v.replaced) { $("sync").textContent = "the run folder was re-clustered: restart the studio"; return; }
      if (v.map && S.info && (v.map !== S.info.map_method || v.map_pending !== S.info.map_pending)) await loadMap(v);
      if (v.seq !== S.seq && !S.editing) await refresh(false, true);
    } catch (e) { $("sync").textContent = "server not reachable"; } finally { polling = false; }
  }
  async function loadMap(v) {  // the UMAP map laid out in the background replaces the PCA one
    const map = await api("api/map", { binary: true });
    const f = new Float32Array(map.buf);
    S.X = f.subarray(0, S.n); S.Y = f.subarray(S.n, 2 * S.n);
    S.info.map_method = v.map; S.info.map_pending = v.map_pending;
    computeBounds(); resize(); updateMapInfo();
  }

  // ------------------------------------------------------------------ cluster list
  function renderClusters() { keepFocus($("cluster-list"), "data-cluster", drawClusters); }
  function drawClusters() {
    const list = clear($("cluster-list"));
    const f = $("filter").value.trim().toLowerCase();
    // "new": the clusters a carry from a previous run found no ancestor for (to review)
    const arr = Array.from(S.clusters.values()).filter((c) => !f || c.name.toLowerCase().includes(f) || String(c.id) === f || (f === "new" && c.new));
    arr.sort((a, b) => (b.size - a.size) || (a.id - b.id));
    const groups = S.level && S.groups[S.level];
    const row = (c) => {
      const cur = S.view.kind === "cluster" && S.view.id === c.id;
      // what a screen reader says of the row: its name and size and the states the badges show
      // (not the checkbox's title nor the bare size, which its text alone gave)
      const said = c.name + ", " + fmt(c.size) + " items" + (c.name_sure === false ? ", unsure name" : "") + (c.junk ? ", junk" : "")
        + (c.named_by === "person" ? ", named by a person" : "") + (c.new ? ", new" : "") + (S.checked.has(c.id) ? ", checked for a merge" : "");
      // the row: a list item holding two sibling controls, the merge checkbox and the button that
      // opens the cluster (not a role=button row holding the checkbox: a control in a control)
      const open = el("button", { type: "button", class: "crow", "data-cluster": c.id, "aria-label": said, "aria-current": cur ? "true" : null },
        el("span", { class: "swatch" }),
        el("span", { class: "cname" + (c.name_sure === false ? " unsure" : ""), text: c.name, title: c.name + " (#" + c.id + ")" + (c.name_sure === false ? ": " + (c.name_why || "unsure") : "") }),
        c.name_sure === false ? el("span", { class: "unsure-mark", text: "?", title: c.name_why || "the automatic name is unsure" }) : null,
        c.junk ? el("span", { class: "badge junk", text: "junk" }) : null,
        c.named_by === "person" ? el("span", { class: "badge hand", text: "named", title: "named by a person" }) : null,
        c.new ? el("span", { class: "badge new", text: "new", title: "no ancestor in the previous run this run's curation was carried from: review it (filter: new)" }) : null,
        el("span", { class: "size", text: fmt(c.size) }));
      const li = el("li", { "data-cluster": c.id, class: (cur ? "current" : "") + (c.size === 0 ? " empty" : "") },
        c.id >= 0 ? el("input", { type: "checkbox", class: "mcheck", title: "check to merge", "aria-label": "check " + c.name + " (#" + c.id + ") for a merge", checked: S.checked.has(c.id),
          onclick: (ev) => { ev.stopPropagation(); if (ev.target.checked) S.checked.add(c.id); else S.checked.delete(c.id); mergeState(); } }) : el("span", { style: "width:13px" }),
        open);
      li.querySelector(".swatch").style.background = colorOf(c.id);
      li.addEventListener("click", () => showCluster(c.id));  // the button's click, and the row's edges by mouse
      return li;
    };
    if (groups) {
      const by = new Map();
      for (const c of arr) { const g = groups[String(c.id)]; const key = g === undefined ? "-" : String(g); if (!by.has(key)) by.set(key, []); by.get(key).push(c); }
      const keys = Array.from(by.keys()).sort((a, b) => by.get(b).reduce((s, c) => s + c.size, 0) - by.get(a).reduce((s, c) => s + c.size, 0));
      for (const k of keys) {
        const gname = (S.groupNames[S.level] || {})[k];
        // a group of the run's level (not the junk branch) can be named: a level rename edit
        const run = (S.groupClusters[S.level] || {})[k];
        const head = el("li", { class: "group", "data-group": k },
          el("span", { class: "gtext", text: S.level + ": " + (gname ? gname + " (group " + k + ")" : "group " + k) + " (" + by.get(k).length + " clusters)" }),
          run !== undefined && run >= 0 ? el("button", { class: "group-rename", text: "rename", title: "name this group of " + S.level + " (cluster " + run + " of the run's level): the published model's path names it so",
            onclick: (ev) => { ev.stopPropagation(); renameGroup(head, run, gname || ""); } }) : null);
        list.appendChild(head);
        for (const c of by.get(k)) list.appendChild(row(c));
      }
    } else {
      for (const c of arr) list.appendChild(row(c));
    }
    for (const sp of S.special) if (sp.size > 0 && (!f || sp.name.includes(f))) {
      list.appendChild(row({ id: sp.id, name: sp.name, size: sp.size, junk: false, named_by: "" }));
    }
    mergeState();
  }
  $("filter").addEventListener("input", renderClusters);
  function checked() { return Array.from(S.checked).filter((id) => S.clusters.has(id)); }
  function mergeState() {
    const c = checked();
    const hidden = c.filter((id) => !document.querySelector('#cluster-list li[data-cluster="' + id + '"]')).length;
    $("merge").disabled = c.length < 2;
    $("merge-info").textContent = c.length ? c.length + " checked" + (hidden ? " (" + hidden + " not shown by the filter)" : "") : "";
  }
  $("merge").addEventListener("click", async () => {
    const ids = checked();
    if (ids.length < 2) return;
    const r = await edit({ kind: "merge", clusters: ids });
    if (r) {
      S.checked.clear(); toast("merged " + ids.length + " clusters into #" + r.edit.into);
      await showCluster(r.edit.into);
      focusRow(r.edit.into);  // the merge button is disabled now: the focus goes to the cluster made
    }
  });

  function updateCounts() {
    let alive = 0, items = 0;
    for (const c of S.clusters.values()) if (c.size > 0) { alive++; items += c.size; }
    $("counts").textContent = fmt(S.n) + " items \u00b7 " + alive + " clusters";
  }
  function renderMoveTargets() {
    const keep = $("move-to").value;
    const sel = clear($("move-to"));
    sel.appendChild(el("option", { value: "new", text: "\u2192 a new cluster" }));
    const arr = Array.from(S.clusters.values()).filter((c) => c.size > 0 || c.origin !== "fitted").sort((a, b) => a.name.localeCompare(b.name));
    for (const c of arr) sel.appendChild(el("option", { value: String(c.id), text: "\u2192 " + c.name + " (#" + c.id + ")" }));
    sel.appendChild(el("option", { value: "-1", text: "\u2192 unassigned (noise)" }));
    if (Array.from(sel.options).some((o) => o.value === keep)) sel.value = keep;  // a refresh keeps the choice
  }
  function renderScope() {
    const s = $("scope"), cur = s.value;
    clear(s).appendChild(el("option", { value: "", text: "everywhere" }));
    if (S.view.kind === "cluster" && S.view.id >= 0 && S.clusters.has(S.view.id)) {
      s.appendChild(el("option", { value: String(S.view.id), text: "in " + S.clusters.get(S.view.id).name }));
    }
    s.value = Array.from(s.options).some((o) => o.value === cur) ? cur : "";
  }

  // ------------------------------------------------------------------ edits
  async function edit(body) {
    S.editing = true;
    try {
      const t0 = performance.now();
      const r = await api("api/edits", { method: "POST", body: body });
      S.lastAckMs = performance.now() - t0;
      S.lastEdit = r;
      await refresh(false);
      return r;
    } catch (e) { await failed(e); return null; } finally { S.editing = false; }
  }
  // a 409: another studio or tab changed what the edit was made on (a cluster merged away, the
  // latest edit not the one undo showed): say what happened and show the state now
  async function failed(e) {
    fail(e);
    if (e.status === 409) { S.conflicts = (S.conflicts || 0) + 1; try { await refresh(false); } catch (e2) { /* the poll retries */ } }
  }
  // presses wait for the one before (Ctrl+Z twice undoes two edits): each names the edit the
  // state shows after the one before, not the same edit again (a 409 for every press but the first)
  let undoQueue = Promise.resolve();
  function undoRedo(which) {
    undoQueue = undoQueue.then(() => undoRedoNow(which));
    return undoQueue;
  }
  async function undoRedoNow(which) {
    S.editing = true;
    try {  // the edit this page shows as the one to take back / re-apply: a 409 if another came since
      const r = await api("api/" + which, { method: "POST", body: { target: which === "undo" ? S.undoTarget : S.redoTarget } });
      toast(which + ": " + describe(r.edit));
      await refresh(false);
      rescueFocus(S.lastClicked);
    } catch (e) { await failed(e); } finally { S.editing = false; }
  }
  function describe(e) { return e && e.target ? "edit " + e.target : ""; }
  $("undo").addEventListener("click", () => undoRedo("undo"));
  $("redo").addEventListener("click", () => undoRedo("redo"));

  // ------------------------------------------------------------------ keyboard
  // The page's own keys (listed in the "?" overlay and the README), never while typing in a box:
  // arrows move between the gallery's tiles and the cluster list's rows, o opens the item a tile
  // shows, x checks a row for a merge, / f g c m jump to the search, the filter, the gallery,
  // the cluster list and the selection's "move to"; Escape closes the overlay, then the item
  // panel, then clears the selection. After an edit that takes away the control the focus was
  // on (the selection bar goes once its items moved, a merged row, a closed panel) the focus goes
  // to the gallery's tile at the same place, not to the page's body.
  function focusable(e) { return e && e.isConnected && !e.closest("[hidden]") && !e.disabled; }
  function focusTile(idx) {
    const tiles = document.querySelectorAll("#grid .tile");
    if (!tiles.length) return false;
    tiles[Math.max(0, Math.min(tiles.length - 1, idx || 0))].focus();
    return true;
  }
  function focusRow(id) {
    const row = (id !== undefined && id !== null && document.querySelector('#cluster-list li[data-cluster="' + id + '"] .crow'))
      || document.querySelector("#cluster-list li.current .crow") || document.querySelector("#cluster-list .crow");
    if (row) row.focus();
    return !!row;
  }
  S.focusLost = 0;  // times the focus was given back after an edit left it on the body (tests)
  // the focus left on the body (its control hidden or removed): to the gallery, else the list
  function rescueFocus(idx) {
    const a = document.activeElement;
    if (a && a !== document.body && focusable(a)) return;
    S.focusLost++;
    if (!focusTile(idx)) focusRow(S.view.kind === "cluster" ? S.view.id : null);
  }
  function gridColumns(tiles) {  // tiles in the gallery's first row (the grid's auto-fill)
    let n = 0;
    while (n < tiles.length && tiles[n].offsetTop === tiles[0].offsetTop) n++;
    return Math.max(1, n);
  }
  $("grid").addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (!t.classList || !t.classList.contains("tile") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const tiles = Array.from(document.querySelectorAll("#grid .tile")), at = tiles.indexOf(t);
    if (at < 0) return;
    const cols = gridColumns(tiles);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, ArrowDown: at + cols, ArrowUp: at - cols, Home: 0, End: tiles.length - 1 }[ev.key];
    if (to !== undefined) {
      ev.preventDefault();
      if (to >= 0 && to < tiles.length) tiles[to].focus();
      else if (ev.key === "ArrowDown" && !$("next").disabled && !$("pager").hidden) $("next").focus();  // the page's last row: on to the pager
    } else if (ev.key === "o" || ev.key === "i") {
      ev.preventDefault(); ev.stopPropagation();
      openItem(Number(t.getAttribute("data-i")));
    }
  });
  $("cluster-list").addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (!t.classList || !t.classList.contains("crow") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const rows = Array.from(document.querySelectorAll("#cluster-list .crow")), at = rows.indexOf(t);
    const to = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: rows.length - 1 }[ev.key];
    if (to !== undefined) {
      ev.preventDefault();
      if (to >= 0 && to < rows.length) rows[to].focus();
    } else if (ev.key === "x") {  // check / uncheck the row for a merge (the checkbox is a Tab stop too)
      const box = t.parentElement.querySelector(".mcheck");
      if (box) { ev.preventDefault(); ev.stopPropagation(); box.click(); renderClusters(); }
    }
  });
  // the "?" overlay: a dialog the focus goes into and comes back from
  let helpFrom = null;
  function openHelp() {
    helpFrom = document.activeElement;
    $("help").hidden = false;
    $("help-close").focus();
  }
  function closeHelp() {
    $("help").hidden = true;
    if (focusable(helpFrom) && helpFrom !== document.body) helpFrom.focus(); else rescueFocus();
    helpFrom = null;
  }
  $("help-open").addEventListener("click", openHelp);
  $("help-close").addEventListener("click", closeHelp);
  $("help").addEventListener("keydown", (ev) => {  // the focus stays in the dialog while it is open
    if (ev.key === "Escape") { ev.preventDefault(); ev.stopPropagation(); closeHelp(); }
    else if (ev.key === "Tab") { ev.preventDefault(); $("help-close").focus(); }
  });
  // "move to a new cluster" asks the name in a dialog of the page (window.prompt was unstyled,
  // outside the page's keys and its focus handling): Enter confirms, Escape / cancel give null;
  // an empty name is refused with a message; the focus goes back to where it was either way
  let nameDone = null;
  function askName() {
    const d = $("name-dialog"), box = $("new-name"), from = document.activeElement;
    box.value = ""; box.removeAttribute("aria-invalid"); $("new-name-error").hidden = true; $("new-name-error").textContent = "";
    d.showModal(); box.focus();
    return new Promise((resolve) => {
      nameDone = (v) => {
        nameDone = null;
        if (d.open) d.close();
        if (focusable(from) && from !== document.body) from.focus(); else rescueFocus();
        resolve(v);
      };
    });
  }
  $("name-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("new-name").value.trim();
    if (!v) {
      $("new-name").setAttribute("aria-invalid", "true");
      $("new-name-error").textContent = "give the new cluster a name";
      $("new-name-error").hidden = false;
      $("new-name").focus();
      return;
    }
    if (nameDone) nameDone(v);
  });
  $("new-name-cancel").addEventListener("click", () => { if (nameDone) nameDone(null); });
  $("name-dialog").addEventListener("keydown", (ev) => {  // Escape closes the dialog only, not the selection too
    if (ev.key !== "Escape") return;
    ev.preventDefault(); ev.stopPropagation();
    if (nameDone) nameDone(null);
  });
  $("name-dialog").addEventListener("cancel", (ev) => { ev.preventDefault(); if (nameDone) nameDone(null); });
  $("name-dialog").addEventListener("close", () => { if (nameDone) nameDone(null); });
  // down from the search box to its results, from the filter box to the rows it left (each was
  // a dozen Tabs away, past the header's controls)
  $("q").addEventListener("keydown", (ev) => { if (ev.key === "ArrowDown" && focusTile(0)) ev.preventDefault(); });
  $("filter").addEventListener("keydown", (ev) => {
    const row = document.querySelector("#cluster-list .crow");
    if (ev.key === "ArrowDown" && row) { ev.preventDefault(); row.focus(); }
  });
  // a button disabled while its request runs (export, publish, a split preview) drops the focus
  // to the body: given back when it is enabled again, unless the person went elsewhere
  function busyButton(btn) {
    const had = document.activeElement === btn;
    btn.disabled = true;
    return () => { btn.disabled = false; if (had && (document.activeElement === document.body || !document.activeElement)) btn.focus(); };
  }
  document.addEventListener("keydown", (ev) => {
    const typing = /INPUT|SELECT|TEXTAREA/.test((document.activeElement || {}).tagName || "");
    if (typing || !$("help").hidden || $("name-dialog").open) return;
    const plain = !ev.ctrlKey && !ev.metaKey && !ev.altKey;
    const jump = (e) => { ev.preventDefault(); if (focusable(e)) e.focus(); };
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undoRedo(ev.shiftKey ? "redo" : "undo"); }
    else if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "y") { ev.preventDefault(); undoRedo("redo"); }
    else if (ev.key === "Escape") {
      if (S.itemOpen !== null && !$("item-panel").hidden) { closeItem(); return; }  // one thing at a time
      S.selected.clear(); selectionChanged(); redraw();
    } else if (plain && ev.key === "?") { ev.preventDefault(); openHelp(); }
    else if (plain && ev.key === "/") jump($("q"));
    else if (plain && ev.key === "f") jump($("filter"));
    else if (plain && ev.key === "g") { ev.preventDefault(); focusTile(0); }
    else if (plain && ev.key === "c") { ev.preventDefault(); focusRow(S.view.kind === "cluster" ? S.view.id : null); }
    else if (plain && ev.key === "m" && S.selected.size) jump($("move-to"));
  });

  // ------------------------------------------------------------------ selection
  function selectionChanged() {
    const n = S.selected.size;
    $("selbar").hidden = n === 0;
    $("sel-count").textContent = n + " selected";
    for (const t of document.querySelectorAll("#grid .tile")) {
      const on = S.selected.has(Number(t.getAttribute("data-i")));
      t.classList.toggle("selected", on); t.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }
  $("clear-sel").addEventListener("click", () => { S.selected.clear(); selectionChanged(); redraw(); rescueFocus(S.lastClicked); });
  $("show-sel").addEventListener("click", showSelection);
  $("move").addEventListener("click", async () => {
    const to = $("move-to").value, items = Array.from(S.selected);
    if (!items.length) return;
    const body = { kind: "move", items: items, to: to === "new" ? "new" : Number(to) };
    if (to === "new") { const nm = await askName(); if (nm === null) return; body.name = nm; }
    const at = S.lastClicked;
    const r = await edit(body);
    if (r) { toast("moved " + items.length + " items to #" + r.edit.to); S.selected.clear(); selectionChanged(); rescueFocus(at); }
  });
  $("to-junk").addEventListener("click", async () => {
    const items = Array.from(S.selected);
    if (!items.length) return;
    const at = S.lastClicked;
    const r = await edit({ kind: "move", items: items, to: "junk" });
    if (r) { toast(items.length + " items marked as junk"); S.selected.clear(); selectionChanged(); rescueFocus(at); }
  });
  $("tag-items").addEventListener("click", async () => {
    const t = $("sel-tag").value.trim(), items = Array.from(S.selected);
    if (!t || !items.length) return;
    const r = await edit({ kind: "tag", items: items, add: [t] });
    if (r) { toast("tagged " + items.length + " items"); $("sel-tag").value = ""; }
  });
  function tileClick(ev, i, idx) {
    if (ev.shiftKey && S.lastClicked !== null) {
      const a = Math.min(S.lastClicked, idx), b = Math.max(S.lastClicked, idx);
      for (let k = a; k <= b; k++) S.selected.add(S.items[k].i);
    } else if (S.selected.has(i)) S.selected.delete(i);
    else S.selected.add(i);
    S.lastClicked = idx;
    selectionChanged(); redraw();
  }

  // ------------------------------------------------------------------ views: cluster, search, selection
  async function showCluster(id, focusItem) {
    S.view = { kind: "cluster", id: id }; S.page = 0; S.preview = null;
    S.highlight = id; $("split-panel").hidden = true;
    renderScope(); updateMapInfo(); renderClusters();
    await renderView();
    redraw();
    if (focusItem !== undefined) { const t = document.querySelector('#grid .tile[data-i="' + focusItem + '"]'); if (t) t.scrollIntoView({ block: "nearest" }); }
  }
  function showSelection() {
    leaveCluster();
    S.view = { kind: "selection" }; S.page = 0;
    renderView();
  }
  async function renderView() {
    const v = S.view;
    if (v.kind === "cluster") return renderCluster(v.id);
    if (v.kind === "search") return renderSearch(v.result);
    if (v.kind === "dups") return renderDups();
    if (v.kind === "selection") {
      const all = Array.from(S.selected);
      const head = clear($("view-head"));
      head.removeAttribute("data-cluster");
      head.appendChild(el("h2", { text: "Selection" }));
      head.appendChild(el("span", { class: "muted", text: all.length + " items (from the map or galleries): move, junk or tag them below" }));
      const ids = all.slice(S.page * S.pageSize, (S.page + 1) * S.pageSize);
      let page = ids.map((i) => ({ i: i, name: itemName(i), cluster: S.L[i], p: 0 }));
      try {
        if (ids.length) page = (await api("api/briefs?ids=" + ids.join(","))).items;
      } catch (e) { fail(e); }
      for (const it of page) names.set(it.i, it.name);
      if (S.view.kind !== "selection") return;
      return renderGrid(page, all.length);
    }
    clear($("view-head")).appendChild(el("span", { class: "muted", text: "Choose a cluster on the left or on the map, or search." }));
    renderGrid([], 0);
  }

  async function renderCluster(id) {
    let info, page;
    try {
      [info, page] = await Promise.all([
        id >= 0 ? api("api/clusters/" + id) : Promise.resolve({ id: id, name: id === -1 ? "unassigned (noise)" : "outliers", size: null, tags: [] }),
        api("api/clusters/" + id + "/items?" + q({ offset: S.page * S.pageSize, limit: S.pageSize, order: S.order })),
      ]);
    } catch (e) { fail(e); return; }
    if (S.view.kind !== "cluster" || S.view.id !== id) return;
    // the page shown is past the end (another page moved items away): show the last page there is
    if (!page.items.length && page.total > 0 && S.page > 0) { S.page = Math.ceil(page.total / S.pageSize) - 1; return renderCluster(id); }
    const head = $("view-head");
    // a box in the head the person is typing in is left alone (the head is drawn next time)
    const a = document.activeElement;
    const typing = head.contains(a) && a.tagName === "INPUT" && a.value !== (a.getAttribute("data-shown") || "");
    if (!typing) {
      // what the person had put in the head of this cluster and not applied yet (a name typed,
      // a tag, the parts chosen for a split) and the control that had the keyboard's focus
      const same = head.getAttribute("data-cluster") === String(id);
      const typed = {};
      if (same) for (const e of head.querySelectorAll("input[id], select[id]")) if (e.value !== (e.getAttribute("data-shown") || "")) typed[e.id] = e.value;
      const focusId = same && head.contains(a) ? a.id : "";
      clear(head);
      head.setAttribute("data-cluster", String(id));
      const sw = el("span", { style: "width:14px;height:14px;border-radius:3px;display:inline-block" }); sw.style.background = colorOf(id);
      head.appendChild(sw);
      if (id >= 0) {
        const input = el("input", { class: "name-input", id: "cluster-name", value: info.name, "data-shown": info.name, maxlength: "200", title: "cluster name: edit and press Enter" });
        input.addEventListener("keydown", (ev) => { if (ev.key === "Enter") rename(id, input.value); });
        head.appendChild(input);
        head.appendChild(el("button", { id: "rename", text: "rename", onclick: () => rename(id, input.value) }));
        head.appendChild(el("span", { class: "muted", text: "#" + id }));
        if (info.named_by === "person") head.appendChild(el("span", { class: "badge hand", text: "named by a person" }));
        // how sure the automatic name is, as the cluster list marks it (the name_why says on what it rests)
        else if (info.name_sure === false) head.appendChild(el("span", { class: "badge unsure", id: "name-unsure", text: "unsure name?", title: info.name_why || "the automatic name is unsure" }));
        else if (info.name_sure === null && info.name_why) head.appendChild(el("span", { class: "badge unmeasured", id: "name-unmeasured", text: "name not measured", title: info.name_why }));
        head.appendChild(el("button", { id: "junk-toggle", class: info.junk ? "on" : "", text: info.junk ? "junk \u2713" : "mark as junk",
          onclick: () => edit({ kind: "junk", clusters: [id], value: !info.junk }) }));
        const k = el("select", { id: "split-k", "data-shown": "auto", title: "parts: automatic (the pipeline's own choice) or a number" }, el("option", { value: "auto", text: "auto" }));
        for (let j = 2; j <= 12; j++) k.appendChild(el("option", { value: String(j), text: String(j) }));
        head.appendChild(el("span", { class: "chips" }, "split into", k, el("button", { id: "split-preview", text: "preview split", onclick: () => previewSplit(id, k.value) })));
      } else {
        head.appendChild(el("h2", { text: info.name }));
      }
      const order = el("select", { id: "order", title: "order" },
        ...[["typical", "most typical first"], ["borderline", "borderline first"], ["map", "left to right on the map"], ["file", "by file name"]]
          .concat(S.info && S.info.has_truth ? [["label", "label not the cluster's first"]] : []).map((o) => el("option", { value: o[0], text: o[1] })));
      order.value = S.order; order.setAttribute("data-shown", S.order);
      order.addEventListener("change", () => { S.order = order.value; S.page = 0; renderView(); });
      head.appendChild(order);
      head.appendChild(el("button", { id: "select-all", text: "select all", onclick: () => selectAll(id) }));
      const meta = el("div", { class: "meta" });
      meta.appendChild(el("b", { text: fmt(page.total) })); meta.appendChild(document.createTextNode(" items"));
      if (info.mean_probability !== undefined) meta.appendChild(document.createTextNode(" \u00b7 mean membership " + info.mean_probability.toFixed(2)));
      if (info.top_classes && info.top_classes.length) meta.appendChild(document.createTextNode(" \u00b7 top classes: " + info.top_classes.map((t) => t.class + " " + Math.round(100 * t.share) + "%").join(", ")));
      if (info.true_labels) meta.appendChild(document.createTextNode(" \u00b7 labels: " + info.true_labels.map((t) => t.label + " " + Math.round(100 * t.share) + "%").join(", ")));
      head.appendChild(meta);
      if (id >= 0) {
        const chips = el("span", { class: "chips", id: "cluster-tags" }, el("span", { class: "muted", text: "tags:" }));
        for (const t of info.tags || []) {
          chips.appendChild(el("span", { class: "chip" }, el("span", { class: "tag", text: t }),
            el("button", { title: "remove tag", "aria-label": "remove tag " + t, text: "\u00d7", onclick: () => edit({ kind: "tag", clusters: [id], remove: [t] }) })));
        }
        const ti = el("input", { id: "cluster-tag", placeholder: "add a tag", maxlength: "64", size: "12" });
        ti.addEventListener("keydown", async (ev) => {
          if (ev.key !== "Enter" || !ti.value.trim()) return;
          const t = ti.value.trim();
          ti.value = "";  // applied, not typed: the head (its chips) is drawn anew, the box empty
          if (!(await edit({ kind: "tag", clusters: [id], add: [t] })) && $("cluster-tag") && !$("cluster-tag").value) $("cluster-tag").value = t;
        });
        chips.appendChild(ti);
        head.appendChild(chips);
      }
      for (const [eid, val] of Object.entries(typed)) {
        const e = $(eid);
        if (e && head.contains(e) && (e.tagName !== "SELECT" || Array.from(e.options).some((o) => o.value === val))) e.value = val;
      }
      if (focusId && $(focusId)) $(focusId).focus({ preventScroll: true });  // a box's caret: at its end
    }
    for (const it of page.items) names.set(it.i, it.name);
    renderGrid(page.items, page.total);
  }
  async function rename(id, name) {
    if (!name.trim()) return;
    // the box holds what is being applied, not a name typed and left: the head is drawn anew
    const box = $("cluster-name"), shown = box ? box.getAttribute("data-shown") : null;
    if (box) box.setAttribute("data-shown", name);
    const r = await edit({ kind: "rename", cluster: id, name: name });
    if (r) toast(r.unchanged ? "#" + id + " already has that name" : "renamed #" + id);
    else if (box && $("cluster-name") === box) box.setAttribute("data-shown", shown);
  }
  // a coarse group's name, typed in its header: Enter names it (an edit: undo takes it back), Escape leaves it
  function renameGroup(head, run, shown) {
    const level = S.level;
    const input = el("input", { class: "group-name", type: "text", value: shown, title: "the group's name; Enter to apply, Escape to leave" });
    head.querySelector(".gtext").replaceWith(input);
    const btn = head.querySelector(".group-rename"); if (btn) btn.remove();
    input.addEventListener("click", (ev) => ev.stopPropagation());
    // the box is gone once the list is drawn again: the focus goes to the group's rename button
    const back = () => { const b = document.querySelector('#cluster-list li.group[data-group="' + head.getAttribute("data-group") + '"] .group-rename'); if (b) b.focus(); else rescueFocus(); };
    input.addEventListener("keydown", async (ev) => {
      if (ev.key === "Escape") { ev.stopPropagation(); renderClusters(); back(); return; }
      if (ev.key !== "Enter" || !input.value.trim()) return;
      const r = await edit({ kind: "level_rename", level: level, cluster: run, name: input.value });
      if (r) toast("named group " + run + " of " + level + " \u201c" + r.edit.name + "\u201d");
      else renderClusters();
      back();
    });
    input.focus(); input.select();
  }
  async function selectAll(id) {
    try {
      const r = await api("api/clusters/" + id + "/all");
      for (const i of r.items) S.selected.add(i);
      selectionChanged(); redraw();
    } catch (e) { fail(e); }
  }

  function renderGrid(items, total) { keepFocus($("grid"), "data-i", () => drawGrid(items, total)); }
  // the tiles of items still shown are kept, not made again (their pictures are not loaded again,
  // from the server or the browser's cache: a refresh after another page moved a few items of a
  // cluster draws the few tiles that changed); a tile is made again when what it shows changed
  function tileKey(it) { return it.i + "|" + it.name + "|" + (it.score === undefined ? "" : it.score.toFixed(3)); }
  // what a kept tile shows of the state now: its item's cluster (swatch colour and name), selection
  function paintTile(tile, it) {
    tile.setAttribute("data-cluster", String(it.cluster));
    const sw = tile.querySelector(".sw");
    sw.style.background = colorOf(it.cluster); sw.title = clusterText(it.cluster);
    tile.classList.toggle("selected", S.selected.has(it.i));
    tile.setAttribute("aria-pressed", S.selected.has(it.i) ? "true" : "false");  // selected: said, not only coloured
  }
  function makeTile(it) {
    const tile = el("figure", { class: "tile", "data-i": it.i, title: it.name + (it.label ? " \u00b7 label " + it.label : ""), "aria-label": it.name + (it.label ? ", label " + it.label : "") });
    const img = el("img", { loading: "lazy", decoding: "async", alt: "", src: thumbURL(it.i) });
    img.addEventListener("error", () => { img.replaceWith(el("div", { class: "noimg", text: "no image" })); });
    tile.appendChild(img);
    tile.appendChild(el("figcaption", { class: "cap", text: it.name }));
    tile.appendChild(el("span", { class: "sw" }));
    if (it.score !== undefined) tile.appendChild(el("span", { class: "score", text: it.score.toFixed(3) }));
    tile.addEventListener("click", (ev) => tileClick(ev, it.i, tile.mcIdx));  // its place in the gallery now
    pressable(tile);
    tile.addEventListener("dblclick", () => openItem(it.i));
    tile.appendChild(openButton(it));
    return tile;
  }
  function drawGrid(items, total) {
    S.items = items; S.total = total;
    const g = $("grid"), had = new Map();
    for (const t of g.children) if (t.mcKey !== undefined) had.set(t.mcKey, t);
    clear(g);
    let made = 0;
    items.forEach((it, idx) => {
      const key = tileKey(it);
      let tile = had.get(key);
      if (tile) had.delete(key);
      else { tile = makeTile(it); tile.mcKey = key; made++; }
      tile.mcIdx = idx;
      paintTile(tile, it);
      g.appendChild(tile);
    });
    S.tilesMade = made;
    const pages = Math.max(1, Math.ceil(total / S.pageSize));
    $("page-info").textContent = total ? "page " + (S.page + 1) + " of " + pages + " (" + fmt(total) + ")" : "";
    $("prev").disabled = S.page <= 0; $("next").disabled = S.page >= pages - 1;
    $("pager").hidden = S.view.kind === "search" || total <= S.pageSize;
  }
  $("prev").addEventListener("click", () => { if (S.page > 0) { S.page--; renderView(); } });
  $("next").addEventListener("click", () => { S.page++; renderView(); });

  // ------------------------------------------------------------------ split
  async function previewSplit(id, k) {
    const btn = $("split-preview"), done = busyButton(btn); btn.textContent = "splitting\u2026";
    try {
      const t0 = performance.now();
      const p = await api("api/split/preview", { method: "POST", body: { cluster: id, k: k === "auto" ? "auto" : Number(k) } });
      S.lastPreviewMs = performance.now() - t0;
      const part = new Map(), colors = [];
      p.labels.items.forEach((i, j) => part.set(i, p.labels.parts[j]));
      p.parts.forEach((pp, j) => colors.push(u32(hsl2rgb((j * 0.61803398875 + 0.13) % 1, 0.8, 0.5))));
      S.preview = { cluster: id, part: part, colors: colors, id: p.preview, result: p };
      renderSplit(p);
      redraw();
    } catch (e) { fail(e); } finally { done(); btn.textContent = "preview split"; }
  }
  function renderSplit(p) {
    const box = clear($("split-panel"));
    box.hidden = false;
    box.appendChild(el("div", null, el("b", { text: "Split preview: " + p.k + " parts of " + fmt(p.n) + " items" }),
      el("span", { class: "muted", text: " (" + (p.space === "tree" ? "its sub-clusters at the finer level " + p.level : "re-clustered in " + p.space + " space") + " in " + p.seconds + " s; coloured on the map; the largest part keeps #" + p.cluster + ")" })));
    const parts = el("div", { class: "parts" });
    p.parts.forEach((pp, j) => {
      const sw = el("span", { class: "sw" }); sw.style.background = "#" + (S.preview.colors[j] & 0xffffff).toString(16).padStart(6, "0").replace(/(..)(..)(..)/, "$3$2$1");
      const ex = el("span", { class: "ex" });
      for (const e of pp.examples.slice(0, 8)) { names.set(e.i, e.name); ex.appendChild(el("img", { src: thumbURL(e.i, 96), alt: "", title: e.name, loading: "lazy" })); }
      // an unsure automatic name marked as the cluster list marks one (its why on hover)
      const mark = pp.name_sure === false ? el("span", { class: "unsure-mark", text: "?", title: pp.name_why || "the automatic name is unsure" }) : null;
      parts.appendChild(el("div", { class: "part", "data-name-sure": pp.name_sure === false ? "no" : pp.name_sure === true ? "yes" : "" }, sw,
        el("input", { class: "part-name" + (pp.name_sure === false ? " unsure" : ""), value: pp.name, maxlength: "200", "aria-label": "name of part " + (j + 1) + " (" + fmt(pp.size) + " items)" }), mark,
        el("span", { class: "muted", text: fmt(pp.size) + " items" }), ex));
    });
    box.appendChild(parts);
    box.appendChild(el("button", { class: "primary", id: "split-apply", text: "apply split", onclick: applySplit }));
    box.appendChild(document.createTextNode(" "));
    box.appendChild(el("button", { id: "split-cancel", text: "cancel", onclick: () => {
      S.preview = null; box.hidden = true; redraw();
      if ($("split-preview")) $("split-preview").focus();  // back where the preview was asked for
    } }));
  }
  async function applySplit() {
    const pv = S.preview;
    if (!pv) return;
    const nm = Array.from(document.querySelectorAll("#split-panel .part-name")).map((i) => i.value.trim() || null);
    const r = await edit({ kind: "split", preview: pv.id, names: nm });
    if (r) { toast("split #" + pv.cluster + " into " + r.edit.ids.length + " clusters"); S.preview = null; $("split-panel").hidden = true; renderClusters(); redraw(); rescueFocus(); }
  }

  // ------------------------------------------------------------------ search
  function leaveCluster() { S.preview = null; $("split-panel").hidden = true; }
  function searchResult(r) {
    leaveCluster();
    for (const it of r.items) names.set(it.i, it.name);
    S.view = { kind: "search", result: r }; S.page = 0;
    S.resultSet = new Set(r.items.map((it) => it.i));
    S.highlight = null; updateMapInfo();
    renderSearch(r); redraw();
  }
  function renderSearch(r) {
    const head = clear($("view-head"));
    head.removeAttribute("data-cluster");
    let title;
    if (r.method === "imagenet-wordnet") title = "Words: \u201c" + r.query + "\u201d \u2192 " + r.concept.name + " (" + r.concept.synset + ", " + r.concept.classes + " ImageNet classes" + (r.concept.via ? ", via " + r.concept.via : "") + ")";
    else if (r.method === "clip-text") title = "Words: \u201c" + r.query + "\u201d (CLIP text)";
    else if (r.method === "upload") title = (S.info.media === "audio" ? "Sound-alikes of your clip" : "Look-alikes of your image") + (r.filename ? " " + r.filename : "");
    else title = "More like " + itemName(r.item);
    head.appendChild(el("h2", { id: "search-title", text: title }));
    head.appendChild(el("span", { class: "muted", text: r.items.length + " shown of " + fmt(r.matches) + (r.cluster !== null && r.cluster !== undefined ? " in cluster #" + r.cluster : "") + " \u00b7 " + r.seconds + " s" }));
    if (r.warning) head.appendChild(el("span", { class: "badge junk", text: r.warning }));
    if (r.other_meanings && r.other_meanings.length) {
      const chips = el("span", { class: "chips" }, el("span", { class: "muted", text: "other meanings:" }));
      for (const m of r.other_meanings) chips.appendChild(el("span", { class: "chip link", text: m.name + " (" + m.synset + ")", onclick: () => wordSearch(m.synset) }));
      head.appendChild(chips);
    }
    head.appendChild(el("button", { text: "select all results", onclick: () => { for (const it of r.items) S.selected.add(it.i); selectionChanged(); redraw(); } }));
    renderGrid(r.items, r.items.length);
  }
  async function wordSearch(text) {
    try { searchResult(await api("api/search/words?" + q({ q: text, cluster: $("scope").value, limit: 200 }))); } catch (e) { fail(e); }
  }
  $("word-form").addEventListener("submit", (ev) => { ev.preventDefault(); const t = $("q").value.trim(); if (t) wordSearch(t); });
  async function similar(i) {
    try { searchResult(await api("api/search/similar?" + q({ item: i, cluster: $("scope").value, limit: 100 }))); } catch (e) { fail(e); }
  }
  $("upload").addEventListener("change", async () => {
    const f = $("upload").files[0];
    if (!f) return;
    const fd = new FormData(); fd.append("file", f); if ($("scope").value) fd.append("cluster", $("scope").value);
    try { searchResult(await api("api/search/image", { method: "POST", body: fd })); } catch (e) { fail(e); } finally { $("upload").value = ""; }
  });

  // ------------------------------------------------------------------ item panel
  async function openItem(i) {
    let it;
    S.itemOpen = i;
    try { it = await api("api/items/" + i); } catch (e) { if (S.itemOpen === i) S.itemOpen = S.itemShown ? S.itemShown.i : null; fail(e); return; }
    if (S.itemOpen !== i) return;  // another item opened (or the panel closed) meanwhile
    names.set(i, it.name);
    const p = $("item-panel"), wasIn = p.contains(document.activeElement);
    clear(p);
    p.hidden = false;
    p.appendChild(el("div", null, el("button", { id: "item-close", text: "close", onclick: closeItem }), " ",
      el("button", { id: "more-like", text: "more like this", onclick: () => similar(i) }), " ",
      el("button", { text: S.selected.has(i) ? "unselect" : "select", onclick: (ev) => { if (S.selected.has(i)) S.selected.delete(i); else S.selected.add(i); ev.target.textContent = S.selected.has(i) ? "unselect" : "select"; selectionChanged(); redraw(); } })));
    const img = el("img", { class: "big", src: "api/items/" + i + "/preview", alt: it.name });
    img.addEventListener("error", () => img.replaceWith(el("div", { class: "noimg", text: "no image" })));
    p.appendChild(img);
    if (wasIn) $("item-close").focus();  // a neighbour opened by the keyboard: the focus stays in the panel
    if (S.info.media === "audio") p.appendChild(el("audio", { controls: true, preload: "none", src: "api/items/" + i + "/audio", id: "item-audio" }));
    p.appendChild(el("div", { id: "item-details" }));
    drawItemDetails(it);
    if (it.duplicates && it.duplicates.length) {
      p.appendChild(el("h3", { text: "Duplicates (" + it.duplicates.length + ")" }));
      p.appendChild(thumbs(it.duplicates));
    }
    p.appendChild(el("h3", { text: "Nearest neighbours" }));
    if (it.neighbours) { p.appendChild(thumbs(it.neighbours)); return; }
    // null: the search index was still being built; the search by example waits for it
    const nb = p.appendChild(el("div", { class: "nb", id: "item-neighbours", text: "finding the nearest items ..." }));
    let r;
    try { r = await api("api/search/similar?item=" + i + "&limit=13"); } catch (e) { nb.textContent = ""; fail(e); return; }
    if (S.itemOpen === i && nb.isConnected) nb.replaceWith(thumbs(r.items.filter((n) => n.i !== i).slice(0, 12)));
  }
  // what of an item the edits can change (its cluster, the cluster's name, its tags)
  function itemDetails(it) { return [it.name, it.cluster, it.cluster_name, it.fitted_cluster, it.tags, it.label, it.path]; }
  function drawItemDetails(it) {
    const box = clear($("item-details"));
    S.itemShown = it;
    box.appendChild(el("h3", { id: "item-name", text: it.name }));
    const tb = el("table", { id: "item-table" });
    const row = (k, v) => tb.appendChild(el("tr", { "data-row": k }, el("th", { text: k }), el("td", { text: v })));
    row("cluster", (it.cluster_name || (it.cluster === -1 ? "unassigned" : "outlier")) + " (#" + it.cluster + ")");
    if (it.fitted_cluster !== it.cluster) row("fitted cluster", "#" + it.fitted_cluster);
    row("membership", it.probability.toFixed(3));
    if (it.label !== null && it.label !== undefined) row("label", it.label);
    if (it.tags.length) row("tags", it.tags.join(", "));
    if (it.top_classes) row("ImageNet", it.top_classes.map((t) => t.class + " " + (100 * t.p).toFixed(0) + "%").join(", "));
    if (it.path) row("file", it.path);
    box.appendChild(tb);
  }
  function thumbs(list) {
    const g = el("div", { class: "nb" });
    for (const n of list) {
      names.set(n.i, n.name);
      const im = el("img", { src: thumbURL(n.i, 96), alt: n.name, title: n.name + (n.score !== undefined ? " (" + n.score.toFixed(3) + ")" : ""), loading: "lazy", "data-i": n.i });
      im.addEventListener("click", () => openItem(n.i));
      g.appendChild(pressable(im));  // a neighbour opens by Enter too (it was mouse-only)
    }
    return g;
  }
  function closeItem() {
    const p = $("item-panel"), i = S.itemOpen, inside = p.contains(document.activeElement);
    p.hidden = true; clear(p); S.itemOpen = null; S.itemShown = null;
    // the focus was in the panel: back to the item's tile (else the gallery), not the body
    const t = i !== null && document.querySelector('#grid .tile[data-i="' + i + '"]');
    if (t) { if (inside || document.activeElement === document.body) t.focus(); } else if (inside) rescueFocus();
  }

  // ------------------------------------------------------------------ duplicate groups
  // the run's duplicate groups (cluster --dedup), a page of groups at a time: each member's
  // picture, folder and cluster, the copy the clean-dataset export keeps and why (with the
  // export's "keep copies under" folders), and edits on a group: move its copies to the kept
  // one's cluster, or select its members for the selection bar's move / junk / tag
  S.dupOrder = "size"; S.dupPageSize = 20;
  function showDuplicates() {
    leaveCluster();
    S.view = { kind: "dups" }; S.page = 0; S.highlight = null;
    renderScope(); updateMapInfo(); renderClusters();
    renderView(); redraw();
  }
  $("show-dups").addEventListener("click", showDuplicates);
  function preferList() { return $("export-prefer").value.split(",").map((t) => t.trim()).filter((t) => t); }
  async function renderDups() {
    const prefer = preferList();
    const u = new URLSearchParams({ offset: S.page * S.dupPageSize, limit: S.dupPageSize, order: S.dupOrder });
    for (const f of prefer) u.append("prefer", f);
    let r;
    try { r = await api("api/duplicates?" + u.toString()); } catch (e) { fail(e); return; }
    if (S.view.kind !== "dups") return;
    if (!r.groups.length && r.total > 0 && S.page > 0) { S.page = Math.ceil(r.total / S.dupPageSize) - 1; return renderDups(); }
    S.dups = r; S.items = [];
    const head = clear($("view-head"));
    head.removeAttribute("data-cluster");
    head.appendChild(el("h2", { id: "dups-title", text: "Duplicate groups" }));
    const g = clear($("grid"));
    if (!r.has_duplicates) {
      head.appendChild(el("span", { id: "dups-none", class: "muted", text: r.message }));
      $("pager").hidden = true;
      return;
    }
    const sm = r.summary;
    const across = Object.entries(sm.across_folders).map((kv) => kv[1] + " across " + kv[0]).join(", ");
    head.appendChild(el("span", { id: "dups-summary", class: "muted", text: fmt(sm.groups) + " groups, " + fmt(sm.copies) + " extra copies \u00b7 " +
      (across || "none across top-level folders") + " \u00b7 " + sm.mixed_clusters + " in more than one cluster" }));
    const order = el("select", { id: "dups-order", title: "order of the groups" },
      ...[["size", "largest first"], ["folders", "across folders first (leaks)"], ["clusters", "in several clusters first"]].map((o) => el("option", { value: o[0], text: o[1] })));
    order.value = S.dupOrder;
    order.addEventListener("change", () => { S.dupOrder = order.value; S.page = 0; renderView(); });
    head.appendChild(order);
    head.appendChild(el("div", { class: "meta", text: "kept: the copy the clean-dataset export keeps " + (prefer.length ? "(preferring " + prefer.join(", ") + ")" : "(the largest file; \u201ckeep copies under\u201d by the export button prefers a folder)") + "; the others are left out of it" }));
    const box = el("div", { id: "dups" });
    for (const grp of r.groups) box.appendChild(dupGroup(grp));
    g.appendChild(box);
    const pages = Math.max(1, Math.ceil(r.total / S.dupPageSize));
    $("page-info").textContent = "page " + (S.page + 1) + " of " + pages + " (" + fmt(r.total) + " groups)";
    $("prev").disabled = S.page <= 0; $("next").disabled = S.page >= pages - 1;
    $("pager").hidden = r.total <= S.dupPageSize;
  }
  function dupGroup(grp) {
    const kept = grp.members.find((m) => m.i === grp.kept);
    const head = el("div", { class: "dhead" },
      el("b", { text: "group " + grp.group }), el("span", { class: "muted", text: grp.size + " copies" }),
      grp.across_folders ? el("span", { class: "badge leak", text: "across " + grp.folders.join(" + "), title: "copies in more than one top-level folder of the collection: a leak between splits" })
        : el("span", { class: "muted", text: "in " + grp.folders.join(", ") }),
      grp.mixed_clusters ? el("span", { class: "badge junk", text: "in " + grp.clusters.length + " clusters", title: grp.clusters.map(clusterText).join(", ") }) : el("span", { class: "muted", text: clusterText(grp.clusters[0]) }),
      el("span", { class: "kept-why muted", text: grp.kept === null ? grp.kept_why : "kept: " + (kept ? kept.name : "#" + grp.kept) + ", " + grp.kept_why }));
    if (grp.kept !== null && grp.mixed_clusters && grp.kept_cluster >= 0) {
      head.appendChild(el("button", { class: "move-to-kept", text: "move all to " + clusterText(grp.kept_cluster), title: "move the group's members to the cluster of the copy kept (one image, one class)",
        onclick: async () => {
          const all = await allMembers(grp);
          if (!all) return;
          const items = all.filter((m) => m.cluster !== grp.kept_cluster && m.fate !== "junk").map((m) => m.i);
          if (!items.length) return;
          const r = await edit({ kind: "move", items: items, to: grp.kept_cluster });
          if (r) toast("moved " + items.length + " copies of group " + grp.group + " to " + clusterText(grp.kept_cluster));
        } }));
    }
    if (grp.kept_by === "person") {
      head.appendChild(el("button", { class: "keep-rule", text: "use the rule", title: "let the export's rule choose the copy kept again (undo also takes the choice back)",
        onclick: async () => { const r = await edit({ kind: "keep", group: grp.group, item: null }); if (r) toast("group " + grp.group + ": the export's rule chooses the copy kept"); } }));
    }
    head.appendChild(el("button", { class: "select-group", text: "select", title: "select the group's members (then move, junk or tag them in the bar below)",
      onclick: async () => { const all = await allMembers(grp); if (!all) return; for (const m of all) S.selected.add(m.i); selectionChanged(); redraw(); } }));
    const members = el("div", { class: "dmembers" });
    for (const m of grp.members) members.appendChild(dupTile(grp, m, kept));
    // a group of hundreds of copies (a meme posted 500 times): its first members, then a page
    // more at each click (GET /api/duplicates/{group}), not every member at once
    let shown = grp.members.length;
    if (shown < grp.members_total) {
      const more = el("button", { class: "dup-more", text: "show more (" + fmt(grp.members_total - shown) + " not shown)",
        onclick: async () => {
          const u = new URLSearchParams({ members_offset: shown, members_limit: 96 });
          for (const f of preferList()) u.append("prefer", f);
          let r;
          try { r = await api("api/duplicates/" + grp.group + "?" + u.toString()); } catch (e) { fail(e); return; }
          for (const m of r.members) members.insertBefore(dupTile(grp, m, kept), more);
          shown += r.members.length;
          if (shown >= r.members_total) more.remove();
          else more.textContent = "show more (" + fmt(r.members_total - shown) + " not shown)";
        } });
      members.appendChild(more);
    }
    return el("div", { class: "dgroup", "data-group": grp.group }, head, members);
  }

  // every member of a group (those not listed with it fetched: a group of hundreds of copies)
  async function allMembers(grp) {
    if (grp.members.length >= grp.members_total) return grp.members;
    try { return (await api("api/duplicates/" + grp.group + "?members_limit=1000")).members; } catch (e) { fail(e); return null; }
  }
  function dupTile(grp, m, kept) {
    names.set(m.i, m.name);
    const tile = el("figure", { class: "tile" + (S.selected.has(m.i) ? " selected" : ""), "data-i": m.i, "data-fate": m.fate, "aria-pressed": S.selected.has(m.i) ? "true" : "false",
      "aria-label": m.name + ", " + (m.fate === "copy" ? "dropped copy" : m.fate) + ", " + m.folder + "/, " + clusterText(m.cluster),
      title: m.name + (m.label ? " \u00b7 label " + m.label : "") + (m.link_kind ? " \u00b7 linked as " + m.link_kind + " (distance " + m.link_distance + ")" : "") + (m.representative ? " \u00b7 the group's representative" : "") });
    const img = el("img", { loading: "lazy", decoding: "async", alt: "", src: thumbURL(m.i) });
    img.addEventListener("error", () => { img.replaceWith(el("div", { class: "noimg", text: "no image" })); });
    tile.appendChild(img);
    tile.appendChild(el("figcaption", { class: "cap", text: m.name }));
    tile.appendChild(el("div", { class: "where", text: m.folder + "/ \u00b7 " + clusterText(m.cluster) }));
    const sw = el("span", { class: "sw" }); sw.style.background = colorOf(m.cluster); tile.appendChild(sw);
    tile.appendChild(el("span", { class: "fate " + (m.fate === "kept" ? "kept" : m.fate === "copy" ? "copy" : ""), text: m.fate === "copy" ? "dropped copy" : m.fate }));
    tile.addEventListener("click", () => { if (S.selected.has(m.i)) S.selected.delete(m.i); else S.selected.add(m.i); selectionChanged(); redraw(); });
    pressable(tile);
    tile.addEventListener("dblclick", () => openItem(m.i));
    tile.appendChild(openButton(m));
    if (m.fate === "copy") {  // a person's choice over the export's rule: an edit (undo takes it back)
      tile.appendChild(el("button", { class: "keep-this", text: "keep this", title: "keep this copy in the clean dataset instead of " + (kept ? kept.name : "the rule's"),
        onclick: async (ev) => {
          ev.stopPropagation();
          const r = await edit({ kind: "keep", group: grp.group, item: m.i });
          if (r) toast("group " + grp.group + ": keeping " + m.name);
        } }));
    }
    return tile;
  }

  // ------------------------------------------------------------------ export and publish
  function exportOptions() { $("export-classes").hidden = $("export-kind").value !== "classes"; }
  $("export-kind").addEventListener("change", exportOptions);
  exportOptions();
  // the duplicates view shows the copy kept with the folders typed here
  $("export-prefer").addEventListener("change", () => { $("export-prefer").removeAttribute("aria-invalid"); if (S.view.kind === "dups") renderView(); });
  $("export").addEventListener("click", async () => {
    const kind = $("export-kind").value, btn = $("export");
    const body = { kind: kind };
    if (kind === "classes") {
      const prefer = preferList();
      if (prefer.length) body.prefer = prefer;
      if ($("export-split").value) body.split = $("export-split").value;
    }
    const done = busyButton(btn);
    try {
      const r = await api("api/export", { method: "POST", body: body });
      S.lastExport = r;
      $("export-prefer").removeAttribute("aria-invalid");
      const gone = r.dropped ? Object.entries(r.dropped).map((kv) => kv[1] + " " + kv[0]).join(", ") : "";
      const missing = !gone && r.missing ? "; left out: " + fmt(r.missing) + " files gone since the run" : "";
      toast("exported " + fmt(r.items) + " items to " + r.relative + " (" + r.files.length + " files/folders" + (gone ? "; left out: " + gone + ", listed in dropped.csv" : "") + missing + ")");
    } catch (e) {
      if (kind === "classes" && /prefer|split/.test(e.message || "")) $("export-prefer").setAttribute("aria-invalid", "true");
      S.exportError = e.message;
      fail(e);
    } finally { done(); }
  });
  $("publish").addEventListener("click", async () => {
    const btn = $("publish");
    const done = busyButton(btn); btn.textContent = "publishing\u2026";
    try {
      const r = await api("api/publish", { method: "POST", body: {} });
      S.lastPublish = r;
      toast("published model " + r.version + ": it predicts the curated cluster of " + (100 * r.agreement).toFixed(2) + "% of " + fmt(r.checked) + " curated items" + (r.duplicates ? "; it carries the run's duplicate index" : "") + (r.levels && r.levels.length ? "; it keeps the run's levels above them (clusters per level " + r.levels.join(" -> ") + ")" : ""));
    } catch (e) { fail(e); } finally { done(); btn.textContent = "publish"; }
  });

  // ------------------------------------------------------------------ levels
  $("level").addEventListener("change", async () => {
    S.level = $("level").value;
    S.levelLabels = null;
    if (S.level) {
      try { S.levelLabels = new Int32Array((await api("api/levels/" + encodeURIComponent(S.level), { binary: true })).buf); } catch (e) { fail(e); }
    }
    buildPalette(); renderClusters(); redraw();
  });

  // ------------------------------------------------------------------ start
  async function start() {
    const t0 = performance.now();
    try {
      const [info, map] = await Promise.all([api("api/info"), api("api/map", { binary: true })]);
      S.info = info; S.n = info.n;
      const f = new Float32Array(map.buf);
      S.X = f.subarray(0, S.n); S.Y = f.subarray(S.n, 2 * S.n);
      $("run-name").textContent = info.run_name;
      document.title = "studio \u00b7 " + info.run_name;
      if (!info.word_search) { $("q").disabled = true; $("q").placeholder = "no word search for this run"; }
      if (!info.upload_search) $("upload-label").hidden = true;
      else if (info.media === "audio") {  // search by a clip of yours: the run's encoder embeds it
        $("upload").accept = "audio/*"; $("upload-label").firstChild.textContent = "by clip";
        $("upload-label").title = "find items that sound like a clip of yours";
      }
      const box = $("user-name");
      box.value = userName();
      if (info.user) box.placeholder = info.user + " (studio --user)";
      box.addEventListener("input", () => {  // kept as typed: the next edit, and the next page, use it
        try { localStorage.setItem(USER_KEY, box.value.trim()); } catch (e) { /* storage off: --user only */ }
      });
      if (info.levels.length) {
        const sel = $("level"); sel.hidden = false;
        sel.appendChild(el("option", { value: "", text: "not grouped by level" }));  // the run has levels: "no levels" read as if it had none
        for (const lv of info.levels) sel.appendChild(el("option", { value: lv.name, text: lv.name + " (" + lv.groups + " groups)" }));
      }
      computeBounds();
      await refresh(true);
      resize();
      S.firstPaint = performance.now() - t0;
      S.firstPaintAt = performance.now();
      renderView();
      setInterval(poll, 1500);
    } catch (e) { fail(e); }
  }
  window.addEventListener("resize", resize);
  // for tests and benchmarks
  S.api = api; S.refresh = refresh; S.showCluster = showCluster; S.redraw = redraw; S.draw = draw; S.edit = edit;
  start();
})();
