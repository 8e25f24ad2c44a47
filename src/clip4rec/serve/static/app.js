// clip4rec page: vanilla JS, no build step. Talks to the same service: /users, /recommend, /items/{id}/similar.
"use strict";
const $ = (id) => document.getElementById(id);
let similarBy = ["fused"];

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : res.status + " " + JSON.stringify(data.detail));
  return data;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function tile(item) {
  const t = el("div", "tile");
  t.dataset.item = item.item_id;
  if (item.cold_start) t.dataset.cold = "1";
  const img = document.createElement("img");
  img.alt = item.title || item.item_id;
  img.loading = "lazy";
  img.src = "/items/" + encodeURIComponent(item.item_id) + "/image";
  img.onerror = () => { const ph = el("div", "ph", (item.title || item.item_id).slice(0, 1)); img.replaceWith(ph); };
  if (item.has_image === false) img.onerror();
  t.appendChild(img);
  const badges = el("div", "badges");
  if (item.cold_start) badges.appendChild(el("span", "badge cold", "cold start"));
  if (item.published) badges.appendChild(el("span", "badge new", "new"));
  t.appendChild(badges);
  t.appendChild(el("div", "title", item.title || item.item_id)).title = item.title || item.item_id;
  const meta = [];
  if (item.rank !== undefined) meta.push("#" + item.rank);
  if (item.score !== undefined && item.score !== null) meta.push("score " + item.score.toFixed(3));
  t.appendChild(el("div", "meta", meta.length ? meta.join(" · ") : item.item_id));
  t.onclick = () => showSimilar(item, t);
  return t;
}

function fill(container, items) {
  container.replaceChildren(...items.map(tile));
}

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function parseHistory() {
  return $("history").value.split(/[\s,]+/).filter(Boolean);
}

async function recommend() {
  const history = parseHistory();
  const k = Math.max(1, Math.min(1000, parseInt($("k").value, 10) || 10));
  notice("");
  try {
    const r = await api("/recommend", {history, k, exclude_seen: $("exclude").checked});
    const notes = [];
    if (r.unknown_ids.length) notes.push("unknown ids skipped: " + r.unknown_ids.join(", "));
    if (r.truncated) notes.push(`history truncated: the model reads the last ${r.max_len} items (${r.truncated} older dropped)`);
    if (r.fallback) notes.push("no known history item: showing the most popular items (" + r.fallback + " fallback)");
    notice(notes.join(" · "));
    const known = history.filter((h) => !r.unknown_ids.includes(h));
    const infos = await Promise.all(known.slice(-48).map((id) => api("/items/" + encodeURIComponent(id)).catch(() => ({item_id: id}))));
    fill($("history-tiles"), infos);
    $("history-note").textContent = `${history.length} item(s), model window ${r.max_len}`;
    fill($("recs"), r.items);
    const cold = r.items.filter((i) => i.cold_start).length;
    $("recs-note").textContent = `${r.items.length} items in ${r.took_ms} ms` + (cold ? `, ${cold} cold-start` : "");
  } catch (err) {
    notice("error: " + err.message);
  }
}

async function showSimilar(item, tileEl) {
  document.querySelectorAll(".tile.selected").forEach((t) => t.classList.remove("selected"));
  if (tileEl) tileEl.classList.add("selected");
  $("similar-panel").hidden = false;
  $("similar-title").textContent = item.title || item.item_id;
  const box = $("similar");
  box.replaceChildren();
  for (const by of similarBy) {
    const row = el("div", "tiles");
    row.dataset.by = by;
    box.appendChild(el("div", "row-label", {image: "visually similar (image vectors)", text: "textually similar (text vectors)", fused: "similar in the model's item space (fused)"}[by] || by));
    box.appendChild(row);
    try {
      const r = await api(`/items/${encodeURIComponent(item.item_id)}/similar?by=${by}&k=8`);
      fill(row, r.items);
    } catch (err) {
      row.appendChild(el("span", "muted", err.message));
    }
  }
  box.dataset.ready = "1";
}

async function pickUser(userId) {
  const u = typeof userId === "string" ? userId : $("user").value;
  if (!u) return;
  const h = await api("/users/" + encodeURIComponent(u));
  $("history").value = h.history.join(" ");
  await recommend();
}

async function init() {
  try {
    const h = await api("/health");
    similarBy = h.similar_by || ["fused"];
    $("info").textContent = `${h.variant || "?"} run · ${h.items} items (${h.published} published) · ${h.index} top-k`;
    const users = await api("/users?limit=200");
    for (const u of users.users) {
      const o = el("option", "", `${u.user_id} (${u.interactions})`);
      o.value = u.user_id;
      $("user").appendChild(o);
    }
  } catch (err) {
    notice("error: " + err.message);
  }
  $("user").onchange = pickUser;
  $("go").onclick = recommend;
  $("history").onkeydown = (e) => { if (e.key === "Enter") recommend(); };
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.get("history")) { $("history").value = params.get("history"); await recommend(); }
  else if (params.get("user")) { $("user").value = params.get("user"); await pickUser(params.get("user")); }
  document.body.dataset.ready = "1";
}

init();
