// The agents' console. Everything a client or the daemon sends is put into the page as text
// (textContent, text nodes); nothing received is ever parsed as HTML. Each text goes in isolated
// (a <bdi>: direction of its own, unicode-bidi: isolate), so that a client's value holding bidi
// controls or right-to-left letters reorders nothing around it: never the labels, the other
// values, who wrote what. Inside it, an embedding, override or isolate control is shown as what
// it is (\u202e), not obeyed: "evil" RLO "txt.exe" would read "evilexe.txt"; and a letter shows
// at most MAX_MARKS combining marks, so that none covers the lines around it.
"use strict";

(function () {
  const MAX_FEED = 300;
  const state = { me: null, soundOn: false, source: null };
  // what the page played, read by the browser tests (and handy in the devtools)
  const played = (window.__rulekitPlayed = []);
  const blocked = (window.__rulekitBlocked = []);

  const $ = (id) => document.getElementById(id);

  // elements whose content can only be text (an <option>'s label is its text)
  const TEXT_ONLY = new Set(["OPTION", "TEXTAREA", "TITLE", "BDI"]);

  // U+202A-U+202E (embeddings, overrides, their end) and U+2066-U+2069 (isolates)
  function reorders(code) {
    return (code >= 0x202a && code <= 0x202e) || (code >= 0x2066 && code <= 0x2069);
  }

  // combining marks one letter carries, at most: a script's letter needs a few (Vietnamese
  // two, pointed Hebrew four); a client's letter carrying dozens stacks them over the lines
  // above and below, covering the labels, times and other values there
  const MAX_MARKS = 8;
  const MARK = /^\p{M}$/u;  // (one character at a time)

  // text with each control that reorders written visibly, and the marks a letter carries
  // beyond MAX_MARKS left out (one pass)
  function revealed(text) {
    let out = "";
    let marks = 0;
    for (const char of text) {
      const code = char.codePointAt(0);
      if (code >= 0x300 && MARK.test(char)) {
        if (++marks > MAX_MARKS) continue;
      } else {
        marks = 0;
      }
      out += reorders(code) ? "\\u" + code.toString(16) : char;
    }
    return out;
  }

  // a text isolated from what surrounds it (see the top of this file)
  function iso(text) {
    const node = document.createElement("bdi");
    node.textContent = revealed(String(text));
    return node;
  }

  // el("li", {class: "x", dataset: {type: "event"}}, "text", child, ...): each text child
  // isolated; a list of children (a value and its labels) is appended part by part
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    const textOnly = TEXT_ONLY.has(node.tagName);
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === "") continue;
      if (child instanceof Node) node.append(child);
      else node.append(textOnly ? document.createTextNode(String(child)) : iso(child));
    }
    return node;
  }

  // parts joined by separator, each isolated: [a, " · ", b, ...]
  function joined(parts, separator) {
    const out = [];
    for (const part of parts) {
      if (part === undefined || part === null || part === "" || (Array.isArray(part) && !part.length)) continue;
      if (out.length) out.push(document.createTextNode(separator));
      out.push(part);
    }
    return out;
  }

  function when(value) {
    if (!value) return "";
    const date = new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleString();
  }

  function safeLink(value) {
    // only http(s) links become clickable: a client-supplied "javascript:" stays text, and so
    // does an address with a user name, which reads as one host and leads to another
    // ("https://shop.example.com:8443@evil.example/"), and one the API cut short (ending "…":
    // it would lead to another page)
    if (String(value).endsWith("\u2026")) return iso(value);
    try {
      const url = new URL(String(value));
      if ((url.protocol === "http:" || url.protocol === "https:") && !url.username && !url.password) {
        return el("a", { href: url.href, rel: "noopener noreferrer", target: "_blank" }, url.href);
      }
    } catch (e) { /* not a URL */ }
    return iso(value);
  }

  async function send(method, path, body, headers) {
    // writes go as JSON from the console's own page (the API refuses other cookie writes)
    const response = await fetch(path, {
      method, credentials: "same-origin",
      headers: { Accept: "application/json", "Content-Type": "application/json", ...(headers || {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 401) {
      window.location.assign("/console/login");
      throw new Error("signed out");
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || ("HTTP " + response.status));
      error.status = response.status;
      error.retryAfter = response.headers.get("Retry-After");
      throw error;
    }
    return data;
  }

  async function getJSON(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/console/login");
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // -- reading messages ------------------------------------------------------------------
  function eventOf(message) {
    return message.event && typeof message.event === "object" ? message.event : null;
  }

  function clientLabel(client) {
    if (!client) return "";
    return client.name || client.display_name || client.email || client.id || "";
  }

  function describe(message) {
    const event = eventOf(message);
    const parts = [];
    let text = "";
    switch (message.type) {
      case "event":
        if (event) {
          parts.push(event.channel, event.event, clientLabel(event.client));
          if (event.message && event.message.text) text = event.message.text;
        } else {
          // the daemon's own summary: names, the rules that matched, the actions they planned
          parts.push(message.channel, typeof message.event === "string" ? message.event : "", message.client_name);
          if (message.origin === "rulekit") parts.push("(rulekit's own)");
          if (message.duplicate) parts.push("(redelivery, not processed again)");
          const lines = [];
          if (message.text) lines.push(String(message.text));
          if (Array.isArray(message.matched) && message.matched.length) lines.push("matched: " + message.matched.join(", "));
          for (const planned of Array.isArray(message.actions) ? message.actions : []) {
            lines.push([planned.rule, " → ", planned.action]);
          }
          for (const error of Array.isArray(message.errors) ? message.errors : []) {
            lines.push(["error: ", typeof error === "string" ? error : JSON.stringify(error)]);
          }
          text = lines;
        }
        break;
      case "inbox_failed":
        parts.push(message.channel, "webhook #" + message.inbox_id + " could not be read (set aside, retryable)");
        break;
      case "sound":
        parts.push(message.sound, "for " + (message.to || []).join(", "));
        break;
      case "reload":
        parts.push(message.ok === false ? "failed" : "rules reloaded", message.rules_version || message.version);
        text = [].concat(message.ok === false ? (message.errors || message.error || []) : (message.warnings || []));
        break;
      case "gap":
        parts.push("the stream fell behind: " + message.dropped + " messages skipped; reload the page for the full history");
        break;
      default:
        parts.push(message.rule, message.action, message.outcome || message.status, message.destination);
        if (message.error) text = String(message.error);
        else if (message.summary) text = String(message.summary);
    }
    return { summary: joined(parts, " · "), text };
  }

  function conversationRef(message) {
    const event = eventOf(message);
    const conversation = event ? event.conversation : message.conversation;
    const channel = event ? event.channel : message.channel;
    const id = conversation && typeof conversation === "object" ? conversation.id : message.conversation_id;
    return channel && id ? { channel: String(channel), id: String(id) } : null;
  }

  function feedItem(message) {
    const { summary, text } = describe(message);
    const failed = message.ok === false || message.outcome === "dead" || message.outcome === "failed";
    const item = el("li", { dataset: { type: String(message.type || "message") }, class: failed ? "failed" : "" },
      el("span", { class: "kind" }, message.type || "message"), " ", summary);
    if (message.event_id || (eventOf(message) && eventOf(message).id)) {
      item.dataset.eventId = String(message.event_id || eventOf(message).id);
    }
    const ref = conversationRef(message);
    if (ref) {
      const open = el("button", { type: "button", class: "link open-conversation" }, "open conversation");
      open.addEventListener("click", () => { window.location.hash = "#/c/" + encodeURIComponent(ref.channel) + "/" + encodeURIComponent(ref.id); });
      item.append(" ", open);
    }
    if (message.jobs && message.jobs.length) {
      const jobs = message.jobs.map((j) => [j.rule, ": ", j.action, " ", j.status, j.error ? [" (", j.error, ")"] : []]);
      item.append(el("span", { class: "text" }, joined(jobs, "\n")));
    }
    const lines = [].concat(text || []);
    if (lines.length) item.append(el("span", { class: "text" }, joined(lines, "\n")));
    if (Array.isArray(message.team) && message.team.length) {
      item.append(el("span", { class: "text team" }, "team: " + message.team.join("; ")));
    }
    const at = message.processed_at || message.at || (eventOf(message) && eventOf(message).occurred_at);
    if (at) item.append(" ", el("span", { class: "time" }, when(at)));
    return item;
  }

  function addToFeed(message, atTop) {
    const feed = $("feed");
    const item = feedItem(message);
    if (atTop === false) feed.append(item);
    else feed.prepend(item);
    while (feed.children.length > MAX_FEED) feed.lastElementChild.remove();
  }

  // -- reload errors and dead letters ----------------------------------------------------
  function listText(value) {
    if (value === undefined || value === null) return "";
    return Array.isArray(value) ? value.map(String).join("\n") : String(value);
  }

  function showProblems(problems) {
    $("problems").replaceChildren(...(problems || []).map((p) => el("li", {}, p)));
    $("problems-banner").hidden = !(problems && problems.length);
  }

  function showReload(message) {
    const banner = $("reload-banner");
    if (message && message.ok !== false && Array.isArray(message.warnings)) showProblems(message.warnings);
    if (message && message.ok === false) {
      $("reload-error").textContent = listText(message.errors || message.error) || "the admin page and the daemon's log say why";
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
  }

  function deadLetterItem(letter) {
    const label = joined([letter.rule, letter.action, letter.destination, letter.channel], " · ");
    const item = el("li", { dataset: { jobId: String(letter.job_id || "") } }, label,
      letter.error ? el("span", { class: "text" }, letter.error) : null);
    if (letter.job_id) {
      const retry = el("button", { type: "button", class: "retry-dead" }, "Retry");
      const status = el("span", { class: "retry-status", role: "status" });
      retry.addEventListener("click", () => {
        retry.disabled = true;
        status.textContent = " sending again…";
        send("POST", "/console/api/dead-letters/" + encodeURIComponent(String(letter.job_id)) + "/retry")
          .then(() => { status.textContent = " sent again (pending)"; item.classList.add("retried"); })
          .catch((error) => { status.textContent = " " + String(error.message || error); retry.disabled = false; });
      });
      item.append(" ", retry, status);
    }
    return item;
  }

  function addDeadLetter(letter) {
    $("no-dead").hidden = true;
    const known = $("dead-letters").querySelector('li[data-job-id="' + CSS.escape(String(letter.job_id || "")) + '"]');
    const item = deadLetterItem(letter);
    if (known && letter.job_id) known.replaceWith(item);
    else $("dead-letters").prepend(item);
    // the newest, as the feed: a day of failing actions must not fill the page
    while ($("dead-letters").children.length > MAX_FEED) $("dead-letters").lastElementChild.remove();
  }

  // -- sounds ----------------------------------------------------------------------------
  function targetsMe(message) {
    const to = Array.isArray(message.to) ? message.to.map((t) => String(t).toLowerCase()) : [];
    if (to.includes("*")) return true;
    return Boolean(state.me && state.me.email && to.includes(state.me.email.toLowerCase()));
  }

  function playSound(message) {
    if (!targetsMe(message)) return;
    const record = { sound: String(message.sound), event_id: message.event_id || null, seq: message.seq };
    if (!state.soundOn) {
      remember(blocked, record);
      return;
    }
    const audio = new Audio("/console/sounds/" + encodeURIComponent(String(message.sound)) + ".wav");
    audio.play().then(() => {
      remember(played, record);
      document.body.dataset.played = played.map((p) => p.sound).join(" ");
    }).catch((error) => {
      remember(blocked, { ...record, error: String(error) });
    });
  }

  // the newest MAX_FEED of what the page played or held back
  function remember(list, record) {
    list.push(record);
    if (list.length > MAX_FEED) list.splice(0, list.length - MAX_FEED);
  }

  function enableSound() {
    state.soundOn = true;
    $("enable-sound").hidden = true;
    $("sound-state").hidden = false;
    document.body.dataset.sound = "on";
  }

  // -- the live stream -------------------------------------------------------------------
  function handle(message) {
    switch (message.type) {
      case "sound":
        playSound(message);
        break;
      case "reload":
        showReload(message);
        break;
      case "dead_letter":
        addDeadLetter(message);
        break;
    }
    addToFeed(message);
    document.dispatchEvent(new CustomEvent("rulekit:message", { detail: message }));
  }

  // a refused stream (429: this agent's pages hold too many; 503: the console's are all open)
  // is tried again when the server's Retry-After says, a little later at random so that the
  // pages refused together do not come back together, and never later than MAX_RETRY_WAIT
  const MAX_RETRY_WAIT = 300;  // seconds
  const NO_RETRY_AFTER = 2;    // seconds, when the server did not say (doubling to the cap)

  function retryDelay(retryAfter, failures) {
    const text = String(retryAfter == null ? "" : retryAfter).trim();
    let seconds = text !== "" && Number.isFinite(Number(text)) ? Number(text) : NaN;
    if (Number.isNaN(seconds) && text !== "") {
      const at = Date.parse(text);  // Retry-After may be an HTTP date
      if (Number.isFinite(at)) seconds = (at - Date.now()) / 1000;
    }
    if (!Number.isFinite(seconds)) seconds = NO_RETRY_AFTER * 2 ** Math.min(failures || 0, 8);
    const base = Math.min(Math.max(seconds, 1), MAX_RETRY_WAIT);
    return Math.min(base + Math.random() * Math.min(base / 4, 30), MAX_RETRY_WAIT);
  }

  function reconnectLater(retryAfter, why) {
    const status = $("connection");
    state.failures = (state.failures || 0) + 1;
    const wait = retryDelay(retryAfter, state.failures - 1);
    status.dataset.state = "error";
    status.dataset.retryIn = String(Math.round(wait));
    status.textContent = why + ": reconnecting in " + Math.round(wait) + " s…";
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(reopen, wait * 1000);
  }

  async function reopen() {
    // the server refused the stream, or it is gone: EventSource does not say why (nor its
    // Retry-After), so ask the stream once; a stream granted here is let go at once
    const controller = new AbortController();
    let response;
    try {
      response = await fetch("/console/stream", {
        credentials: "same-origin", headers: { Accept: "text/event-stream" }, signal: controller.signal,
      });
    } catch (e) {
      reconnectLater(null, "no connection");
      return;
    }
    controller.abort();
    if (response.status === 401) {
      window.location.assign("/console/login");
      return;
    }
    if (!response.ok) {
      const busy = response.status === 429 || response.status === 503;
      reconnectLater(busy ? response.headers.get("Retry-After") : null,
        response.status === 429 ? "too many console pages open" : "the console is busy");
      return;
    }
    connect();
  }

  function connect() {
    const source = new EventSource("/console/stream");
    state.source = source;
    const status = $("connection");
    source.onopen = () => {
      state.failures = 0;
      delete status.dataset.retryIn;
      status.dataset.state = "open";
      status.textContent = "live";
    };
    source.onerror = () => {
      // EventSource reconnects by itself, sending Last-Event-ID, unless the server refused
      status.dataset.state = "error";
      status.textContent = "reconnecting…";
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        reopen();
      }
    };
    source.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && typeof message === "object") handle(message);
    };
  }

  // -- the conversation view -------------------------------------------------------------
  const CLIENT_FIELDS = [
    ["Name", (c) => c.name || c.display_name],
    ["Email", (c) => c.email],
    ["Phone", (c) => c.phone],
    ["Last visit", (c) => when(c.last_visit)],
    ["IP address", (c) => c.ip],
    ["Chat language", (c) => c.language],
    ["Browser language", (c) => c.browser_language],
    ["Browser", (c) => c.browser],
    ["OS", (c) => c.os],
    ["Location", (c) => joined([c.city, c.country], ", ")],
    ["Notes", (c) => c.notes],
  ];

  function facts(target, rows) {
    target.replaceChildren();
    for (const [label, value] of rows) {
      if (value === undefined || value === null || value === "" || (Array.isArray(value) && !value.length)) continue;
      target.append(el("dt", {}, label), el("dd", {}, value));
    }
    if (!target.children.length) target.append(el("dt", {}, "—"), el("dd", { class: "quiet" }, "nothing known"));
  }

  // the conversation's latest page (docs/console.md: older ones and newer events are read by
  // workspace.js with their cursors, and shown again through renderConversation)
  async function showConversation(channel, id) {
    renderConversation(await getJSON(conversationPath(channel, id)));
  }

  function conversationPath(channel, id) {
    return "/console/api/conversations/" + encodeURIComponent(channel) + "/" + encodeURIComponent(id);
  }

  function renderConversation(data) {
    const c = data.conversation || {};
    facts($("conversation-facts"), [
      ["Channel", data.channel], ["Status", c.status], ["Group", c.group], ["Assignee", c.assignee || (c.assignee_hidden ? "another agent" : null)],
      ["Tags", joined(c.tags || [], ", ")], ["Priority", c.priority],
      ["Page", c.page ? safeLink(c.page) : null], ["Link", c.link ? safeLink(c.link) : null],
    ]);
    const fields = c.fields && typeof c.fields === "object" ? c.fields : {};
    facts($("conversation-fields"), Object.entries(fields).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
    const client = data.client || {};
    facts($("client-panel"), CLIENT_FIELDS.map(([label, get]) => [label, get(client)]));
    const custom = client.custom && typeof client.custom === "object" ? client.custom : {};
    facts($("client-custom"), Object.entries(custom).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
    const list = $("conversation-events");
    list.replaceChildren(...(data.events || []).map(feedItem));
    $("conversation").hidden = false;
    document.dispatchEvent(new CustomEvent("rulekit:conversation", { detail: data }));
  }

  // the parts of a link, percent-decoded; null when one is not percent-encoding
  function decoded(...parts) {
    try {
      return parts.map(decodeURIComponent);
    } catch (e) {
      return null;
    }
  }

  function route() {
    const admin = window.location.hash === "#/admin";
    $("workspace").hidden = admin;
    $("admin").hidden = !admin;
    document.body.dataset.view = admin ? "admin" : "workspace";
    if (admin) document.dispatchEvent(new CustomEvent("rulekit:admin"));
    const match = /^#\/c\/([^/]+)\/(.+)$/.exec(window.location.hash);
    const named = match && decoded(match[1], match[2]);
    if (!named) {  // no conversation, or none a link could name (not percent-encoding)
      $("conversation").hidden = true;
      document.dispatchEvent(new CustomEvent("rulekit:conversation", { detail: null }));
      return;
    }
    showConversation(named[0], named[1]).catch((error) => {
      facts($("conversation-facts"), [["Error", String(error.message || error)]]);
      $("conversation").hidden = false;
    });
  }

  // -- start -----------------------------------------------------------------------------
  async function start() {
    $("enable-sound").addEventListener("click", enableSound);
    $("close-conversation").addEventListener("click", () => { window.location.hash = ""; });
    window.addEventListener("hashchange", route);
    state.me = await getJSON("/console/api/me");
    $("who").textContent = state.me.admin ? "admin (everything)" : (state.me.name ? state.me.name + " · " : "") + state.me.email;
    showProblems(state.me.problems);
    document.dispatchEvent(new CustomEvent("rulekit:ready", { detail: state.me }));
    document.body.dataset.ready = "true";
    connect();
    const recent = await getJSON("/console/api/recent");
    for (const message of recent.events || []) addToFeed(message, false);
    for (const letter of (recent.dead_letters || []).slice().reverse()) addDeadLetter(letter);
    if (recent.reload) showReload(recent.reload);
    route();
  }

  // what the workspace script (workspace.js) builds on
  window.rulekitConsole = { $, el, iso, joined, when, safeLink, getJSON, send, feedItem, deadLetterItem, state, route, showConversation, renderConversation, conversationPath, retryDelay };

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((error) => {
      $("connection").dataset.state = "error";
      $("connection").textContent = String(error.message || error);
    });
  });
})();
