"use strict";
// Redraws the page from /status.json every 2 s. Text is set with
// textContent only: names come from peers.
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const W = 900, H = 150, LEFT = 44, BOTTOM = 20;

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  if (m > 0) return m + "m " + (s % 60) + "s";
  return s + "s";
}

function ipOf(address) {
  const i = address.lastIndexOf(":");
  const ip = i < 0 ? address : address.slice(0, i);
  return ip.replace(/^\[/, "").replace(/\]$/, "");
}

// Connections of one daemon (same name, same IP) are its jobs: one row.
function machines(daemons) {
  const out = [];
  for (const d of daemons) {
    const ip = ipOf(d.address);
    let m = out.find((x) => x.name === d.name && x.ip === ip);
    if (!m) {
      m = { name: d.name, ip: ip, volunteer: d.volunteer, jobs: 0, busy: 0, done: 0, failures: 0, disagreements: 0, connected: 0 };
      out.push(m);
    }
    m.jobs += 1;
    m.busy += d.busy ? 1 : 0;
    m.done += d.tasks_done;
    m.failures += d.failures;
    m.disagreements += d.disagreements;
    m.connected = Math.max(m.connected, d.connected_s);
  }
  return out;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const [text, cls] of cells) {
    const td = document.createElement("td");
    td.textContent = String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  return tr;
}

function table(id, rows, empty, span) {
  const body = $(id);
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = row([[empty, "none"]]);
    tr.firstChild.colSpan = span;
    body.appendChild(tr);
  }
  for (const r of rows) body.appendChild(r);
}

function svg(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

function chart(tp, bucket) {
  const c = $("chart");
  c.replaceChildren();
  const base = H - BOTTOM, plotW = W - LEFT, plotH = H - BOTTOM - 8;
  c.appendChild(svg("line", { class: "axis", x1: LEFT, y1: base, x2: W, y2: base }));
  const peak = tp.reduce((a, b) => Math.max(a, b), 0);
  const total = tp.reduce((a, b) => a + b, 0);
  if (tp.length === 0 || peak === 0) {
    c.appendChild(svg("text", { class: "empty", x: LEFT + Math.floor(plotW / 2), y: Math.floor(base / 2) }, "no tasks finished in this window yet"));
  } else {
    const slot = plotW / tp.length;
    tp.forEach((v, i) => {
      const h = (v / peak) * plotH;
      const r = svg("rect", { class: "bar", x: (LEFT + i * slot + 1).toFixed(1), y: (base - h).toFixed(1), width: Math.max(slot - 2, 1).toFixed(1), height: h.toFixed(1) });
      r.appendChild(svg("title", {}, v));
      c.appendChild(r);
    });
    c.appendChild(svg("text", { class: "tick", x: LEFT - 6, y: 16, "text-anchor": "end" }, peak));
  }
  c.appendChild(svg("text", { class: "tick", x: LEFT - 6, y: base, "text-anchor": "end" }, 0));
  const secs = tp.length * bucket;
  const win = secs >= 60 && secs % 60 === 0 ? secs / 60 + " min" : secs + " s";
  c.appendChild(svg("text", { class: "tick", x: LEFT, y: H - 4 }, win + " ago"));
  c.appendChild(svg("text", { class: "tick", x: W, y: H - 4, "text-anchor": "end" }, "now"));
  c.appendChild(svg("text", { id: "chart-caption", class: "caption", x: LEFT + Math.floor(plotW / 2), y: H - 4, "text-anchor": "middle" }, total + " tasks, at most " + peak + " per " + bucket + " s"));
}

function render(s) {
  const ms = machines(s.daemons);
  $("uptime").textContent = duration(s.uptime_s);
  $("updated").textContent = "updated " + new Date(s.at_unix_ms).toLocaleTimeString();
  $("c-machines").textContent = ms.length;
  $("c-jobs").textContent = s.daemons.length;
  $("c-queued").textContent = s.queued;
  $("c-running").textContent = s.running;
  $("c-completed").textContent = s.completed;
  table("daemons", ms.map((m) => row([
    [m.name, "name"], [m.jobs, "num"], [m.busy, "num"],
    [m.volunteer === null || m.volunteer === undefined ? "shared token" : m.volunteer, m.volunteer ? "" : "muted"],
    [m.done, "num"], [m.failures, "num"], [m.disagreements, "num"], [m.ip, ""], [duration(m.connected), "num"],
  ])), "no daemons connected", 9);
  table("users", s.users.map((u) => row([
    [u.name, "name"], [u.weight, "num"], [u.connected ? "yes" : "no", ""],
    [u.queued, "num"], [u.running, "num"], [u.done, "num"],
  ])), "no users yet", 6);
  chart(s.throughput, s.throughput_bucket_s);
}

async function refresh() {
  try {
    const r = await fetch("/status.json", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("the host answered " + r.status);
    render(await r.json());
    $("live").textContent = "live, every 2 s";
    document.body.dataset.live = "1";
  } catch (e) {
    $("live").textContent = "not updating: " + e.message;
    document.body.dataset.live = "0";
  }
}

refresh();
setInterval(refresh, 2000);
