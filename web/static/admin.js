// The usage page: asks for an admin key (kept in this tab only), then
// draws GET /admin/usage and GET /admin/budgets. No libraries: the
// charts are SVG made here.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const money = (d) => "$" + (d >= 100 ? d.toFixed(0) : d >= 1 ? d.toFixed(2) : d.toFixed(4));
const count = (n) => n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(n);

$("#admin-key").value = sessionStorage.getItem("gateway-admin-key") || "";

async function get(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + $("#admin-key").value } });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const msg = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
    throw new Error(msg);
  }
  return body;
}

// days lists every UTC day of the range, so that days without requests
// show as gaps rather than vanish.
function days(from, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(new Date(from.getTime() + i * 86400000).toISOString().slice(0, 10));
  return out;
}

function chart(svg, labels, values, fmt) {
  svg.replaceChildren();
  const w = svg.clientWidth || 800, h = svg.clientHeight || 180, pad = 18, left = 52;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const top = Math.max(...values, 0);
  const el = (name, attrs, text) => {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  el("line", { x1: left, y1: h - pad, x2: w, y2: h - pad });
  el("text", { x: 0, y: 12 }, fmt(top));
  el("text", { x: 0, y: h - pad }, fmt(0));
  const slot = (w - left) / labels.length;
  labels.forEach((day, i) => {
    const v = values[i], bh = top > 0 ? (v / top) * (h - 2 * pad) : 0;
    const r = el("rect", { class: "bar", x: left + i * slot + slot * 0.15, y: h - pad - bh, width: slot * 0.7, height: bh, "data-day": day, "data-value": v });
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = `${day}: ${fmt(v)}`;
    r.appendChild(tip);
    if (i === 0 || i === labels.length - 1 || labels.length <= 10) el("text", { x: left + i * slot, y: h - 4 }, day.slice(5));
  });
}

function table(sel, rows, name) {
  const body = $(sel + " tbody");
  body.replaceChildren();
  rows.sort((a, b) => b.cost - a.cost || b.requests - a.requests).slice(0, 10).forEach((r) => {
    const tr = document.createElement("tr");
    for (const v of [r[name] || "(none)", count(r.requests), count(r.prompt_tokens + r.completion_tokens), money(r.cost)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  });
}

function budgets(list) {
  const box = $("#budgets");
  box.replaceChildren();
  if (!list.length) {
    const p = document.createElement("p");
    p.className = "hint";
    p.textContent = "No key has a budget.";
    box.appendChild(p);
    return;
  }
  for (const b of list) {
    // A dollar amount if there is one, else tokens; hard first, else soft.
    const dollars = b.dollars || b.soft_dollars, tokens = b.tokens || b.soft_tokens;
    const [spent, cap, fmt] = dollars ? [b.spent_dollars, dollars, money] : [b.spent_tokens, tokens, count];
    const share = cap > 0 ? spent / cap : 0;
    const div = document.createElement("div");
    div.className = "budget";
    div.dataset.key = b.key;
    div.dataset.level = share >= 1 ? "over" : share >= 0.8 ? "warn" : "ok";
    const label = document.createElement("div");
    label.className = "label";
    const who = document.createElement("span");
    who.textContent = `${b.key}: ${fmt(spent)} of ${fmt(cap)} per ${b.period}${(b.dollars || b.tokens) ? "" : " (soft)"}`;
    const when = document.createElement("span");
    when.textContent = b.resets_at ? "resets " + b.resets_at.replace("T", " ").replace("Z", " UTC") : "does not reset";
    label.append(who, when);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = Math.min(100, share * 100).toFixed(1) + "%";
    track.appendChild(fill);
    div.append(label, track);
    box.appendChild(div);
  }
}

async function load() {
  const n = Number($("#days").value);
  const now = new Date();
  const to = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
  const from = new Date(to.getTime() - n * 86400000);
  const range = `from=${from.toISOString().slice(0, 10)}&to=${to.toISOString().slice(0, 10)}`;
  $("#error").hidden = true;
  try {
    const [byDay, byKey, byModel, b] = await Promise.all([
      get("/admin/usage?by=day&" + range), get("/admin/usage?by=key&" + range),
      get("/admin/usage?by=model&" + range), get("/admin/budgets"),
    ]);
    sessionStorage.setItem("gateway-admin-key", $("#admin-key").value);
    const labels = days(from, n);
    const per = Object.fromEntries(byDay.data.map((r) => [r.day, r]));
    chart($("#chart-cost"), labels, labels.map((d) => (per[d] ? per[d].cost : 0)), money);
    chart($("#chart-tokens"), labels, labels.map((d) => (per[d] ? per[d].prompt_tokens + per[d].completion_tokens : 0)), count);
    const sum = (f) => byDay.data.reduce((a, r) => a + f(r), 0);
    $("#total-cost").textContent = money(sum((r) => r.cost));
    $("#total-requests").textContent = count(sum((r) => r.requests));
    $("#total-tokens").textContent = count(sum((r) => r.prompt_tokens + r.completion_tokens));
    $("#total-errors").textContent = count(sum((r) => r.errors));
    $("#totals").hidden = false;
    table("#top-keys", byKey.data, "key");
    table("#top-models", byModel.data, "model");
    budgets(b.data);
    document.body.dataset.loaded = "true";
  } catch (e) {
    $("#error").textContent = e.message;
    $("#error").hidden = false;
  }
}

// The CSV goes through fetch too: a link cannot carry the key.
$("#csv").addEventListener("click", async (ev) => {
  ev.preventDefault();
  const resp = await fetch("/admin/usage?format=csv&by=day,key,model&from=" + new Date(Date.now() - Number($("#days").value) * 86400000).toISOString().slice(0, 10),
    { headers: { Authorization: "Bearer " + $("#admin-key").value } });
  if (!resp.ok) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await resp.blob());
  a.download = "usage.csv";
  a.click();
  URL.revokeObjectURL(a.href);
});

$("#login").addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
if ($("#admin-key").value) load();
