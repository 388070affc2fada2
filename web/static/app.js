// tide dashboard: polls /api/state every second and draws it. No
// framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const RING = 4294967296;
const PALETTE = ["#3fa7d6", "#59c97a", "#c678dd", "#e5c07b", "#56b6c2", "#f2a541", "#e06c9f", "#98c379"];
const clock = (t) => new Date(t).toLocaleTimeString([], { hour12: false });

function fmt(n, digits = 0) {
  if (n == null || isNaN(n)) return "–";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return n.toFixed(digits);
}
function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(n < 10 && i > 0 ? 1 : 0) + " " + u[i];
}
function ms(v) { return v ? (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms" : "–"; }
function el(tag, attrs = {}, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text != null) e.textContent = text;
  return e;
}
function nodeName(n) { return n.id || n.http; }

// The ring: members on a circle at their tokens, each arc its range.
function drawRing(store) {
  const svg = $("ring");
  svg.replaceChildren();
  const R = 118;
  svg.appendChild(el("svg:circle", { r: R, fill: "none", stroke: "#2a3440", "stroke-width": 14 }));
  const angle = (tok) => (tok / RING) * 2 * Math.PI - Math.PI / 2;
  const pt = (tok, r) => [r * Math.cos(angle(tok)), r * Math.sin(angle(tok))];
  const members = store.nodes.filter((n) => n.range_fraction > 0);
  for (const n of members) {
    // Arc from the previous member's token to this one's.
    const [x0, y0] = pt(n.range_start, R), [x1, y1] = pt(n.token, R);
    const large = n.range_fraction > 0.5 ? 1 : 0;
    const color = PALETTE[members.indexOf(n) % PALETTE.length];
    const d = n.range_fraction >= 0.9999
      ? `M ${-R} 0 A ${R} ${R} 0 1 1 ${R} 0 A ${R} ${R} 0 1 1 ${-R} 0`
      : `M ${x0} ${y0} A ${R} ${R} 0 ${large} 1 ${x1} ${y1}`;
    const arc = el("svg:path", { d, fill: "none", stroke: color, "stroke-width": 10 + 10 * Math.min(1, n.disk_used_percent / 100), "stroke-opacity": 0.35 + 0.65 * Math.min(1, n.disk_used_percent / 70) });
    arc.appendChild(el("svg:title", {}, `${nodeName(n)}: ${(100 * n.range_fraction).toFixed(1)}% of the ring, disk ${n.disk_used_percent.toFixed(1)}%`));
    svg.appendChild(arc);
  }
  for (const n of store.nodes) {
    if (n.range_fraction <= 0 && n.state !== "joining" && n.state !== "left") continue;
    const r = n.state === "joining" || n.state === "left" ? R + 22 : R;
    const [x, y] = pt(n.token, r);
    const g = el("svg:g", { class: "ring-node", "data-state": n.state, "data-http": n.http });
    g.appendChild(el("svg:circle", { cx: x, cy: y, r: 6, style: `fill: var(--${n.state})`, stroke: "#0f1419", "stroke-width": 2 }));
    const [lx, ly] = pt(n.token, R - 26);
    g.appendChild(el("svg:text", { x: lx, y: ly + 4, "text-anchor": "middle", fill: "#d8dee6", "font-size": 10 }, n.id || n.http.split(":").slice(-2).join(":")));
    g.appendChild(el("svg:title", {}, `${nodeName(n)} (${n.state}) token ${n.token}`));
    svg.appendChild(g);
  }
  svg.appendChild(el("svg:text", { x: 0, y: -4, "text-anchor": "middle", fill: "#d8dee6", "font-size": 22 }, String(store.members)));
  svg.appendChild(el("svg:text", { x: 0, y: 14, "text-anchor": "middle", fill: "#8796a8", "font-size": 11 }, store.members === 1 ? "node" : "nodes"));
}

function drawNodes(store) {
  const tb = $("nodes").tBodies[0];
  tb.replaceChildren();
  for (const n of store.nodes) {
    const tr = el("tr", { "data-http": n.http, "data-state": n.state });
    const disk = n.disk_capacity_bytes ? n.disk_used_percent : 0;
    const cls = disk >= 70 ? "full" : disk >= 50 ? "hot" : "";
    const cells = [
      [nodeName(n), ""], [null, ""], [(100 * n.range_fraction).toFixed(1) + "%", "num"], [null, ""],
      [fmt(n.files), "num"], [fmt(n.keys), "num"], [fmt(n.ops_per_sec), "num"], [ms(n.p50_ms), "num"], [ms(n.p99_ms), "num"],
    ];
    cells.forEach(([text, c], i) => {
      const td = el("td", c ? { class: c } : {});
      if (i === 1) td.appendChild(el("span", { class: "state " + n.state }, n.state));
      else if (i === 3) {
        const bar = el("span", { class: "bar" });
        bar.appendChild(el("i", { class: cls, style: `width:${Math.min(100, disk)}%` }));
        td.appendChild(bar);
        td.appendChild(document.createTextNode(n.disk_capacity_bytes ? `${disk.toFixed(0)}% of ${bytes(n.disk_capacity_bytes)}` : "–"));
        td.title = `${bytes(n.disk_used_bytes)} used`;
      } else td.textContent = text;
      if (i === 0) td.title = `http ${n.http}` + (n.chord ? `, chord ${n.chord}` : "") + (n.resp ? `, redis ${n.resp}` : "");
      tr.appendChild(td);
    });
    tb.appendChild(tr);
  }
  $("ring-note").textContent = store.error || "";
}

const KIND_NAMES = { matchmaker: "matchmakers", batcher: "batchers", leader: "leaders", proxy: "proxy leaders", acceptor: "acceptors", replica: "replicas", unbatcher: "unbatchers" };

function drawLog(log) {
  const head = $("log-head"), roles = $("log-roles");
  head.replaceChildren();
  roles.replaceChildren();
  if (!log) {
    roles.appendChild(el("div", { class: "empty" }, "no tide log is watched"));
    $("log-note").textContent = "";
    return;
  }
  $("log-note").textContent = log.error || "";
  const item = (label, value) => { const s = el("span"); s.appendChild(document.createTextNode(label + " ")); s.appendChild(el("b", {}, value)); head.appendChild(s); };
  item("epoch", String(log.epoch));
  item("leader", log.leader || "none");
  item("ballot", log.ballot || "–");
  item("chosen", fmt(log.chosen));
  item("slots/s", fmt(log.slots_per_sec));
  if (log.history && log.history.length) {
    const h = log.history[log.history.length - 1];
    item("last change", `${h.what} (${clock(h.at)})`);
  }
  for (const r of log.roles) {
    if (!r.instances.length) continue;
    const box = el("div", { class: "role", "data-kind": r.kind });
    const h3 = el("h3", {}, KIND_NAMES[r.kind] || r.kind);
    h3.appendChild(el("span", { class: "n" }, `${r.instances.length} · in/s`));
    box.appendChild(h3);
    for (const i of r.instances) {
      const cls = ["inst", i.up ? "" : "down", i.active ? "active" : ""].join(" ");
      const row = el("div", { class: cls, "data-addr": i.addr });
      const label = (r.kind === "acceptor" ? `g${i.group || 0} ` : "") + i.addr.replace(/^127\.0\.0\.1:/, ":") + (i.active ? " ★" : "");
      row.appendChild(el("span", { class: "addr", title: `${i.addr} http ${i.http} epoch ${i.epoch}${i.ballot ? " ballot " + i.ballot : ""} cpu ${i.cpu_percent.toFixed(0)}%` }, label));
      row.appendChild(el("span", {}, i.up ? fmt(i.in_per_sec) : "down"));
      box.appendChild(row);
    }
    roles.appendChild(box);
  }
}

// A line chart of the series on a canvas, with its own scale, over the
// last ten minutes or the time sampled so far, and a mark at each change
// the autoscalers made.
function chart(canvas, t, lines, events) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = w * dpr; canvas.height = h * dpr;
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, h);
  const left = 40, bottom = h - 14;
  let top = 0;
  for (const l of lines) for (const v of l.data) top = Math.max(top, v);
  top = top > 0 ? top * 1.15 : 1;
  g.strokeStyle = "#2a3440"; g.fillStyle = "#8796a8"; g.font = "10px system-ui"; g.lineWidth = 1;
  for (let i = 0; i <= 2; i++) {
    const y = 4 + (bottom - 4) * (1 - i / 2);
    g.beginPath(); g.moveTo(left, y); g.lineTo(w, y); g.stroke();
    g.fillText(fmt((top * i) / 2, top < 10 ? 1 : 0), 2, y + 3);
  }
  if (t.length < 2) return;
  const t1 = t[t.length - 1], span = Math.min(600000, Math.max(60000, t1 - t[0])), t0 = t1 - span;
  const x = (ts) => left + ((ts - t0) / (t1 - t0)) * (w - left);
  g.fillText(span >= 120000 ? `-${Math.round(span / 60000)} min` : `-${Math.round(span / 1000)} s`, left, h - 2);
  g.fillText("now", w - 22, h - 2);
  for (const e of events || []) {
    const ts = Date.parse(e.time);
    if (e.action === "none" || e.outcome !== "succeeded" || ts < t0) continue;
    g.strokeStyle = e.action === "scale_out" ? "#59c97a" : "#f2a541";
    g.setLineDash([3, 3]); g.beginPath(); g.moveTo(x(ts), 4); g.lineTo(x(ts), bottom); g.stroke(); g.setLineDash([]);
  }
  for (const l of lines) {
    g.strokeStyle = l.color; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    l.data.forEach((v, i) => {
      if (t[i] < t0) return;
      const px = x(t[i]), py = 4 + (bottom - 4) * (1 - v / top);
      started ? g.lineTo(px, py) : g.moveTo(px, py);
      started = true;
    });
    g.stroke();
  }
}

function drawEvents(events) {
  const list = $("events"), tl = $("timeline");
  list.replaceChildren();
  tl.replaceChildren();
  const now = Date.now(), span = 600000;
  tl.appendChild(el("svg:line", { x1: 0, y1: 23, x2: 600, y2: 23, stroke: "#2a3440" }));
  const acts = events.filter((e) => e.action !== "none");
  for (const e of acts) {
    const ts = Date.parse(e.time);
    if (now - ts > span) continue;
    const x = 600 * (1 - (now - ts) / span);
    const color = e.outcome === "failed" ? "var(--down)" : e.action === "scale_out" ? "var(--joining)" : "var(--draining)";
    const y = e.system === "log" ? 34 : 12;
    const m = el("svg:circle", { cx: x, cy: y, r: e.outcome === "started" ? 3 : 5, fill: color, class: "tl-event", "data-action": e.action });
    m.appendChild(el("svg:title", {}, `${clock(ts)} ${e.system} ${e.action} ${e.outcome}: ${e.reason}`));
    tl.appendChild(m);
  }
  tl.appendChild(el("svg:text", { x: 3, y: 10, fill: "#8796a8", "font-size": 9 }, "store"));
  tl.appendChild(el("svg:text", { x: 3, y: 44, fill: "#8796a8", "font-size": 9 }, "log"));
  // Every change, and only the latest reason to hold of each system.
  const latestHold = {};
  events.forEach((e, i) => { if (e.action === "none") latestHold[e.system] = i; });
  const shown = events.filter((e, i) => e.action !== "none" || latestHold[e.system] === i).slice(-60).reverse();
  if (!shown.length) list.appendChild(el("li", { class: "empty" }, "no events yet"));
  for (const e of shown) {
    const li = el("li", { class: "event", "data-action": e.action, "data-outcome": e.outcome });
    li.appendChild(el("span", { class: "t" }, clock(e.time)));
    li.appendChild(el("span", {}, e.system));
    li.appendChild(el("span", { class: e.action }, e.action === "none" ? "hold" : e.action.replace("_", " ")));
    li.appendChild(el("span", { class: e.outcome === "failed" ? "failed" : "" }, e.outcome + (e.seconds ? ` ${e.seconds.toFixed(1)}s` : "")));
    const why = [e.instance, e.reason, e.metric ? `[${e.metric}]` : "", e.error].filter(Boolean).join(" · ");
    li.appendChild(el("span", { class: "why", title: why }, why));
    list.appendChild(li);
  }
  const outs = acts.filter((e) => e.outcome === "succeeded");
  $("ev-note").textContent = `${outs.length} changes`;
}

function render(s) {
  const st = s.store;
  $("s-nodes").textContent = st.members;
  $("s-keys").textContent = fmt(st.keys);
  $("s-files").textContent = fmt(st.files);
  $("s-ops").textContent = fmt(st.ops_per_sec);
  $("s-p99").textContent = ms(st.p99_ms);
  $("l-ops").textContent = s.log ? fmt(s.log.ops_per_sec) : "–";
  $("l-epoch").textContent = s.log ? String(s.log.epoch) : "–";
  $("l-inst").textContent = s.log ? String(s.log.roles.reduce((a, r) => a + r.instances.length, 0)) : "–";
  drawRing(st);
  drawNodes(st);
  drawLog(s.log);
  drawEvents(s.events);
  const ser = s.series;
  chart($("c-ops"), ser.t, [{ data: ser.store_ops, color: "#3fa7d6" }, { data: ser.log_ops, color: "#c678dd" }], s.events);
  chart($("c-lat"), ser.t, [{ data: ser.store_p50_ms, color: "#3fa7d6" }, { data: ser.store_p99_ms, color: "#e5534b" }], s.events);
  document.body.dataset.members = String(st.members);
}

async function poll() {
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    const s = await r.json();
    render(s);
    $("status").textContent = "live · " + clock(s.time);
    $("status").classList.remove("bad");
  } catch (e) {
    $("status").textContent = "dashboard unreachable: " + e.message;
    $("status").classList.add("bad");
  }
  setTimeout(poll, 1000);
}
poll();
