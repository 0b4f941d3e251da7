/* soc-async viewer. Data comes as scripts (data/*.js) that call SOC_DATA(kind, n, payload):
 * file:// pages may not fetch(), but they may load scripts. The list's index arrives in
 * chunks and the list is usable after the first; a conversation loads its own chunk and
 * its personas' chunks when opened. Every text from the data is set with textContent;
 * only the cards and experiences, rendered to HTML by soc-async with raw HTML disabled,
 * go through innerHTML. */
"use strict";
(function () {
  const PAGE = 50;
  const KEEP = { c: 40, p: 40 }; // conversation and persona chunks kept in memory
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const S = {
    meta: null,
    rows: [], // index rows in chat order, as they load
    byId: new Map(),
    indexChunks: [],
    filtered: [],
    page: 0,
    current: null,
    deep: null, // {query, hits: Set} after a search in message text
    deepToken: 0,
    failures: null,
    failPage: 0,
  };
  const F = {}; // index row field -> position
  const cache = new Map(); // "kind:n" -> payload
  const pending = new Map(); // "kind:n" -> {promise, resolve, reject}
  const $ = (id) => document.getElementById(id);

  window.SOC_DATA = function (kind, n, payload) {
    const key = kind + ":" + n;
    cache.set(key, payload);
    if (KEEP[kind]) evict(kind);
    const p = pending.get(key);
    if (p) {
      pending.delete(key);
      p.resolve(payload);
    }
  };

  function evict(kind) {
    const keys = [...cache.keys()].filter((k) => k.startsWith(kind + ":"));
    for (let i = 0; i < keys.length - KEEP[kind]; i++) cache.delete(keys[i]);
  }

  function load(kind, n) {
    const key = kind + ":" + n;
    if (cache.has(key)) {
      const value = cache.get(key);
      cache.delete(key); // most recently used goes last
      cache.set(key, value);
      return Promise.resolve(value);
    }
    if (pending.has(key)) return pending.get(key).promise;
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    pending.set(key, { promise, resolve, reject });
    const s = document.createElement("script");
    s.src = kind === "meta" ? "data/meta.js" : "data/" + kind + "/" + String(n).padStart(5, "0") + ".js";
    const fail = () => {
      if (pending.has(key)) {
        pending.delete(key);
        reject(new Error("could not load " + s.src));
      }
      s.remove();
    };
    s.onload = fail; // SOC_DATA has resolved it by now; if not, the file was not data
    s.onerror = fail;
    document.head.appendChild(s);
    return promise;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k === "html") node.innerHTML = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  const fmt = (n) => Number(n).toLocaleString("en-US");
  const value = (field, i) => S.meta.values[field][i];
  const link = (id) => "#/c/" + encodeURIComponent(id);

  function status(text) {
    $("load-status").textContent = text;
  }

  // ---- the list --------------------------------------------------------------------

  function setupFilters() {
    for (const sel of document.querySelectorAll("#filters select[data-field]")) {
      const values = S.meta.values[sel.dataset.field] || [];
      values.forEach((v, i) => {
        if (v === "") return;
        sel.append(el("option", { value: String(i), text: v }));
      });
      sel.addEventListener("change", () => applyFilters(true));
    }
    $("f-status").addEventListener("change", () => applyFilters(true));
    let timer = null;
    $("q").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => applyFilters(true), 120);
    });
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("reset-filters").addEventListener("click", () => {
      $("filters").reset();
      S.deep = null;
      S.deepToken++;
      applyFilters(true);
    });
    $("deep").addEventListener("click", deepSearch);
    $("prev-page").addEventListener("click", () => turnPage(-1));
    $("next-page").addEventListener("click", () => turnPage(1));
  }

  function applyFilters(resetPage) {
    const terms = $("q").value.toLowerCase().split(/\s+/).filter(Boolean);
    const st = $("f-status").value;
    const want = {};
    for (const sel of document.querySelectorAll("#filters select[data-field]")) {
      if (sel.value !== "") want[sel.dataset.field] = Number(sel.value);
    }
    const deep = S.deep ? S.deep.hits : null;
    S.filtered = S.rows.filter((r) => {
      if (st === "ok" && r[F.failed]) return false;
      if (st === "failed" && !r[F.failed]) return false;
      if ("style" in want && r[F.style] !== want.style) return false;
      if ("cadence" in want && r[F.cadence] !== want.cadence) return false;
      if ("model" in want && r[F.model] !== want.model) return false;
      if ("ended" in want && r[F.ended] !== want.ended) return false;
      if ("region" in want && r[F.region_a] !== want.region && r[F.region_b] !== want.region) return false;
      if (deep && !deep.has(r[F.id])) return false;
      for (const t of terms) if (!r[F.search].includes(t)) return false;
      return true;
    });
    if (resetPage) S.page = 0;
    S.page = Math.min(S.page, Math.max(0, Math.ceil(S.filtered.length / PAGE) - 1));
    renderList();
  }

  function renderList() {
    const list = $("list");
    const start = S.page * PAGE;
    const rows = S.filtered.slice(start, start + PAGE);
    const items = rows.map((r) => {
      const sub = [];
      if (r[F.failed]) sub.push(el("span", { class: "badge bad", text: value("reason", r[F.reason]) }));
      else sub.push(el("span", { class: "badge", text: r[F.turns] + " turns" }));
      for (const f of ["style", "cadence", "model"]) {
        const v = value(f, r[F[f]]);
        if (v) sub.push(el("span", { class: "badge", text: v }));
      }
      const li = el(
        "li",
        { class: (r[F.failed] ? "row failed" : "row") + (r[F.id] === S.current ? " current" : ""), "data-id": r[F.id] },
        el(
          "a",
          { href: link(r[F.id]) },
          el("div", { class: "names", text: r[F.name_a] + " ↔ " + r[F.name_b] }),
          el("div", { class: "sub" }, ...sub),
          el("div", { class: "sub", text: r[F.id] + (r[F.day] ? " · " + day(r[F.day]) : "") }),
        ),
      );
      return li;
    });
    list.replaceChildren(...items);
    const total = S.filtered.length;
    const pages = Math.max(1, Math.ceil(total / PAGE));
    $("page-info").textContent = total
      ? fmt(start + 1) + "–" + fmt(start + rows.length) + " of " + fmt(total) + " · page " + (S.page + 1) + "/" + pages
      : "nothing matches";
    $("prev-page").disabled = S.page === 0;
    $("next-page").disabled = S.page >= pages - 1;
    const loaded = S.rows.length < S.meta.rows ? " (list still loading: " + fmt(S.rows.length) + " of " + fmt(S.meta.rows) + ")" : "";
    $("list-info").textContent = fmt(total) + " shown" + loaded;
    const chip = $("deep-chip");
    if (S.deep) {
      const clear = el("button", { type: "button", title: "clear", text: "×" });
      clear.addEventListener("click", () => {
        S.deep = null;
        S.deepToken++;
        applyFilters(true);
      });
      chip.replaceChildren("messages contain “" + S.deep.query + "”" + (S.deep.done ? "" : " (searching…)") + " ", clear);
      chip.hidden = false;
    } else chip.hidden = true;
  }

  function turnPage(delta) {
    const pages = Math.max(1, Math.ceil(S.filtered.length / PAGE));
    S.page = Math.min(pages - 1, Math.max(0, S.page + delta));
    renderList();
  }

  async function deepSearch() {
    const query = $("q").value.trim().toLowerCase();
    if (!query) {
      $("q").focus();
      return;
    }
    const token = ++S.deepToken;
    $("q").value = "";
    S.deep = { query, hits: new Set(), done: false };
    const n = S.meta.conv_chunks;
    for (let k = 0; k < n; k++) {
      if (token !== S.deepToken) return;
      let chunk;
      try {
        chunk = await load("c", k);
      } catch (e) {
        status(e.message);
        return;
      }
      for (const c of chunk.convs) {
        if (c.turns.some((t) => t[3].some((m) => m[3].toLowerCase().includes(query)))) S.deep.hits.add(c.id);
      }
      if (k % 20 === 19 || k === n - 1) {
        status("searching messages: " + fmt(k + 1) + " of " + fmt(n) + " chunks, " + fmt(S.deep.hits.size) + " found");
        applyFilters(true);
      }
    }
    if (token === S.deepToken) {
      S.deep.done = true;
      status(fmt(S.deep.hits.size) + " conversations have “" + query + "” in a message");
      applyFilters(true);
    }
  }

  // ---- finding a row -----------------------------------------------------------------

  function sortKey(id) {
    const parts = String(id).split("-");
    const n = parts.length > 1 ? parseInt(parts[1], 10) : NaN;
    return Number.isFinite(n) ? n : -1;
  }

  async function findRow(id) {
    if (S.byId.has(id)) return S.byId.get(id);
    const key = sortKey(id);
    const first = S.meta.index_first;
    if (!first.length) return null;
    let k = 0; // the last chunk whose first key is <= key
    for (let i = 0; i < first.length; i++) if (first[i] <= key) k = i;
    const found = (await indexChunk(k)).find((r) => r[F.id] === id);
    if (found) return found;
    for (let i = 0; i < first.length; i++) {
      // not where it sorts (an id of another shape): look everywhere
      const row = i === k ? null : (await indexChunk(i)).find((r) => r[F.id] === id);
      if (row) return row;
    }
    return null;
  }

  async function indexChunk(k) {
    if (S.indexChunks[k]) return S.indexChunks[k];
    const rows = await load("i", k);
    S.indexChunks[k] = rows;
    cache.delete("i:" + k);
    return rows;
  }

  // ---- a conversation ----------------------------------------------------------------

  function day(d) {
    const [dd, mm] = String(d).split(".");
    const month = MONTHS[Number(mm) - 1];
    return month ? Number(dd) + " " + month : d;
  }

  async function openConversation(id) {
    S.current = id;
    document.body.classList.remove("failures");
    $("failures-pane").hidden = true;
    markCurrent();
    let row, chunk, personas;
    try {
      row = await findRow(id);
      if (!row) throw new Error("no conversation " + id + " in this run");
      chunk = await load("c", row[F.chunk]);
      const conv = chunk.convs[row[F.slot]];
      personas = await Promise.all(
        conv.p.map(([pid, pc]) => (pc >= 0 ? load("p", pc).then((ch) => ch[pid] || null) : Promise.resolve(null))),
      );
      if (S.current !== id) return; // another one was asked for meanwhile
      renderConversation(conv, chunk.exps[conv.exp] || null, personas, row);
    } catch (e) {
      if (S.current !== id) return;
      $("conv-empty").hidden = false;
      $("conv-empty").textContent = e.message;
      $("conv").hidden = true;
      $("context-pane").replaceChildren();
    }
  }

  function markCurrent() {
    for (const li of document.querySelectorAll("#list li")) {
      li.classList.toggle("current", li.dataset.id === S.current);
    }
    const cur = document.querySelector("#list li.current");
    if (cur) cur.scrollIntoView({ block: "nearest" });
  }

  function stateLine(state, topics) {
    const [topic, left, next] = state.split(";").map((s) => s.trim());
    const slot = topics.findIndex((t) => t[0].toLowerCase() === (topic || "").toLowerCase());
    const where = slot >= 0 ? "slot " + (slot + 1) + "/" + topics.length + " (" + topics[slot][1] + " turns)" : "slot ?";
    return el(
      "div",
      { class: "state", title: "the turn's <state> line" },
      el("b", { text: topic || state }),
      " · " + (left || "") + " · next: " + (next || "") + " · " + where,
    );
  }

  function renderConversation(conv, exp, personas, row) {
    const names = [0, 1].map((i) => (personas[i] ? personas[i].name : conv.p[i] ? conv.p[i][0] : "?"));
    const art = $("conv");
    const nTurns = conv.turns.length;
    const nMessages = conv.turns.reduce((a, t) => a + t[3].length, 0);
    const badges = [conv.style, conv.cadence, conv.model].filter(Boolean).map((v) => el("span", { class: "badge", text: v }));
    if (conv.ended_by) badges.push(el("span", { class: "badge", text: "ended: " + conv.ended_by }));
    const prev = el("button", { type: "button", title: "previous conversation (k)", text: "‹ prev" });
    const next = el("button", { type: "button", title: "next conversation (j)", text: "next ›" });
    prev.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    const toggle = el("input", { type: "checkbox", id: "show-state" });
    toggle.checked = document.body.classList.contains("show-state");
    toggle.addEventListener("change", () => document.body.classList.toggle("show-state", toggle.checked));
    const parts = [
      el("h2", { text: names[0] + " ↔ " + names[1] }),
      el(
        "div",
        { class: "conv-meta" },
        el("a", { class: "permalink", href: link(conv.id), title: "link to this conversation", text: conv.id }),
        " · " + nTurns + " turns · " + nMessages + " messages" +
          (conv.usage[1] ? " · " + fmt(conv.usage[0]) + " prompt / " + fmt(conv.usage[1]) + " completion tokens" : ""),
      ),
      el("div", {}, ...badges),
      el("div", { class: "toolbar" }, prev, next, el("label", {}, toggle, " state lines (s)")),
    ];
    if (conv.fail) {
      const f = conv.fail;
      const retries = Object.entries(f.retries || {}).map(([k, v]) => k + " ×" + v).join(", ");
      parts.push(
        el(
          "div",
          { class: "failure", role: "alert" },
          el("strong", { text: "Failed: " }),
          el("code", { text: f.reason }),
          el("div", { text: f.detail || "" }),
          el("div", { class: "ctx-meta", text: f.attempts + " attempts" + (retries ? " · retries: " + retries : "") }),
        ),
      );
    }
    const chat = el("div", { class: "chat" });
    let lastDay = null;
    conv.turns.forEach((t, k) => {
      const [side, state, event, messages] = t;
      // A turn is one group on its speaker's side; a day change inside it splits the group
      // so that the day separator sits between the messages.
      let group = el("div", { class: "turn side-" + side, "data-turn": String(k) });
      group.append(stateLine(state, conv.topics));
      group.append(el("div", { class: "sender", text: names[side] }));
      if (event) group.append(el("div", { class: "event", title: "instant event, seen by this speaker only", text: "⚡ " + event }));
      let said = false;
      for (const [tm, d, type, text] of messages) {
        if (d !== lastDay) {
          if (said) {
            chat.append(group);
            group = el("div", { class: "turn side-" + side + " cont", "data-turn": String(k) });
            said = false;
          }
          chat.append(el("div", { class: "day", text: day(d) }));
          lastDay = d;
        }
        const msg = el("div", { class: "msg", "data-type": type });
        if (type !== "text") msg.append(el("span", { class: "badge media", text: type }), " ");
        msg.append(el("span", { class: "text", text: text }), el("time", { text: tm, title: d + " " + tm }));
        group.append(msg);
        said = true;
      }
      chat.append(group);
    });
    if (conv.ended_by === "exhausted") {
      chat.append(el("div", { class: "ending", text: "— every topic spent: the chat ended with <predefined_topics_exhausted/> —" }));
    } else if (conv.ended_by === "max_turns") {
      chat.append(el("div", { class: "ending", text: "— the turn limit ended the chat after " + nTurns + " turns —" }));
    } else if (conv.fail) {
      chat.append(el("div", { class: "ending", text: "— no conversation was saved: the chat failed —" }));
    }
    parts.push(chat);
    if (conv.summary) {
      parts.push(el("details", { class: "summary" }, el("summary", { text: "Rolling summary" }), el("p", { text: conv.summary })));
    }
    const retries = Object.entries(conv.fail ? {} : conv.retries || {});
    if (retries.length) {
      parts.push(el("div", { class: "retries ctx-meta", text: "Corrected on the way: " + retries.map(([k, v]) => k + " ×" + v).join(", ") }));
    }
    art.replaceChildren(...parts);
    art.hidden = false;
    $("conv-empty").hidden = true;
    $("conv-pane").scrollTop = 0;
    renderContext(conv, exp, personas, names);
    document.title = names[0] + " ↔ " + names[1] + " · soc-async";
  }

  function renderContext(conv, exp, personas, names) {
    const pane = $("context-pane");
    const parts = [];
    if (exp) {
      const opener = exp.opener === conv.p[0]?.[0] ? names[0] : names[1];
      const facts = [exp.style, exp.cadence, "opens: " + opener, exp.region_matched ? "same region" : "regions mixed"];
      if (exp.start) facts.push("starts " + exp.start);
      if (exp.style_hint) facts.push("style hint: " + exp.style_hint);
      parts.push(
        el(
          "details",
          { open: true, class: "experience" },
          el("summary", { text: "Experience" }),
          el("div", { class: "ctx-meta", text: facts.join(" · ") }),
          el("div", { class: "card", html: exp.html }),
        ),
      );
    } else {
      parts.push(el("p", { class: "ctx-meta", text: "The experience " + (conv.exp || "") + " is not in this run directory." }));
    }
    conv.p.forEach(([pid], i) => {
      const p = personas[i];
      if (!p) {
        parts.push(el("p", { class: "ctx-meta", text: "Persona " + pid + " is not in personas.jsonl." }));
        return;
      }
      const facts = [p.age, p.gender, p.subregion || p.region, p.occupation, p.band, p.model].filter((x) => x !== null && x !== undefined && x !== "");
      parts.push(
        el(
          "details",
          { open: true, class: "persona", "data-persona": pid },
          el("summary", { text: (i === 0 ? "Opener: " : "Other: ") + p.name }),
          el("div", { class: "ctx-meta", text: facts.join(" · ") + " · " + pid }),
          el("div", { class: "card", html: p.html }),
        ),
      );
    });
    pane.replaceChildren(...parts);
    pane.scrollTop = 0;
  }

  function step(delta) {
    const list = S.filtered.length ? S.filtered : S.rows;
    if (!list.length) return;
    const at = list.findIndex((r) => r[F.id] === S.current);
    let i = at < 0 ? (delta > 0 ? 0 : list.length - 1) : at + delta;
    i = Math.max(0, Math.min(list.length - 1, i));
    if (list === S.filtered) {
      const page = Math.floor(i / PAGE);
      if (page !== S.page) {
        S.page = page;
        renderList();
      }
    }
    // The hashchange that opens it comes as a later task, and a browser may take the
    // next key press first: the next step must start from here, not from the old one.
    S.current = list[i][F.id];
    location.hash = link(S.current);
  }

  // ---- failures ----------------------------------------------------------------------

  async function showFailures() {
    document.body.classList.add("failures");
    const pane = $("failures-pane");
    pane.hidden = false;
    if (!S.failures) {
      S.failures = [];
      for (let k = 0; k < S.meta.failure_chunks; k++) S.failures.push(...(await load("f", k)));
    }
    const stage = pane.dataset.stage || "";
    const rows = S.failures.filter((f) => !stage || f[1] === stage);
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    S.failPage = Math.min(S.failPage, pages - 1);
    const select = el("select", { "aria-label": "Stage" });
    for (const [v, label] of [["", "every stage"], ["personas", "personas"], ["experiences", "experiences"], ["chats", "chats"]]) {
      const o = el("option", { value: v, text: label });
      if (v === stage) o.selected = true;
      select.append(o);
    }
    select.addEventListener("change", () => {
      pane.dataset.stage = select.value;
      S.failPage = 0;
      showFailures();
    });
    const body = rows.slice(S.failPage * PAGE, (S.failPage + 1) * PAGE).map(([id, st, reason, attempts, detail]) =>
      el(
        "tr",
        {},
        el("td", {}, st === "chats" ? el("a", { href: link(id), text: id }) : id),
        el("td", { text: st }),
        el("td", {}, el("code", { text: reason })),
        el("td", { text: String(attempts) }),
        el("td", { text: detail }),
      ),
    );
    const prev = el("button", { type: "button", text: "‹" });
    const next = el("button", { type: "button", text: "›" });
    prev.disabled = S.failPage === 0;
    next.disabled = S.failPage >= pages - 1;
    prev.addEventListener("click", () => { S.failPage--; showFailures(); });
    next.addEventListener("click", () => { S.failPage++; showFailures(); });
    const counts = S.meta.counts.failures;
    pane.replaceChildren(
      el("h2", { text: "Failures" }),
      el("p", { class: "ctx-meta", text: "personas " + fmt(counts.personas || 0) + " · experiences " + fmt(counts.experiences || 0) + " · chats " + fmt(counts.chats || 0) }),
      el("div", {}, select, " ", prev, " page " + (S.failPage + 1) + "/" + pages + " ", next),
      el(
        "table",
        { class: "failures" },
        el("thead", {}, el("tr", {}, ...["id", "stage", "reason", "attempts", "detail"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...body),
      ),
    );
  }

  // ---- routing and keys --------------------------------------------------------------

  function route() {
    const hash = location.hash;
    $("nav-failures").classList.toggle("active", hash === "#/failures");
    $("nav-list").classList.toggle("active", hash !== "#/failures");
    if (hash.startsWith("#/c/")) openConversation(decodeURIComponent(hash.slice(4)));
    else if (hash === "#/failures") showFailures();
    else {
      document.body.classList.remove("failures");
      $("failures-pane").hidden = true;
    }
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.matches && e.target.matches("input[type=search], input[type=text], select, textarea");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      return;
    }
    const actions = {
      j: () => step(1),
      n: () => step(1),
      k: () => step(-1),
      p: () => step(-1),
      "]": () => turnPage(1),
      "[": () => turnPage(-1),
      "/": () => $("q").focus(),
      s: () => {
        const on = document.body.classList.toggle("show-state");
        const box = $("show-state");
        if (box) box.checked = on;
      },
      f: () => { location.hash = "#/failures"; },
      "?": () => { $("help").hidden = !$("help").hidden; },
      Escape: () => { $("help").hidden = true; },
    };
    const action = actions[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  }

  async function start() {
    try {
      S.meta = await load("meta", 0);
    } catch (e) {
      document.querySelector("main").replaceChildren(el("p", { class: "error", text: "No data: " + e.message + " (run soc-async view DIR again)" }));
      return;
    }
    S.meta.fields.forEach((f, i) => { F[f] = i; });
    const c = S.meta.counts;
    $("run-name").textContent =
      S.meta.run + " · " + fmt(c.conversations) + " conversations" + (c.failed_chats ? " · " + fmt(c.failed_chats) + " failed chats" : "");
    $("failure-count").textContent = "(" + fmt(S.meta.failures) + ")";
    document.addEventListener("keydown", onKey);
    $("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
    window.addEventListener("hashchange", route);
    setupFilters();
    applyFilters(true);
    route();
    for (let k = 0; k < S.meta.index_chunks; k++) {
      let rows;
      try {
        rows = await indexChunk(k);
      } catch (e) {
        status(e.message);
        return;
      }
      for (const r of rows) {
        S.rows.push(r);
        S.byId.set(r[F.id], r);
      }
      status(k + 1 < S.meta.index_chunks ? "loading the list: " + fmt(S.rows.length) + " of " + fmt(S.meta.rows) : fmt(S.meta.rows) + " in the list");
      applyFilters(false);
      markCurrent();
    }
  }

  start();
})();
