// The staff console: plain JavaScript, no build step, no library, nothing inline (strict CSP,
// Trusted Types: the DOM is built with createElement and textContent only).
// The token is typed by the staff member, kept in sessionStorage for this tab, and sent
// as a bearer header; it never goes into a URL. Updates come by polling the API.
"use strict";

(() => {
  const TOKEN_KEY = "concierge.token";
  const POLL_MS = 2000;
  const MESSAGES = 100;
  const API = "/api/v1";
  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    me: null,
    tab: "active",
    selected: null,
    handoff: null,
    shownMessages: "",
    timer: null,
  };

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function node(tag, props = {}, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "text") element.textContent = value;
      else if (name === "className") element.className = value;
      else if (name === "dataset") Object.assign(element.dataset, value);
      else element.setAttribute(name, value);
    }
    element.append(...children);
    return element;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return date.toLocaleString("fr-FR", { dateStyle: "short", timeStyle: "short" });
  }

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    const data = await response.json().catch(() => null);
    if (response.status === 401) {
      signOut("Le jeton a été refusé ou a expiré : connectez-vous à nouveau.");
      throw new ApiError(401, "refused");
    }
    if (!response.ok) {
      throw new ApiError(response.status, (data && (data.detail || data.title)) || response.statusText);
    }
    return data;
  }

  // -- signing in and out ---------------------------------------------------------------
  async function signIn(token) {
    state.token = token;
    try {
      state.me = await api("GET", "/me");
    } catch (error) {
      if (error.status !== 401) signOut(`Connexion impossible : ${error.message}`);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    $("who").textContent = `${state.me.subject} · ${state.me.role}`;
    $("sign-in").hidden = true;
    $("sign-out").hidden = false;
    $("desk").hidden = false;
    await refresh();
    state.timer = setInterval(() => refresh().catch(() => {}), POLL_MS);
  }

  function signOut(message = "") {
    clearInterval(state.timer);
    sessionStorage.removeItem(TOKEN_KEY);
    Object.assign(state, { token: null, me: null, selected: null, handoff: null, shownMessages: "" });
    $("who").textContent = "";
    $("sign-out").hidden = true;
    $("desk").hidden = true;
    $("sign-in").hidden = false;
    $("token").value = "";
    $("sign-in-error").textContent = message;
  }

  // -- the queue --------------------------------------------------------------------------
  async function refresh() {
    if (!state.token) return;
    const list = await api("GET", `/handoffs?state=${state.tab}&limit=100`);
    showQueue(list.handoffs);
    $("queue-status").textContent = `Mis à jour à ${new Date().toLocaleTimeString("fr-FR")}`;
    if (state.selected !== null) await loadHandoff(state.selected);
  }

  function showQueue(handoffs) {
    const urgent = handoffs.filter((h) => h.urgent);
    const others = handoffs.filter((h) => !h.urgent);
    $("urgent").hidden = urgent.length === 0;
    $("urgent-list").replaceChildren(...urgent.map(queueItem));
    $("handoff-list").replaceChildren(...others.map(queueItem));
    $("queue-empty").hidden = handoffs.length > 0;
  }

  function queueItem(h) {
    const name = h.display_name || h.user_key;
    const taken = h.claimed_by ? `pris par ${h.claimed_by}` : "à prendre";
    const status = h.state === "closed" ? `clos par ${h.closed_by || "?"}` : taken;
    const button = node(
      "button",
      { type: "button", dataset: { handoff: String(h.id) } },
      node("span", { className: "name", text: `n°${h.id} · ${name}` }),
      node("span", { className: "meta", text: `${h.channel} · ${when(h.opened_at)} · ${status}` }),
    );
    if (h.id === state.selected) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => select(h.id));
    return node("li", { className: h.urgent ? "is-urgent" : "" }, button);
  }

  async function select(id) {
    state.selected = id;
    state.shownMessages = "";
    $("detail-error").textContent = "";
    $("reply-text").value = "";
    for (const button of document.querySelectorAll(".handoffs button")) {
      button.toggleAttribute("aria-current", button.dataset.handoff === String(id));
    }
    await loadHandoff(id).catch(showDetailError);
  }

  // -- one handoff ------------------------------------------------------------------------
  async function loadHandoff(id) {
    const detail = await api("GET", `/handoffs/${id}?messages=${MESSAGES}`);
    if (state.selected !== id) return;
    state.handoff = detail.handoff;
    showHandoff(detail.handoff);
    showMessages(detail.messages);
  }

  function showHandoff(h) {
    const active = h.state !== "closed";
    const mine = h.claimed_by === (state.me && state.me.subject);
    $("detail-empty").hidden = true;
    $("handoff").hidden = false;
    $("handoff-title").textContent = `Demande n°${h.id} · ${h.display_name || h.user_key}`;
    const who = h.claimed_by ? `prise en charge par ${h.claimed_by}` : "personne ne l'a encore prise";
    const end = active ? who : `close le ${when(h.closed_at)} par ${h.closed_by || "?"}`;
    $("handoff-meta").textContent = `${h.channel} · ouverte le ${when(h.opened_at)} · ${end}`;
    $("claim").disabled = !active || mine;
    $("claim").textContent = h.claimed_by && !mine ? "Reprendre" : "Prendre en charge";
    $("close").disabled = !active;
    $("send").disabled = !active;
    $("reply-text").disabled = !active;
  }

  function showMessages(messages) {
    const key = messages.map((m) => m.id).join(",");
    if (key === state.shownMessages) return;
    state.shownMessages = key;
    const list = $("messages");
    list.replaceChildren(
      ...messages.map((m) => {
        const who =
          m.sender === "user" ? (state.handoff && state.handoff.display_name) || "Utilisateur"
          : m.sender === "staff" ? `${m.author} (paroisse)`
          : "Assistant";
        return node(
          "li",
          { className: `from-${m.sender}`, dataset: { sender: m.sender } },
          node("span", { className: "who", text: `${who} · ${when(m.created_at)}` }),
          node("span", { className: "text", text: m.text || "[effacé]" }),
        );
      }),
    );
    list.scrollTop = list.scrollHeight;
  }

  function showDetailError(error) {
    if (error.status !== 401) $("detail-error").textContent = error.message;
  }

  async function act(action) {
    $("detail-error").textContent = "";
    try {
      await action();
      await refresh();
    } catch (error) {
      showDetailError(error);
    }
  }

  // -- wiring -------------------------------------------------------------------------------
  function start() {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (token) signIn(token);
    });
    $("sign-out").addEventListener("click", () => signOut());
    for (const tab of ["active", "closed"]) {
      $(`tab-${tab}`).addEventListener("click", () => {
        state.tab = tab;
        $("tab-active").setAttribute("aria-selected", String(tab === "active"));
        $("tab-closed").setAttribute("aria-selected", String(tab === "closed"));
        refresh().catch(() => {});
      });
    }
    $("claim").addEventListener("click", () =>
      act(() => {
        const takeOver = Boolean(state.handoff && state.handoff.claimed_by);
        return api("POST", `/handoffs/${state.selected}/claim?take_over=${takeOver}`);
      }),
    );
    $("close").addEventListener("click", () =>
      act(() => api("POST", `/handoffs/${state.selected}/close`)),
    );
    $("reply-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("reply-text").value.trim();
      if (!text) return;
      act(async () => {
        await api("POST", `/handoffs/${state.selected}/reply`, { text });
        $("reply-text").value = "";
      });
    });
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved);
  }

  start();
})();
