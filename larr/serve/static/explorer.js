// larr scene explorer: pick a user and a scene, see the ranking, what moved against a baseline scene,
// and for a value the model never saw, its nearest known values. Plain JavaScript, no dependencies:
// it only calls this server's /v1/rank, /v1/users, /v1/shops, /v1/scene-features and /v1/neighbours.
"use strict";

const KEY = "larr.apiKey";
const state = { features: [], example: {}, shops: new Map(), candidates: [], user: null, baseline: null, polls: 0 };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function say(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

async function api(path, body) {
  const headers = { "accept": "application/json" };
  const key = localStorage.getItem(KEY);
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method: body === undefined ? "GET" : "POST", headers,
                                body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const msg = (data && (data.message || data.detail)) || r.statusText;
    throw new Error(`${r.status}: ${typeof msg === "string" ? msg : JSON.stringify(msg)}`);
  }
  return data;
}

// ------------------------------------------------------------------ users

let searchTimer = null;
async function searchUsers() {
  const q = $("#user-q").value.trim();
  try {
    const data = await api(`/v1/users?limit=20&q=${encodeURIComponent(q)}`);
    const list = $("#users");
    list.replaceChildren();
    for (const u of data.users) {
      const li = el("li", { "data-user": String(u.user_id) }, el("strong", {}, `#${u.user_id}`), " ",
                    u.profile || "", el("span", { class: "muted" }, ` · ${u.home_district || ""}`));
      li.addEventListener("click", () => pickUser(u, li));
      list.append(li);
    }
    if (!data.users.length) list.append(el("li", { class: "muted" }, "no user matches"));
    if (!state.user && data.users.length) pickUser(data.users[0], list.firstChild, false);
  } catch (e) { say(e.message, true); }
}

function pickUser(u, li, rerank = true) {
  state.user = u;
  document.querySelectorAll("#users li").forEach((x) => x.classList.remove("picked"));
  if (li) li.classList.add("picked");
  $("#user").textContent = `user ${u.user_id}: ${u.profile || ""}`;
  if (rerank) rank();
}

// ------------------------------------------------------------------ the scene form

function buildScene() {
  const form = $("#scene");
  form.replaceChildren();
  for (const f of state.features) {
    const list = el("datalist", { id: `values-${f.name}` });
    for (const v of f.values) list.append(el("option", { value: v }));
    const input = el("input", { name: f.name, list: `values-${f.name}`, autocomplete: "off",
                                placeholder: f.range ? `${f.kind} in [${f.range[0]}, ${f.range[1]}]` : f.kind });
    const start = state.example[f.name];
    input.value = start !== undefined && start !== null ? String(start) : (f.values.length ? f.values[0] : "");
    input.addEventListener("change", () => { markNew(input, f); rank(); });
    input.addEventListener("input", () => markNew(input, f));
    form.append(el("label", { id: `feature-${f.name}` }, el("span", {}, f.name), input, list));
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); rank(); });
}

function markNew(input, f) {
  input.classList.toggle("new", input.value !== "" && !f.values.includes(input.value));
}

function typed(f, text) {
  if (f.kind === "int" && /^-?\d+$/.test(text)) return parseInt(text, 10);
  if (f.kind === "float" && text !== "" && !isNaN(Number(text))) return Number(text);
  if (f.kind === "bool" && (text === "true" || text === "false")) return text === "true";
  return text;  // the server says what is wrong with anything else
}

function currentScene() {
  const scene = {};
  for (const f of state.features) {
    const text = $(`#scene input[name="${CSS.escape(f.name)}"]`).value.trim();
    if (text !== "") scene[f.name] = typed(f, text);
  }
  return scene;
}

function describe(scene) {
  const parts = Object.entries(scene).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(", ") : "(empty)";
}

// ------------------------------------------------------------------ ranking

async function rankScene(scene) {
  return api("/v1/rank", { user_id: state.user.user_id, scene, candidates: state.candidates });
}

async function rank() {
  if (!state.user || !state.candidates.length) return;
  const scene = currentScene();
  if (!state.baseline) setBaseline(scene);
  try {
    const [now, base] = await Promise.all([rankScene(scene), rankScene(state.baseline)]);
    show(now, base);
    const pending = Object.entries(now.scene_sources).filter(([, s]) => s === "pending").map(([k]) => k);
    say(`ranked ${now.items.length} shops for user ${state.user.user_id}` +
        (pending.length ? ` · encoding ${pending.join(", ")} in the background…` : ""));
    await showNeighbours(scene, now.scene_sources);
  } catch (e) { say(e.message, true); }
}

function show(now, base) {
  const before = new Map(base.items.map((it, i) => [String(it.shop_id), i]));
  const baseScore = new Map(base.items.map((it) => [String(it.shop_id), it.score]));
  const body = $("#results tbody");
  body.replaceChildren();
  now.items.forEach((it, i) => {
    const shop = state.shops.get(String(it.shop_id)) || {};
    const was = before.get(String(it.shop_id));
    const moved = was === undefined ? 0 : was - i;
    const arrow = moved > 0 ? el("span", { class: "up" }, `▲ ${moved}`)
      : moved < 0 ? el("span", { class: "down" }, `▼ ${-moved}`) : el("span", { class: "same" }, "=");
    const d = it.score - (baseScore.get(String(it.shop_id)) ?? it.score);
    const delta = el("span", { class: "muted" }, ` ${d >= 0 ? "+" : "−"}${Math.abs(d).toFixed(4)}`);
    body.append(el("tr", { "data-shop": String(it.shop_id), "data-moved": String(moved) },
      el("td", {}, i + 1), el("td", {}, arrow, delta), el("td", {}, shop.name || `shop ${it.shop_id}`),
      el("td", {}, shop.category || ""), el("td", {}, shop.price_level == null ? "" : "¥".repeat(shop.price_level)),
      el("td", { class: "score" }, it.score.toFixed(4))));
  });
}

function setBaseline(scene) {
  state.baseline = scene;
  $("#baseline").textContent = describe(scene);
}

// ------------------------------------------------------------------ neighbours of typed values

async function showNeighbours(scene, sources) {
  const box = $("#neighbours");
  box.replaceChildren();
  let pending = false;
  for (const f of state.features) {
    if (!(f.name in scene) || f.values.includes(String(scene[f.name]))) continue;
    try {
      const nb = await api(`/v1/neighbours?feature=${encodeURIComponent(f.name)}&value=${encodeURIComponent(scene[f.name])}`);
      const where = { cache: "encoded by this server (in memory)", store: "read from the embedding store",
                      encoded: "just encoded", pending: "being encoded by the LLM…", table: "the model's table",
                      fallback: "not encoded (the feature's unknown row is used)" }[nb.source] || nb.source;
      const list = el("ol");
      for (const n of nb.neighbours) list.append(el("li", {}, `${n.value} `, el("span", { class: "muted" }, n.similarity.toFixed(3))));
      box.append(el("div", { class: "nb", "data-feature": f.name, "data-source": nb.source },
        el("strong", {}, `${f.name} = "${nb.value}"`), el("div", { class: "muted" }, `vector: ${where}`),
        nb.neighbours.length ? el("div", {}, "nearest known values:") : "", list));
      pending = pending || nb.source === "pending" || sources[f.name] === "pending";
    } catch (e) { box.append(el("div", { class: "nb" }, `${f.name}: ${e.message}`)); }
  }
  if (pending && state.polls < 40) {  // re-rank once the background encode has landed
    state.polls += 1;
    setTimeout(rank, 300);
  } else {
    state.polls = 0;
  }
}

// ------------------------------------------------------------------ start

async function start() {
  $("#api-key").value = localStorage.getItem(KEY) || "";
  $("#save-key").addEventListener("click", () => {
    localStorage.setItem(KEY, $("#api-key").value);
    say("API key saved");
    load();
  });
  $("#user-q").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(searchUsers, 200); });
  $("#rank-btn").addEventListener("click", rank);
  $("#baseline-btn").addEventListener("click", () => { setBaseline(currentScene()); rank(); });
  await load();
}

async function load() {
  try {
    const feats = await api("/v1/scene-features");
    $("#model").textContent = `${feats.version}`;
    state.features = feats.features;
    state.example = feats.example || {};
    const shops = await api("/v1/shops");
    state.shops = new Map(shops.shops.map((s) => [String(s.shop_id), s]));
    state.candidates = shops.shops.map((s) => s.shop_id);
    buildScene();
    await searchUsers();
    await rank();
  } catch (e) {
    say(e.message.startsWith("401") ? `${e.message} — enter the API key above` : e.message, true);
    if (e.message.startsWith("401")) $("#key-box").open = true;
  }
}

start();
