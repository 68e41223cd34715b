// The fullsend console's page script. It renders the JSON views the server answers and adds no
// logic of its own. Every text from a model, a chat or Redis goes into the page as text
// (textContent, createTextNode), never as markup; the Content-Security-Policy allows no other
// script than this file.
"use strict";

const main = document.getElementById("main");
const statusLine = document.getElementById("status");
let session = { authenticated: false };

// el("div", {class: "x"}, "text", child, …): an element; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") node.addEventListener("click", v);
    else if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
function show(...nodes) { clear(main); main.append(...nodes); }
function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}
function usd(x) { return "$" + (Number(x) || 0).toFixed(4); }

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers["Accept"] = "application/json";
  if (opts.method === "POST") {
    opts.headers["Content-Type"] = "application/json";
    if (session.csrf) opts.headers["X-Fullsend-CSRF"] = session.csrf;
  }
  const r = await fetch(path, opts);
  if (r.status === 401) { askToken(); throw new Error("this needs the console's token"); }
  const body = await r.json().catch(() => ({ error: "the answer is not JSON" }));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function post(path, body) { return api(path, { method: "POST", body: JSON.stringify(body || {}) }); }

function askToken() {
  const form = document.getElementById("login");
  form.hidden = false;
  main.hidden = true;
  form.onsubmit = async (e) => {
    e.preventDefault();
    const token = document.getElementById("token").value;
    const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }) });
    if (r.ok) location.reload();
    else document.getElementById("login-error").textContent = "wrong token";
  };
}

// A line above the page saying what an action did (no alert(): it would block the page).
function notice(text, bad) {
  let n = document.getElementById("notice");
  if (!n) { n = el("p", { id: "notice" }); main.before(n); }
  n.className = bad ? "notice error" : "notice";
  n.textContent = text;
}

function failed(err) { show(el("p", { class: "error" }, String(err.message || err))); }

// ---- Live trail -------------------------------------------------------------------------

const trail = { items: new Map(), cards: new Map() };

function stepSummary(item) {
  const b = item.body || {};
  if (item.kind === "decided") {
    const actions = (b.actions && b.actions.length ? b.actions.map((a) => a.action) : [b.action]);
    const u = b.usage || {};
    const node = el("div", { class: "decision" },
      el("div", {}, actions.map((a) => el("span", { class: "pill" }, a)),
        el("span", { class: "muted" }, " ", b.model || b.provider || "", " · in ", u.input_tokens || 0,
          " / out ", u.output_tokens || 0, " tokens · ", usd(b.cost_usd))),
      el("p", { class: "reasoning" }, b.reasoning || ""));
    if (b.thinking) node.append(el("details", {}, el("summary", { class: "muted" }, "thinking"), el("pre", {}, b.thinking)));
    const payloads = (b.actions && b.actions.length ? b.actions : [b]).map((a) => a.payload).filter(Boolean);
    if (payloads.length) node.append(el("details", {}, el("summary", { class: "muted" }, "actions"),
      el("pre", {}, JSON.stringify(payloads, null, 2))));
    return node;
  }
  const text = messageText(b);
  const node = el("div", {},
    el("span", { class: "pill" }, b.type || "message"),
    b.experiment_id ? el("span", { class: "pill experiment-id" }, b.experiment_id) : null,
    b.mode ? el("span", { class: "muted" }, " mode ", b.mode, " ") : null,
    el("span", {}, " ", String(text).slice(0, 600)));
  node.append(el("details", {}, el("summary", { class: "muted" }, "message"), el("pre", {}, JSON.stringify(b, null, 2))));
  return node;
}

// The words a message carries, wherever its type keeps them.
function messageText(b) {
  const candidates = [b.content, b.original_message && b.original_message.content, b.idea, b.summary,
    b.note, b.hypothesis, b.reason, b.error, b.unparsed];
  for (const c of candidates) {
    if (typeof c === "string" && c.trim()) return c;
    if (c && typeof c === "object") return c.idea || c.content || JSON.stringify(c);
  }
  return "";
}

function traceCard(traceId) {
  let card = trail.cards.get(traceId);
  if (!card) {
    card = el("section", { class: "card trace", "data-trace": traceId },
      el("header", {}, el("strong", { class: "title" }, ""), el("span", { class: "muted mono" }, "trace ", traceId)),
      el("div", { class: "steps" }));
    trail.cards.set(traceId, card);
  }
  return card;
}

function addItem(item) {
  if (trail.items.has(item.key)) return;
  trail.items.set(item.key, item);
  const card = traceCard(item.trace_id);
  const steps = card.querySelector(".steps");
  const row = el("div", { class: "step", "data-at": item.at_ms },
    el("span", { class: "kind kind-" + item.kind }, item.kind.replace("_", " ")),
    el("span", { class: "muted" }, when(item.at_ms)),
    stepSummary(item));
  const later = [...steps.children].find((r) => Number(r.dataset.at) > item.at_ms);
  steps.insertBefore(row, later || null);
  const first = trail.items.get([...trail.items.values()].filter((i) => i.trace_id === item.trace_id)
    .sort((a, b) => a.at_ms - b.at_ms)[0].key);
  const b = first.body || {};
  const words = messageText(b);
  card.querySelector(".title").textContent = (b.type || first.kind) + (words ? ": " + String(words).slice(0, 120) : "");
  card.dataset.last = Math.max(Number(card.dataset.last || 0), item.at_ms);
  const list = document.getElementById("traces");
  if (list) {
    const newer = [...list.children].find((c) => Number(c.dataset.last) < Number(card.dataset.last) && c !== card);
    list.insertBefore(card, newer || null);
    // A page left open for days keeps the newest cards only.
    while (list.children.length > MAX_CARDS) forget(list.lastElementChild);
  }
}

const MAX_CARDS = 300;

function forget(card) {
  const id = card.dataset.trace;
  for (const [key, item] of trail.items) if (item.trace_id === id) trail.items.delete(key);
  trail.cards.delete(id);
  card.remove();
}

function pageTrail() {
  trail.items.clear(); trail.cards.clear();
  const list = el("div", { id: "traces" });
  show(el("h2", {}, "Live trail"), el("p", { class: "muted" }, "Each card is one message and what it caused: received → decided → effects → design → experiment_ready."), list);
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => {
    const data = JSON.parse(e.data);
    for (const item of data.items) addItem(item);
    if (!data.items.length) list.append(el("p", { class: "muted empty" }, "Nothing yet: messages appear here as they arrive."));
    statusLine.textContent = "live"; statusLine.classList.add("live");
  });
  source.addEventListener("item", (e) => {
    const empty = list.querySelector(".empty"); if (empty) empty.remove();
    addItem(JSON.parse(e.data));
  });
  source.addEventListener("resync", () => { source.close(); pageTrail(); });
  source.onerror = () => { statusLine.textContent = "reconnecting…"; statusLine.classList.remove("live"); };
}

// ---- Experiments ------------------------------------------------------------------------

async function pageExperiments() {
  const data = await api("/api/experiments");
  const detail = el("div", { id: "experiment" });
  const rows = data.experiments.map((x) => el("tr", { class: "clickable", "data-id": x.id, onclick: () => showExperiment(x.id, detail) },
    el("td", { class: "mono" }, x.id), el("td", {}, x.state || ""), el("td", {}, x.hypothesis || ""),
    el("td", { class: "mono" }, x.schedule || ""), el("td", {}, x.scheduled_for || ""),
    el("td", { class: "mono" }, x.metrics ? JSON.stringify(x.metrics).slice(0, 160) : "")));
  show(el("h2", {}, "Experiments"),
    rows.length ? el("table", {}, el("tr", {}, ["id", "state", "hypothesis", "schedule", "scheduled for", "metrics"].map((h) => el("th", {}, h))), rows)
      : el("p", { class: "muted" }, "No experiments yet."), detail);
}

async function showExperiment(id, target) {
  try {
    const x = await api("/api/experiments/" + encodeURIComponent(id));
    const state = x.fields.state || x.fields.status || "";
    const reason = el("input", { class: "reason", placeholder: "why (kept with the change)" });
    const act = (verb) => el("button", { class: verb === "kill" ? "danger" : "", "data-action": verb, onclick: async () => {
      try {
        await post("/api/experiments/" + encodeURIComponent(id) + "/" + verb, { reason: reason.value });
        await pageExperiments();
        notice(verb + " " + id + ": done");
      } catch (err) { notice(verb + " " + id + ": " + err.message, true); }
    } }, verb);
    clear(target);
    target.append(el("div", { class: "card" }, el("h3", {}, id, " ", el("span", { class: "pill" }, state)),
      el("div", {}, reason, " ", act("pause"), " ", act("resume"), " ", act("kill")),
      el("h3", {}, "Spec"), el("pre", { class: "spec" }, x.spec_yaml || "(no spec stored)"),
      el("details", {}, el("summary", { class: "muted" }, "every field"), el("pre", {}, JSON.stringify(x.fields, null, 2)))));
  } catch (err) { target.textContent = err.message; }
}

// ---- Queues -----------------------------------------------------------------------------

async function pageQueues() {
  const data = await api("/api/queues");
  const cards = data.roles.map((r) => {
    const requeue = (body) => async () => {
      try {
        const done = await post("/api/queues/" + r.role + "/requeue", body);
        await pageQueues();
        notice("requeued " + done.requeued.length + " " + r.role + " dead letter(s)");
      } catch (err) { notice("requeue: " + err.message, true); }
    };
    return el("section", { class: "card", "data-role": r.role },
      el("h2", {}, r.role, " ", el("span", { class: "muted mono" }, r.stream)),
      el("p", {}, "listeners alive ", el("b", {}, r.listeners_alive), " · length ", el("b", {}, r.length),
        " · pending ", el("b", {}, r.pending), " · dead letters ", el("b", { class: "dead-count" }, r.dead_letters),
        r.last_error ? el("span", { class: "error" }, " · last error: ", r.last_error) : null),
      el("h3", {}, "Pending"),
      r.pending_entries.length ? el("table", {}, el("tr", {}, ["entry", "consumer", "idle", "deliveries"].map((h) => el("th", {}, h))),
        r.pending_entries.map((p) => el("tr", {}, el("td", { class: "mono" }, p.entry_id), el("td", { class: "mono" }, p.consumer),
          el("td", {}, (p.idle_ms / 1000).toFixed(1), " s"), el("td", {}, p.deliveries)))) : el("p", { class: "muted" }, "Nothing pending."),
      el("h3", {}, "Dead letters ", r.dead_letter_entries.length ? el("button", { "data-requeue-all": r.role, onclick: requeue({ all: true }) }, "Requeue all") : null),
      r.dead_letter_entries.length ? el("table", {}, el("tr", {}, ["id", "error", "deliveries", "data", ""].map((h) => el("th", {}, h))),
        r.dead_letter_entries.map((d) => el("tr", { "data-dlq": d.dlq_id }, el("td", { class: "mono" }, d.dlq_id),
          el("td", { class: "error" }, d.fields.error || ""), el("td", {}, d.fields.deliveries || ""),
          el("td", { class: "mono" }, String(d.fields.data || "").slice(0, 200)),
          el("td", {}, el("button", { "data-requeue": d.dlq_id, onclick: requeue({ ids: [d.dlq_id] }) }, "Requeue"))))) : el("p", { class: "muted" }, "No dead letters."));
  });
  show(...cards);
}

// ---- Spend ------------------------------------------------------------------------------

const COLORS = ["#5aa9ff", "#47c47e", "#e5b454", "#ef6b6b", "#b48cff", "#4fd1c5", "#f687b3"];

function chart(days, part) {
  const names = [...new Set(days.flatMap((d) => Object.keys(d[part])))].sort();
  const max = Math.max(0.0001, ...days.map((d) => Math.max(d.total_usd, Object.values(d[part]).reduce((a, b) => a + b, 0))));
  const W = 760, H = 180, bw = W / days.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 20}`); svg.setAttribute("width", "100%"); svg.setAttribute("class", "chart chart-" + part);
  days.forEach((d, i) => {
    let y = H;
    names.forEach((n, j) => {
      const v = d[part][n] || 0; if (!v) return;
      const h = (v / max) * H; y -= h;
      const r = document.createElementNS(ns, "rect");
      r.setAttribute("x", i * bw + 2); r.setAttribute("y", y); r.setAttribute("width", bw - 4); r.setAttribute("height", h);
      r.setAttribute("fill", COLORS[j % COLORS.length]);
      const t = document.createElementNS(ns, "title"); t.textContent = `${d.day} ${n}: ${usd(v)}`; r.append(t);
      svg.append(r);
    });
    if (i % 5 === 0 || i === days.length - 1) {
      const t = document.createElementNS(ns, "text");
      t.setAttribute("x", i * bw + 2); t.setAttribute("y", H + 14); t.setAttribute("fill", "#8b93a7"); t.setAttribute("font-size", "10");
      t.textContent = d.day.slice(5); svg.append(t);
    }
  });
  return el("div", {}, svg, el("div", { class: "legend" }, names.map((n, j) => el("span", {}, el("span", { class: "swatch", style: null, "data-color": j }), n))));
}

async function pageSpend() {
  const data = await api("/api/spend?days=30");
  const t = data.today;
  const share = t.daily_limit_usd ? Math.min(100, (100 * t.spent_today_usd) / t.daily_limit_usd) : 0;
  const bar = el("div", { class: "bar" }, el("div", {}));
  bar.firstChild.style.width = share + "%";
  const byRole = chart(data.days, "by_role"), byModel = chart(data.days, "by_model");
  show(el("h2", {}, "Spend"),
    el("p", { class: "today" }, "Today (", t.day, " UTC): ", el("b", {}, usd(t.spent_today_usd)),
      t.daily_limit_usd ? [" of ", usd(t.daily_limit_usd), " daily limit"] : " (no daily limit)"), bar,
    el("h3", {}, "Last 30 days by role"), byRole, el("h3", {}, "Last 30 days by model"), byModel);
  for (const s of main.querySelectorAll(".swatch")) s.style.background = COLORS[Number(s.dataset.color) % COLORS.length];
}

// ---- Context ----------------------------------------------------------------------------

// A small markdown reader: headings, lists, checkboxes and paragraphs, built as DOM nodes.
function markdown(text) {
  const root = el("div", { class: "md" });
  let list = null;
  for (const line of String(text || "").split("\n")) {
    const h = line.match(/^(#{1,4})\s+(.*)$/);
    const li = line.match(/^\s*[-*]\s+(\[( |x|X)\]\s+)?(.*)$/);
    if (h) { list = null; root.append(el("h" + Math.min(6, h[1].length + 2), {}, h[2])); }
    else if (li) {
      if (!list) { list = el("ul", {}); root.append(list); }
      const done = li[2] && li[2].toLowerCase() === "x";
      list.append(el("li", { class: done ? "done" : null }, li[1] ? (done ? "☑ " : "☐ ") : "", li[3]));
    } else if (line.trim()) { list = null; root.append(el("p", {}, line)); }
    else list = null;
  }
  return root;
}

async function pageContext() {
  const data = await api("/api/context");
  const version = el("pre", { id: "version", hidden: "" });
  const history = data.history.map((v) => el("li", {}, el("a", { href: "#", onclick: async (e) => {
    e.preventDefault();
    const r = await fetch("/api/context/history/" + encodeURIComponent(v.name));
    version.textContent = await r.text(); version.hidden = false;
  } }, v.name), el("span", { class: "muted" }, " ", v.bytes, " bytes")));
  show(el("div", { class: "grid2" },
    el("section", { class: "card" }, el("h2", {}, "Worklist"), markdown(data.worklist || "(no worklist.md)")),
    el("section", { class: "card" }, el("h2", {}, "Strategic learnings"), markdown(data.learnings || "(no learnings.md)"))),
    el("section", { class: "card" }, el("h2", {}, "Worklist history"), history.length ? el("ul", {}, history) : el("p", { class: "muted" }, "No earlier versions."), version));
}

// ---- Start ------------------------------------------------------------------------------

const PAGES = { "/": pageTrail, "/experiments": pageExperiments, "/queues": pageQueues, "/spend": pageSpend, "/context": pageContext };

(async function start() {
  for (const a of document.querySelectorAll("nav a")) if (a.dataset.page === location.pathname) a.classList.add("active");
  try {
    session = await (await fetch("/api/session", { headers: { Accept: "application/json" } })).json();
    if (session.reads_need_token && !session.authenticated) return askToken();
    statusLine.textContent = session.authenticated ? "logged in" : "read-only (log in with the printed address to change things)";
    await (PAGES[location.pathname] || pageTrail)();
  } catch (err) { failed(err); }
})();
