// The conversation panel's edits: the assignee, the priority and the tags, each sent at once
// to the workspace API (POST .../assign, .../priority, .../tags; see docs/console.md), which
// makes them with the actions rules use. Built on console.js (window.rulekitConsole); like
// it, everything received is put into the page as text.
"use strict";

(function () {
  const K = window.rulekitConsole;
  const { $, el, send } = K;
  let open = null;  // the open conversation's view, as GET conversations/{id} answers it

  function status(text, failed) {
    $("state-status").textContent = text;
    $("state-status").classList.toggle("error", Boolean(failed));
  }

  function render(data) {
    open = data;
    $("state-form").hidden = !data;
    if (!data) return;
    const c = data.conversation || {};
    const agents = Array.isArray(data.assignable) ? data.assignable : [];
    const options = [el("option", { value: "", disabled: "" }, "nobody")];
    for (const agent of agents) {
      options.push(el("option", { value: agent.email }, agent.name ? agent.name + " (" + agent.email + ")" : agent.email));
    }
    if (c.assignee_hidden) options.push(el("option", { value: "", disabled: "" }, "another agent"));
    const current = (c.assignee || "").toLowerCase();
    if (current && !agents.some((a) => a.email.toLowerCase() === current)) {
      options.push(el("option", { value: c.assignee }, c.assignee));
    }
    $("state-assignee").replaceChildren(...options);
    const match = agents.find((a) => a.email.toLowerCase() === current);
    $("state-assignee").value = match ? match.email : c.assignee || "";
    if (c.assignee_hidden) $("state-assignee").selectedIndex = options.length - 1;
    $("state-priority").value = c.priority || "";
    const tags = Array.isArray(c.tags) ? c.tags : [];
    $("state-tags").replaceChildren(...tags.map((tag) => {
      const remove = el("button", { type: "button", class: "remove-tag", "aria-label": "Remove tag " + tag, dataset: { tag } }, "×");
      return el("li", { dataset: { tag } }, tag, " ", remove);
    }));
    const known = Array.isArray(data.known_tags) ? data.known_tags : [];
    $("state-known-tags").replaceChildren(...known.map((tag) => el("option", { value: tag })));
  }

  async function change(what, body) {
    if (!open) return;
    const { channel, id } = open;
    status("saving…", false);
    try {
      const answer = await send("POST", "/console/api/conversations/" + encodeURIComponent(id) + "/" + what, body);
      status(answer && answer.event_id ? "saved" : "nothing changed", false);
      if (what === "tags" && body.add) $("state-tag").value = "";
    } catch (error) {
      status("not saved: " + String(error.message || error), true);
    }
    // show the conversation as it is now (also after a refusal: the selects go back)
    await K.showConversation(channel, id).catch(() => {});
  }

  function start() {
    $("state-form").hidden = true;
    $("state-assignee").addEventListener("change", () => {
      if ($("state-assignee").value) change("assign", { agent: $("state-assignee").value });
    });
    $("state-priority").addEventListener("change", () => {
      if ($("state-priority").value) change("priority", { priority: $("state-priority").value });
    });
    $("state-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const tag = $("state-tag").value.trim();
      if (tag) change("tags", { add: [tag] });
    });
    $("state-tags").addEventListener("click", (event) => {
      const button = event.target.closest("button.remove-tag");
      if (button) change("tags", { remove: [button.dataset.tag] });
    });
    document.addEventListener("rulekit:conversation", (event) => render(event.detail));
  }

  document.addEventListener("DOMContentLoaded", start);
})();
