// soc-async annotate: one conversation (or one blind pair) at a time, keyboard first.
// The server holds the plan and the answers; this page holds only the answer being
// given, so a closed tab or a restarted server loses nothing that was saved.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const NAME_KEY = "soc-annotate-rater";
  const AB = [["left", "◀ left is better"], ["tie", "the same"], ["right", "right is better ▶"]];
  const S = {
    token: new URLSearchParams(location.search).get("token") || "",
    rater: "", mode: "rate", rubric: null, queue: [], done: new Set(), index: 0,
    item: null, answer: null, focus: 0, busy: false,
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "html") node.innerHTML = v; // cards rendered server-side, raw HTML off
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function status(text, bad) {
    $("load-status").textContent = text;
    $("load-status").classList.toggle("bad", !!bad);
  }

  async function api(path, params, body) {
    const q = new URLSearchParams({ rater: S.rater, ...(params || {}) });
    if (S.token) q.set("token", S.token);
    const init = body ? { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } } : {};
    let res;
    try {
      res = await fetch("api/" + path + "?" + q.toString(), init);
    } catch (e) {
      throw new Error("the server does not answer; nothing was lost: try again when it is back");
    }
    const data = await res.json().catch(() => ({ error: res.statusText }));
    if (!res.ok) throw new Error(data.error || res.statusText);
    return data;
  }

  // ---- drawing a conversation (as the viewer draws it) -------------------------------

  function day(d) {
    const [dd, mm] = String(d).split(".");
    const month = MONTHS[Number(mm) - 1];
    return month ? Number(dd) + " " + month : d;
  }

  function stateLine(state, topics) {
    const [topic, left, next] = state.split(";").map((s) => s.trim());
    const slot = topics.findIndex((t) => t[0].toLowerCase() === (topic || "").toLowerCase());
    const where = slot >= 0 ? "slot " + (slot + 1) + "/" + topics.length : "slot ?";
    return el("div", { class: "state" }, el("b", { text: topic || state }), " · " + (left || "") + " · next: " + (next || "") + " · " + where);
  }

  function context(conv) {
    const parts = [];
    const exp = conv.experience;
    if (exp) {
      const facts = [exp.style, exp.cadence, "opens: " + exp.opener];
      if (exp.start) facts.push("starts " + exp.start);
      parts.push(el("h3", { text: "Experience" }), el("div", { class: "ctx-meta", text: facts.join(" · ") }), el("div", { class: "card", html: exp.html }));
    }
    conv.personas.forEach((p, i) => {
      parts.push(
        el("h3", { text: (i === 0 ? "Opener: " : "Other: ") + p.name }),
        el("div", { class: "ctx-meta", text: p.facts.join(" · ") }),
        el("div", { class: "card", html: p.html }),
      );
    });
    return el("details", { class: "ctx" }, el("summary", { text: "Experience and persona cards (e)" }), ...parts);
  }

  function drawConversation(conv, title) {
    const names = conv.personas.map((p) => p.name);
    const chat = el("div", { class: "chat" });
    let lastDay = null;
    conv.turns.forEach((t, k) => {
      const [side, state, event, messages] = t;
      let group = el("div", { class: "turn side-" + side, "data-turn": String(k) });
      group.append(stateLine(state, conv.topics), el("div", { class: "sender", text: names[side] || "?" }));
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
    const facts = [conv.style, conv.cadence, conv.turns.length + " turns"].map((v) => el("span", { class: "badge", text: v }));
    return el(
      "article",
      { class: "conv" },
      el("h2", { text: (title ? title + ": " : "") + names.join(" ↔ ") }),
      el("div", {}, ...facts),
      context(conv),
      chat,
    );
  }

  // ---- the answer form --------------------------------------------------------------

  function criterionBox(c, k) {
    const box = el("fieldset", { class: "criterion", "data-key": c.key, "data-index": String(k) });
    box.append(el("legend", { text: k + 1 + ". " + c.label }));
    if (c.question) box.append(el("p", { class: "question", text: c.question }));
    const options = S.mode === "rate"
      ? Object.entries(c.anchors).map(([v, anchor]) => [v, v, anchor])
      : AB.map(([v, label], i) => [v, String(i + 1), label]);
    const points = el("div", { class: "points" });
    for (const [value, key, label] of options) {
      const input = el("input", { type: "radio", name: "c-" + c.key, value: value, tabindex: "-1" });
      input.addEventListener("change", () => {
        setChoice(c.key, value);
        S.focus = k;
        markFocus();
      });
      points.append(el("label", { class: "point", "data-value": value }, input, el("kbd", { text: key }), " ", el("span", { text: label })));
    }
    box.append(points);
    box.addEventListener("click", () => {
      S.focus = k;
      markFocus();
    });
    return box;
  }

  function buildForm() {
    const r = S.rubric;
    $("criteria").replaceChildren(...r.criteria.map(criterionBox));
    const flags = S.mode === "rate" ? r.flags : [];
    $("flags-box").hidden = flags.length === 0;
    $("flags").replaceChildren(
      ...flags.map(([flag, key]) => {
        const box = el("input", { type: "checkbox", "data-flag": flag, tabindex: "-1" });
        box.addEventListener("change", () => toggleFlag(flag, box.checked));
        return el("label", { class: "flag" }, box, " ", el("kbd", { text: key }), " " + flag);
      }),
    );
    $("comment-box").hidden = !r.comment;
    const keys = [
      [S.mode === "rate" ? "1–" + Math.max(...r.criteria.map((c) => c.high)) : "1 2 3", S.mode === "rate" ? "score the highlighted criterion, then move on" : "left better, the same, right better"],
      ["↓ ↑", "next / previous criterion"],
      ...flags.map(([flag, key]) => [key, "flag: " + flag]),
      ["c", "write a comment (Esc leaves it, Ctrl+Enter saves)"],
      ["Enter", "save and go to the next"],
      ["n →", "next without saving"],
      ["p ←", "previous"],
      ["s", "show the state lines"],
      ["e", "open the experience and persona cards"],
      ["?", "this help"],
    ];
    $("help-keys").replaceChildren(...keys.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  }

  function values() {
    return S.mode === "rate" ? S.answer.scores : S.answer.choices;
  }

  function setChoice(key, value) {
    values()[key] = S.mode === "rate" ? Number(value) : value;
    showAnswer();
  }

  function toggleFlag(flag, on) {
    if (on === undefined) on = !S.answer.flags.includes(flag);
    S.answer.flags = S.answer.flags.filter((f) => f !== flag);
    if (on) S.answer.flags.push(flag);
    showAnswer();
  }

  function showAnswer() {
    const vals = values();
    for (const box of document.querySelectorAll("#criteria .criterion")) {
      const v = vals[box.dataset.key];
      box.classList.toggle("answered", v !== undefined);
      for (const input of box.querySelectorAll("input")) input.checked = String(v) === input.value;
    }
    for (const box of document.querySelectorAll("#flags input")) box.checked = S.answer.flags.includes(box.dataset.flag);
  }

  function markFocus() {
    document.querySelectorAll("#criteria .criterion").forEach((box, k) => box.classList.toggle("focus", k === S.focus));
    const cur = document.querySelector("#criteria .criterion.focus");
    if (cur) cur.scrollIntoView({ block: "nearest" });
  }

  // ---- moving through the queue -----------------------------------------------------

  function progress(data) {
    S.queue = data.queue;
    S.done = new Set(data.done);
    $("progress").textContent = S.done.size + " of " + S.queue.length + " rated";
  }

  async function open(index) {
    if (index >= S.queue.length) {
      finished();
      return;
    }
    index = Math.max(0, index);
    const id = S.queue[index];
    status("loading…");
    const data = await api("item", { id: id });
    progress(data);
    S.index = S.queue.indexOf(id);
    S.item = data;
    const prior = data.answer || {};
    S.answer = S.mode === "rate"
      ? { scores: { ...(prior.scores || {}) }, flags: [...(prior.flags || [])], comment: prior.comment || "" }
      : { choices: { ...(prior.choices || {}) }, comment: prior.comment || "" };
    const convs = S.mode === "rate" ? [drawConversation(data.conv, "")] : [drawConversation(data.left, "Left"), drawConversation(data.right, "Right")];
    $("convs").replaceChildren(...convs);
    $("convs").className = S.mode === "rate" ? "one" : "two";
    $("item-label").textContent = (S.mode === "rate" ? "conversation " : "pair ") + (S.index + 1) + " of " + S.queue.length + (data.answer ? " · answered" : "");
    document.body.dataset.item = id;
    $("comment").value = S.answer.comment;
    $("message").textContent = "";
    $("finished").hidden = true;
    $("work").hidden = false;
    S.focus = 0;
    showAnswer();
    markFocus();
    $("conv-pane").scrollTop = 0;
    status("");
  }

  function finished() {
    S.index = S.queue.length;
    document.body.dataset.item = "";
    $("work").hidden = true;
    $("finished").hidden = false;
    status("");
  }

  function nextOpen(from) {
    for (let i = from + 1; i < S.queue.length; i++) if (!S.done.has(S.queue[i])) return i;
    for (let i = 0; i < S.queue.length; i++) if (!S.done.has(S.queue[i])) return i;
    return S.queue.length;
  }

  async function save() {
    if (S.busy || !S.item) return;
    const missing = S.rubric.criteria.filter((c) => values()[c.key] === undefined).map((c) => c.label);
    if (missing.length) {
      $("message").textContent = "Still to answer: " + missing.join(", ");
      S.focus = S.rubric.criteria.findIndex((c) => values()[c.key] === undefined);
      markFocus();
      return;
    }
    S.answer.comment = $("comment").value;
    const body = { rater: S.rater, item: S.item.id, comment: S.answer.comment };
    if (S.mode === "rate") {
      body.scores = S.answer.scores;
      body.flags = S.answer.flags;
    } else body.choices = S.answer.choices;
    S.busy = true;
    status("saving…");
    try {
      const data = await api("answer", {}, body);
      progress(data);
      await open(nextOpen(S.queue.indexOf(S.item.id)));
    } catch (e) {
      status("not saved: " + e.message, true);
    } finally {
      S.busy = false;
    }
  }

  async function go(delta) {
    if (S.busy) return;
    S.busy = true;
    try {
      await open(Math.min(S.queue.length - 1, Math.max(0, S.index + delta)));
    } catch (e) {
      status(e.message, true);
    } finally {
      S.busy = false;
    }
  }

  function toggleContext() {
    const all = [...document.querySelectorAll("details.ctx")];
    const open = !all.every((d) => d.open);
    for (const d of all) d.open = open;
  }

  function onKey(e) {
    const t = e.target;
    if (t && t.id === "comment") {
      if (e.key === "Escape") t.blur();
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        t.blur();
        save();
      }
      return;
    }
    if (t && t.id === "rater") return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "?" || e.key === "h") {
      $("help").hidden = !$("help").hidden;
      return;
    }
    if (!S.rubric || $("work").hidden) {
      if (e.key === "p" || e.key === "ArrowLeft") go(-1);
      return;
    }
    const crit = S.rubric.criteria[S.focus];
    const flag = S.mode === "rate" ? S.rubric.flags.find(([, key]) => key === e.key) : null;
    if (/^[0-9]$/.test(e.key)) {
      let value = null;
      if (S.mode === "rate" && Number(e.key) >= crit.low && Number(e.key) <= crit.high) value = e.key;
      if (S.mode === "ab" && e.key >= "1" && e.key <= "3") value = AB[Number(e.key) - 1][0];
      if (value === null) return;
      e.preventDefault();
      setChoice(crit.key, value);
      if (S.focus < S.rubric.criteria.length - 1) S.focus += 1;
      markFocus();
    } else if (flag) {
      e.preventDefault();
      toggleFlag(flag[0]);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      S.focus = Math.max(0, Math.min(S.rubric.criteria.length - 1, S.focus + (e.key === "ArrowDown" ? 1 : -1)));
      markFocus();
    } else if (e.key === "Enter") {
      e.preventDefault();
      save();
    } else if (e.key === "n" || e.key === "ArrowRight") {
      e.preventDefault();
      go(1);
    } else if (e.key === "p" || e.key === "ArrowLeft") {
      e.preventDefault();
      go(-1);
    } else if (e.key === "c" && S.rubric.comment) {
      e.preventDefault();
      $("comment").focus();
    } else if (e.key === "s") {
      const on = document.body.classList.toggle("show-state");
      $("show-state").checked = on;
    } else if (e.key === "e") {
      toggleContext();
    }
  }

  async function begin() {
    $("login").hidden = true;
    $("who").textContent = "rating as " + S.rater;
    status("loading…");
    try {
      const data = await api("start");
      S.mode = data.mode;
      S.rubric = data.rubric;
      $("mode").textContent = S.mode === "rate" ? "rating" : "blind comparison";
      document.body.dataset.mode = S.mode;
      buildForm();
      progress(data);
      await open(data.position);
    } catch (e) {
      status(e.message, true);
    }
  }

  function start() {
    document.addEventListener("keydown", onKey);
    $("help-button").addEventListener("click", () => ($("help").hidden = !$("help").hidden));
    $("prev").addEventListener("click", () => go(-1));
    $("next").addEventListener("click", () => go(1));
    $("save").addEventListener("click", save);
    $("show-context").addEventListener("click", toggleContext);
    $("show-state").addEventListener("change", (e) => document.body.classList.toggle("show-state", e.target.checked));
    $("comment").addEventListener("input", () => {
      if (S.answer) S.answer.comment = $("comment").value;
    });
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      const name = $("rater").value.trim().replace(/\s+/g, " ");
      if (!name) return;
      localStorage.setItem(NAME_KEY, name);
      S.rater = name;
      begin();
    });
    S.rater = localStorage.getItem(NAME_KEY) || "";
    if (S.rater) begin();
    else {
      $("login").hidden = false;
      $("rater").focus();
    }
  }

  start();
})();
