/* The Switchboard chat page. It speaks the protocol of docs/protocol.md over Socket.IO (websocket
 * transport only, so replicas behind a plain load balancer need no sticky sessions).
 *
 * Per tab (sessionStorage): the session id, the latest resume token (it rotates on every resume), the
 * highest processed offset, the messages this tab sent (the server does not echo them) and answers given.
 * A reload resumes the session with lastOffset "0-0": the server replays its retained log and the page
 * rebuilds the conversation from it, deduplicated by offset.
 */
(() => {
  "use strict";

  // Everything is relative to where the page was loaded: "/chat/", "/", "/prefix/chat/".
  const BASE = location.pathname.replace(/[^/]*$/, "");
  const SOCKET_PATH = BASE + "ws/socket.io";
  const STORE_KEY = "switchboard-chat:" + BASE;
  const ACK_DELAY_MS = 500;
  const ACK_BATCH = 20;
  const MAX_LOCAL_MESSAGES = 200;
  const MAX_ANSWERS = 50;
  const MAX_INPUT = 65536;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    statusText: $("status-text"),
    sessionButton: $("session-id"),
    sessionValue: $("session-id-value"),
    copyFeedback: $("copy-feedback"),
    conversation: $("conversation"),
    notices: $("notices"),
    empty: $("empty"),
    messages: $("messages"),
    working: $("working").querySelector(".working-inner"),
    composer: $("composer"),
    input: $("input"),
    send: $("send"),
    messageTemplate: $("message-template"),
    askTemplate: $("ask-template"),
    login: $("login"),
    loginUsername: $("login-username"),
    loginPassword: $("login-password"),
    loginError: $("login-error"),
    loginSubmit: $("login-submit"),
    logout: $("logout"),
  };

  // --- offsets: "<n>-0" (n counts the session's messages) compares as two integers ------------------

  function parseOffset(value) {
    if (typeof value !== "string") return null;
    const match = /^(\d{1,20})(?:-(\d{1,20}))?$/.exec(value);
    return match ? [BigInt(match[1]), BigInt(match[2] || "0")] : null;
  }

  function compareKeys(a, b) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const x = a[i] === undefined ? -1 : a[i];
      const y = b[i] === undefined ? -1 : b[i];
      if (x < y) return -1;
      if (x > y) return 1;
    }
    return 0;
  }

  // --- per-tab state -----------------------------------------------------------------------------

  function load() {
    try {
      const value = JSON.parse(sessionStorage.getItem(STORE_KEY) || "{}");
      return value && typeof value === "object" ? value : {};
    } catch (_) {
      return {};
    }
  }

  const saved = load();
  const state = {
    sessionId: typeof saved.sessionId === "string" ? saved.sessionId : null,
    resumeToken: typeof saved.resumeToken === "string" ? saved.resumeToken : null,
    // Highest durable offset this page has processed. A freshly loaded page has processed nothing, so
    // it asks for the whole retained log ("0-0"); in-page reconnects ask only for what they missed.
    lastOffset: "0-0",
    epoch: null, // the session log the offsets count in; a new one (log_reset) starts again at 0-0
    ackedOffset: "0-0",
    local: Array.isArray(saved.local) ? saved.local : [], // {id, output, createdAt, after, n}
    answers: saved.answers && typeof saved.answers === "object" ? saved.answers : {}, // step_id -> text
    n: Number.isInteger(saved.n) ? saved.n : 0, // orders messages that carry no offset
    restoring: Boolean(saved.sessionId), // this load resumes a session: a replay restores its history
    replaced: false,
    tasks: 0,
    replayIds: null, // ids of the messages a replay brought, between `session` and `replayed`
  };

  function save() {
    try {
      sessionStorage.setItem(
        STORE_KEY,
        JSON.stringify({
          sessionId: state.sessionId,
          resumeToken: state.resumeToken,
          lastOffset: state.lastOffset,
          local: state.local,
          answers: state.answers,
          n: state.n,
        }),
      );
    } catch (_) {
      /* storage full or disabled: the session still works, it just will not survive a reload */
    }
  }

  function forget() {
    try {
      sessionStorage.removeItem(STORE_KEY);
    } catch (_) {
      /* nothing stored */
    }
  }

  // --- connection indicator ----------------------------------------------------------------------

  let statusTimer = null;

  function setStatus(kind, text, { revertAfterMs } = {}) {
    clearTimeout(statusTimer);
    ui.status.dataset.state = kind;
    ui.statusText.textContent = text;
    if (revertAfterMs) {
      statusTimer = setTimeout(() => {
        if (ui.status.dataset.state === kind) ui.statusText.textContent = "Connected";
      }, revertAfterMs);
    }
  }

  function showSessionId() {
    ui.sessionValue.textContent = state.sessionId || "";
    ui.sessionButton.dataset.sessionId = state.sessionId || "";
    ui.sessionButton.title = state.sessionId ? `Session ${state.sessionId} (click to copy)` : "";
    ui.sessionButton.hidden = !state.sessionId;
  }

  let copyTimer = null;

  async function copySessionId() {
    const text = state.sessionId;
    if (!text) return;
    let copied = false;
    try {
      await navigator.clipboard.writeText(text);
      copied = true;
    } catch (_) {
      // Not a secure context (plain http on a LAN address): fall back to a selected text field.
      const field = document.createElement("textarea");
      field.value = text;
      field.setAttribute("readonly", "");
      field.className = "visually-hidden";
      document.body.append(field);
      field.select();
      try {
        copied = document.execCommand("copy");
      } catch (_) {
        copied = false;
      }
      field.remove();
      ui.sessionButton.focus();
    }
    ui.copyFeedback.textContent = copied ? "Copied" : "Copy failed: select the id by hand";
    clearTimeout(copyTimer);
    copyTimer = setTimeout(() => (ui.copyFeedback.textContent = ""), 2000);
  }

  // --- notices (above the conversation) ----------------------------------------------------------

  function notice(key, text, action) {
    if (ui.notices.querySelector(`[data-key="${key}"]`)) return;
    const box = document.createElement("div");
    box.className = "notice";
    box.dataset.key = key;
    box.setAttribute("role", "note");
    const p = document.createElement("p");
    p.textContent = text;
    box.append(p);
    if (action) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "notice-action";
      button.textContent = action.label;
      button.addEventListener("click", action.run);
      box.append(button);
    }
    ui.notices.append(box);
  }

  function startOver() {
    forget();
    location.reload();
  }

  // --- messages ----------------------------------------------------------------------------------

  const byId = new Map();

  function nearBottom() {
    const c = ui.conversation;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 96;
  }

  function keepScrolled(change) {
    const stick = nearBottom();
    change();
    ui.empty.hidden = ui.messages.childElementCount > 0;
    if (stick) ui.conversation.scrollTop = ui.conversation.scrollHeight;
  }

  // Messages with an offset sort by it; the others (this tab's own, or a server without a mailbox)
  // go after the highest offset processed when they arrived, in arrival order.
  function keyAfter(offset, n) {
    const off = parseOffset(offset) || [0n, 0n];
    return [off[0], off[1], 1, n];
  }

  function insertSorted(el, key) {
    el.sortKey = key;
    let after = ui.messages.lastElementChild;
    while (after && compareKeys(after.sortKey, key) > 0) after = after.previousElementSibling;
    ui.messages.insertBefore(el, after ? after.nextElementSibling : ui.messages.firstElementChild);
  }

  function formatTime(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function fill(el, msg) {
    const own = msg.type === "user_message";
    const name = own ? "You" : String(msg.name || "Assistant");
    el.dataset.type = own ? "user_message" : String(msg.type || "assistant_message");
    el.dataset.author = name;
    el.dataset.streaming = String(Boolean(msg.streaming));
    el.dataset.error = String(Boolean(msg.isError));
    el.setAttribute("aria-busy", String(Boolean(msg.streaming)));
    el.querySelector(".msg-avatar").textContent = name.slice(0, 1).toUpperCase();
    el.querySelector(".msg-author").textContent = name;
    if (msg.createdAt) {
      const time = el.querySelector(".msg-time");
      time.dateTime = msg.createdAt;
      time.textContent = formatTime(msg.createdAt);
    }
    if (typeof msg.output === "string") el.querySelector(".msg-body").textContent = msg.output;
  }

  function upsertMessage(msg, key) {
    if (!msg || typeof msg.id !== "string") return null;
    let el = byId.get(msg.id);
    keepScrolled(() => {
      if (!el) {
        el = ui.messageTemplate.content.firstElementChild.cloneNode(true);
        el.dataset.id = msg.id;
        byId.set(msg.id, el);
        insertSorted(el, key || keyAfter(state.lastOffset, ++state.n));
      }
      fill(el, msg);
    });
    return el;
  }

  function removeMessage(msg) {
    const el = msg && byId.get(msg.id);
    if (!el) return;
    byId.delete(msg.id);
    keepScrolled(() => el.remove());
  }

  function appendToken({ id, token, isSequence }) {
    const el = byId.get(id);
    if (!el || typeof token !== "string") return; // joined mid-stream: the final update brings it all
    const body = el.querySelector(".msg-body");
    keepScrolled(() => {
      body.textContent = isSequence ? token : body.textContent + token;
    });
  }

  function renderLocal(entry) {
    upsertMessage(
      { id: entry.id, output: entry.output, createdAt: entry.createdAt, type: "user_message" },
      keyAfter(entry.after, entry.n),
    );
  }

  function rememberLocal(output) {
    const entry = {
      id: newId(),
      output,
      createdAt: new Date().toISOString(),
      after: state.lastOffset,
      n: ++state.n,
    };
    state.local.push(entry);
    if (state.local.length > MAX_LOCAL_MESSAGES) state.local.splice(0, state.local.length - MAX_LOCAL_MESSAGES);
    save();
    renderLocal(entry);
    ui.conversation.scrollTop = ui.conversation.scrollHeight;
    return entry;
  }

  function newId() {
    const b = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  // --- durable events: dedupe by offset, remember the highest, acknowledge in batches --------------

  let ackTimer = null;
  let unacked = 0;

  // Runs `handle(key)` unless the payload's offset was already processed; returns whether it ran.
  function durable(payload, handle) {
    const off = parseOffset(payload && payload.offset);
    if (!off) {
      handle(null); // no mailbox on this server: nothing to dedupe against
      return true;
    }
    if (compareKeys(off, parseOffset(state.lastOffset)) <= 0) return false; // seen before the replay seam
    handle([off[0], off[1], 0, 0]);
    if (state.replayIds && payload && typeof payload.id === "string") state.replayIds.add(payload.id);
    state.lastOffset = payload.offset;
    if (typeof payload.epoch === "string") state.epoch = payload.epoch;
    save();
    unacked += 1;
    if (unacked >= ACK_BATCH) flushAck();
    else if (!ackTimer) ackTimer = setTimeout(flushAck, ACK_DELAY_MS);
    return true;
  }

  function flushAck() {
    clearTimeout(ackTimer);
    ackTimer = null;
    if (!socket || !socket.connected) return; // retried after the reconnect
    const last = parseOffset(state.lastOffset);
    if (last && compareKeys(last, parseOffset(state.ackedOffset) || [0n, 0n]) > 0) {
      socket.emit("ack", { offset: state.lastOffset });
      state.ackedOffset = state.lastOffset;
    }
    unacked = 0;
  }

  // --- ask: a question with an answer box and a visible countdown --------------------------------

  const asks = new Map(); // step_id -> {form, input, countdown, fill, deadline, timeout, callback, timer}
  let askCount = 0;

  function showAsk(payload, callback) {
    const msg = (payload && payload.msg) || {};
    const spec = (payload && payload.spec) || {};
    const stepId = String(spec.step_id || msg.id || "");
    if (payload && payload.offset) durable(payload, () => {}); // record it; an ask is never skipped
    if (Object.prototype.hasOwnProperty.call(state.answers, stepId)) {
      // Re-emitted after a reconnect: our answer did not get through, so give it again.
      if (typeof callback === "function") callback({ output: state.answers[stepId] });
      return;
    }
    const existing = asks.get(stepId);
    if (existing) {
      existing.callback = callback; // shown once; the newest socket's acknowledgement answers it
      return;
    }
    const host = upsertMessage(msg, null);
    if (!host) return;
    const form = ui.askTemplate.content.firstElementChild.cloneNode(true);
    const id = `ask-${++askCount}`;
    const input = form.querySelector(".ask-input");
    const countdown = form.querySelector(".ask-countdown");
    input.id = id;
    countdown.id = `${id}-countdown`;
    input.setAttribute("aria-describedby", countdown.id);
    input.maxLength = MAX_INPUT;
    form.querySelector(".ask-label").htmlFor = id;
    form.dataset.stepId = stepId;
    const timeout = Number(spec.timeout) > 0 ? Number(spec.timeout) : 0;
    const ask = {
      form,
      input,
      countdown,
      fill: form.querySelector(".ask-meter-fill"),
      deadline: timeout ? Date.now() + timeout * 1000 : 0,
      timeout,
      callback,
      timer: null,
    };
    asks.set(stepId, ask);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      answer(stepId, input.value);
    });
    keepScrolled(() => host.querySelector(".msg-main").append(form));
    tick(ask);
    if (timeout) ask.timer = setInterval(() => tick(ask), 250);
    // Take the focus unless the user is in the middle of typing a message.
    if (document.activeElement !== ui.input || !ui.input.value) input.focus({ preventScroll: true });
  }

  function tick(ask) {
    if (!ask.deadline) {
      ask.countdown.textContent = "No time limit";
      ask.fill.style.transform = "scaleX(1)";
      return;
    }
    const left = Math.max(0, ask.deadline - Date.now());
    const seconds = Math.ceil(left / 1000);
    ask.fill.style.transform = `scaleX(${left / (ask.timeout * 1000)})`;
    ask.form.dataset.urgent = String(seconds <= 10);
    if (left > 0) {
      const m = Math.floor(seconds / 60);
      const s = String(seconds % 60).padStart(2, "0");
      ask.countdown.textContent = `${m}:${s} left`;
    } else {
      ask.countdown.textContent = "Time is up";
      ask.input.disabled = true;
      ask.form.querySelector(".ask-send").disabled = true;
      clearInterval(ask.timer);
    }
  }

  function answer(stepId, value) {
    const ask = asks.get(stepId);
    const text = value.trim();
    if (!ask || !text) return;
    state.answers[stepId] = text;
    const keys = Object.keys(state.answers);
    if (keys.length > MAX_ANSWERS) delete state.answers[keys[0]];
    save();
    if (typeof ask.callback === "function") ask.callback({ output: text });
    closeAsk(stepId, null);
    rememberLocal(text);
    ui.input.focus();
  }

  function closeAsk(stepId, note) {
    const ask = asks.get(stepId);
    if (!ask) return;
    asks.delete(stepId);
    clearInterval(ask.timer);
    const hadFocus = ask.form.contains(document.activeElement);
    keepScrolled(() => {
      if (note) {
        const p = document.createElement("p");
        p.className = "ask-note";
        p.textContent = note;
        ask.form.replaceWith(p);
      } else {
        ask.form.remove();
      }
    });
    if (hadFocus) ui.input.focus();
  }

  function closeAllAsks(note) {
    for (const stepId of [...asks.keys()]) closeAsk(stepId, note);
  }

  // --- working indicator -------------------------------------------------------------------------

  function setTasks(count) {
    state.tasks = Math.max(0, count);
    ui.working.hidden = state.tasks === 0;
  }

  // --- signing in ---------------------------------------------------------------------------------
  //
  // When the server refuses the socket for want of a valid token, the page asks `auth/config` how to
  // sign in: behind an authenticating proxy it posts to `auth/header`, with a password callback it shows
  // the form and posts to `auth/login`. Either sets the HttpOnly `access_token` cookie (the page never
  // sees the token), which the next handshake carries; then the page reconnects.

  // Refusals a sign-in can cure; the others (bus_unavailable, token_keys_unavailable, ...) it cannot.
  const LOGIN_REASONS = new Set([
    "token_missing",
    "token_malformed",
    "token_bad_algorithm",
    "token_unknown_key",
    "token_bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_wrong_audience",
    "token_wrong_issuer",
    "token_missing_claim",
    "token_refused",
  ]);
  let authConfig = null;
  let headerTried = false; // once per refusal streak: a proxy that keeps failing must not loop us

  async function loadAuthConfig() {
    if (authConfig) return authConfig;
    try {
      const response = await fetch("auth/config", { credentials: "same-origin", cache: "no-store" });
      if (response.ok) authConfig = await response.json();
    } catch (_) {
      /* offline: asked again at the next refusal */
    }
    return authConfig || {};
  }

  function postAuth(route, body) {
    return fetch(route, {
      method: "POST",
      credentials: "same-origin",
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  }

  function setComposerEnabled(enabled) {
    ui.input.disabled = !enabled;
    ui.send.disabled = !enabled;
  }

  async function signIn(reason) {
    setStatus("offline", "Sign in required");
    const config = await loadAuthConfig();
    if (config.headerAuth && !headerTried) {
      headerTried = true;
      try {
        const response = await postAuth("auth/header");
        if (response.ok) {
          socket.connect();
          return;
        }
      } catch (_) {
        /* fall through to the form, or to the notice */
      }
    }
    if (config.passwordAuth) {
      showLogin(reason === "token_expired" ? "Your sign-in has expired. Please sign in again." : "");
      return;
    }
    notice("refused", `The server refused the connection (${reason}) and offers no sign-in form here.`, {
      label: "Try again",
      run: () => socket.connect(),
    });
  }

  function showLogin(message) {
    ui.login.hidden = false;
    ui.empty.hidden = true;
    ui.loginError.textContent = message;
    setComposerEnabled(false);
    ui.logout.hidden = true;
    (ui.loginUsername.value ? ui.loginPassword : ui.loginUsername).focus();
  }

  function hideLogin() {
    ui.login.hidden = true;
    ui.empty.hidden = ui.messages.childElementCount > 0;
    ui.loginPassword.value = "";
    ui.loginError.textContent = "";
    setComposerEnabled(true);
  }

  ui.login.addEventListener("submit", async (event) => {
    event.preventDefault();
    ui.loginSubmit.disabled = true;
    ui.loginError.textContent = "";
    try {
      const response = await postAuth("auth/login", {
        username: ui.loginUsername.value.trim(),
        password: ui.loginPassword.value,
      });
      if (response.ok) {
        hideLogin();
        setStatus("connecting", "Connecting…");
        socket.connect();
        ui.input.focus();
      } else if (response.status === 401) {
        ui.loginError.textContent = "Wrong username or password.";
        ui.loginPassword.select();
      } else {
        ui.loginError.textContent = `Sign-in failed (HTTP ${response.status}).`;
      }
    } catch (_) {
      ui.loginError.textContent = "Sign-in failed: the server cannot be reached.";
    } finally {
      ui.loginSubmit.disabled = false;
    }
  });

  ui.logout.addEventListener("click", async () => {
    try {
      await postAuth("auth/logout");
    } finally {
      forget(); // the conversation belongs to the user who signed out
      location.reload();
    }
  });

  async function offerLogout() {
    const config = await loadAuthConfig();
    ui.logout.hidden = !config.passwordAuth;
  }

  // --- the socket --------------------------------------------------------------------------------

  let socket = null;
  let refusedRetry = 0;

  function auth(cb) {
    const payload = { lastOffset: state.lastOffset };
    if (state.epoch) payload.lastEpoch = state.epoch;
    if (state.sessionId && state.resumeToken) {
      payload.sessionId = state.sessionId;
      payload.resumeToken = state.resumeToken;
    }
    cb(payload);
  }

  function connect() {
    if (typeof io !== "function") {
      setStatus("offline", "Not connected");
      notice(
        "no-client",
        "The Socket.IO client (socket.io.min.js) did not load, so the chat cannot connect. The server's log " +
          "says why: in a checkout, run `npm ci` (make demo does); an installed package was built without it.",
      );
      return;
    }
    socket = io({
      path: SOCKET_PATH,
      transports: ["websocket"],
      auth, // called on every attempt, so a reconnect presents the latest resume token and offset
      reconnectionDelay: 500,
      reconnectionDelayMax: 4000,
    });

    socket.on("connect", () => {
      refusedRetry = 0;
      headerTried = false;
      if (!ui.login.hidden) hideLogin();
      offerLogout();
      if (ui.status.dataset.state !== "connected") setStatus("connected", "Connected");
      socket.emit("connection_successful");
      flushAck();
    });

    socket.on("session", (data) => {
      if (!data || typeof data.sessionId !== "string") return;
      const previous = state.sessionId;
      state.sessionId = data.sessionId;
      state.resumeToken = data.resumeToken;
      if (previous && previous !== data.sessionId) {
        // The old session could not be resumed (expired, or its token was used elsewhere).
        byId.clear();
        ui.messages.replaceChildren();
        closeAllAsks(null);
        state.local = [];
        state.answers = {};
        state.lastOffset = "0-0";
        state.ackedOffset = "0-0";
        state.restoring = false;
        ui.empty.hidden = false;
        notice("new-session", "Your previous conversation had ended, so a new one started.");
      }
      state.replayIds = previous === data.sessionId ? new Set() : null; // a resume replays; see `replayed`
      save();
      showSessionId();
      setStatus("connected", "Connected");
    });

    // The replica is shutting down (docs/protocol.md#draining): move after the delay it gives, so its
    // clients do not all reconnect at once; if it closes the socket first, reconnect at once.
    let drainTimer = null;
    socket.on("draining", (data) => {
      const delay = Math.max(0, Number(data && data.reconnectAfterMs) || 0);
      setStatus("reconnecting", "Server restarting…");
      clearTimeout(drainTimer);
      drainTimer = setTimeout(() => {
        drainTimer = null;
        if (state.replaced || !socket.connected) return;
        socket.disconnect();
        socket.connect(); // the load balancer sends it to another replica; the session resumes there
      }, delay);
    });

    socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect") clearTimeout(drainTimer);
      setTasks(0);
      if (state.replaced) return;
      setStatus("reconnecting", "Reconnecting…");
      // The server closed the socket without a takeover (e.g. shutting down): reconnecting is on us.
      if (reason === "io server disconnect") socket.connect();
    });

    socket.on("connect_error", (err) => {
      if (state.replaced) return;
      const reason = err && err.data && err.data.reason;
      if (socket.active) {
        setStatus("reconnecting", "Reconnecting…"); // the client retries by itself
      } else if (reason === "bus_unavailable" || reason === "draining") {
        // Retry later; a draining replica's retries land on another one (with some jitter).
        setStatus("reconnecting", "Reconnecting…");
        refusedRetry = Math.min(refusedRetry + 1, 5);
        setTimeout(() => socket.connect(), 1000 * refusedRetry * (0.5 + Math.random()));
      } else if (LOGIN_REASONS.has(reason)) {
        signIn(reason);
      } else if (reason === "session_of_another_user") {
        setStatus("offline", "Not connected");
        notice("other-user", "This conversation belongs to another user.", { label: "Start a new chat", run: startOver });
      } else {
        setStatus("offline", "Not connected");
        notice("refused", `The server refused the connection${reason ? ` (${reason})` : ""}.`, {
          label: "Try again",
          run: () => socket.connect(),
        });
      }
    });

    socket.on("session_replaced", () => {
      state.replaced = true;
      socket.io.reconnection(false);
      socket.disconnect();
      setTasks(0);
      setStatus("replaced", "Opened in another tab");
      ui.input.disabled = true;
      ui.send.disabled = true;
      closeAllAsks(null);
      notice("replaced", "This conversation is now open in another tab or window.", {
        label: "Start a new chat here",
        run: startOver,
      });
    });

    socket.on("new_message", (msg) => durable(msg, (key) => upsertMessage(msg, key)));
    socket.on("update_message", (msg) => durable(msg, (key) => upsertMessage(msg, key)));
    socket.on("stream_start", (msg) => durable(msg, (key) => upsertMessage({ ...msg, streaming: true }, key)));
    socket.on("delete_message", (msg) => durable(msg, () => removeMessage(msg)));
    socket.on("stream_token", appendToken);
    socket.on("task_start", () => setTasks(state.tasks + 1));
    socket.on("task_end", () => setTasks(state.tasks - 1));

    socket.on("ask", showAsk);
    socket.on("ask_timeout", () => closeAllAsks("No answer was given in time."));
    socket.on("clear_ask", () => closeAllAsks(null));

    socket.on("log_reset", (data) => {
      // The server lost this session's log: offsets start again; what was missed may be gone.
      state.lastOffset = "0-0";
      state.ackedOffset = "0-0";
      state.epoch = data && typeof data.epoch === "string" ? data.epoch : null;
      save();
      notice("truncated", "The server lost some recent messages; newer ones follow.");
    });
    socket.on("replay_truncated", (data) => {
      durable(data, () => {});
      notice("truncated", "Some older messages are no longer available.");
    });
    socket.on("replayed", (data) => {
      // Messages the user can see, not events: a streamed message is replayed as two or more events.
      const count = state.replayIds ? state.replayIds.size : Number(data && data.count) || 0;
      const restoring = state.restoring;
      state.restoring = false;
      state.replayIds = null;
      if (count > 0) {
        const noun = count === 1 ? "message" : "messages";
        const text = restoring ? `restored ${count} ${noun}` : `replayed ${count} missed ${noun}`;
        setStatus("connected", `Connected · ${text}`, { revertAfterMs: 20000 });
      }
    });
  }

  // --- the composer ------------------------------------------------------------------------------

  function resizeInput() {
    ui.input.style.height = "auto";
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 200)}px`;
  }

  ui.input.maxLength = MAX_INPUT;
  ui.input.addEventListener("input", resizeInput);
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.input.value.trim();
    if (!text || !socket || state.replaced) return;
    const entry = rememberLocal(text);
    // Buffered by the client while reconnecting, and sent once the session is back.
    socket.emit("client_message", { message: { id: entry.id, output: text, type: "user_message" } });
    ui.input.value = "";
    resizeInput();
    ui.input.focus();
  });
  ui.sessionButton.addEventListener("click", copySessionId);

  // This tab's own messages survive a reload here; the server's come back with the replay.
  for (const entry of state.local) renderLocal(entry);
  showSessionId();
  connect();
  ui.input.focus({ preventScroll: true });
})();
