// The demo page: sign in, chat (streamed), watch and edit the memory, search past turns.
import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
const EDITABLE = ["identity", "current_state"];
const LISTS = ["episodic_memory", "core_instructions", "rewards", "parent_reports"];
const SHOWN_ITEMS = 20;

const state = {
  token: sessionStorage.getItem("demo-token"),
  userId: sessionStorage.getItem("demo-user"),
  version: null,
  // per editor: the version its text was loaded at, and whether it was edited since
  editors: Object.fromEntries(EDITABLE.map((f) => [f, { version: null, dirty: false }])),
};

function status(text) {
  $("status").textContent = text;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

/** Say what went wrong, in the words of the status the server answered. */
function showError(error, doing) {
  const box = $("error");
  const said = (detail) => (/[.!?]$/.test(detail) ? detail : `${detail}.`);
  let text;
  if (!(error instanceof api.ApiError)) text = `${doing} failed: ${error.message}`;
  else if (error.status === 0) text = `${doing} failed: ${said(error.detail)}`;
  else if (error.status === 401) text = `${doing} failed (401): ${said(error.detail)} Sign in again.`;
  else if (error.status === 412)
    text = `${doing} failed (412): ${said(error.detail)} Another tab or a chat turn changed the memory after you loaded it: reload the memory, then edit again.`;
  else if (error.status === 429 || error.status === 503) {
    text = `${doing} failed (${error.status}): ${said(error.detail)}`;
    if (error.retryAfter !== null && !Number.isNaN(error.retryAfter))
      text += ` Retry after ${error.retryAfter} s.`;
  } else text = `${doing} failed (${error.status}): ${said(error.detail)}`;
  status("");
  box.textContent = text;
  box.dataset.status = String(error.status ?? "");
  box.hidden = false;
  if (error.status === 401) signOut(false);
}

// --- session ----------------------------------------------------------------------------

function showSignedIn() {
  const signedIn = Boolean(state.token);
  $("sign-in-form").hidden = signedIn;
  $("token-form").hidden = true;
  $("signed-in").hidden = !signedIn;
  $("panes").hidden = !signedIn;
  $("signed-in-user").textContent = state.userId || "";
}

function remember(token, userId) {
  state.token = token;
  state.userId = userId;
  sessionStorage.setItem("demo-token", token);
  sessionStorage.setItem("demo-user", userId);
  for (const editor of Object.values(state.editors)) editor.dirty = false;
  showSignedIn();
}

function signOut(clearStatus = true) {
  state.token = null;
  state.userId = null;
  sessionStorage.removeItem("demo-token");
  sessionStorage.removeItem("demo-user");
  $("chat-log").replaceChildren();
  clearSearch();
  showSignedIn();
  if (clearStatus) status("Signed out.");
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  try {
    const session = await api.signIn($("user-id").value.trim() || null);
    remember(session.access_token, session.user_id);
    status(`Signed in as ${session.user_id}.`);
    await refreshMemory();
    $("message").focus();
  } catch (error) {
    if (error instanceof api.ApiError && error.status === 404) {
      $("sign-in-form").hidden = true;
      $("token-form").hidden = false;
      $("token").focus();
      return;
    }
    showError(error, "Sign-in");
  }
});

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const token = $("token").value.trim();
  try {
    const user = await api.me(token);
    remember(token, user.id);
    $("token").value = "";
    await refreshMemory();
  } catch (error) {
    showError(error, "Sign-in");
  }
});

$("sign-out").addEventListener("click", () => signOut());

// --- memory -----------------------------------------------------------------------------

function itemText(item) {
  if (typeof item.content === "string") return item.role ? `${item.role}: ${item.content}` : item.content;
  const { id, created_at, ...rest } = item;
  return JSON.stringify(rest);
}

function renderList(field, items) {
  $(`count-${field}`).textContent = String(items.length);
  const shown = field === "episodic_memory" ? items.slice(-SHOWN_ITEMS) : items;
  $(`field-${field}`).replaceChildren(
    ...shown.map((item) => {
      const li = document.createElement("li");
      li.textContent = itemText(item);
      if (item.created_at) li.title = item.created_at;
      return li;
    }),
  );
}

function render(doc, version) {
  state.version = version;
  $("memory-version").textContent = version;
  for (const field of EDITABLE) {
    const editor = state.editors[field];
    if (!editor.dirty) {
      $(`edit-${field}`).value = JSON.stringify(doc[field], null, 2);
      editor.version = version;
    }
  }
  $("field-long_term_summary").textContent = JSON.stringify(doc.long_term_summary, null, 2);
  for (const field of LISTS) renderList(field, doc[field]);
}

async function refreshMemory() {
  if (!state.token) return;
  try {
    const { doc, version } = await api.readMemory(state.token);
    render(doc, version);
  } catch (error) {
    showError(error, "Loading the memory");
  }
}

for (const field of EDITABLE) {
  $(`edit-${field}`).addEventListener("input", () => {
    state.editors[field].dirty = true;
  });
  $(`save-${field}`).addEventListener("click", async () => {
    clearError();
    let value;
    try {
      value = JSON.parse($(`edit-${field}`).value);
    } catch {
      showError(new Error("the text is not valid JSON"), `Saving ${field}`);
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      showError(new Error(`${field} must be a JSON object`), `Saving ${field}`);
      return;
    }
    try {
      await api.saveField(state.token, field, value, state.editors[field].version);
      state.editors[field].dirty = false;
      status(`Saved ${field}.`);
      await refreshMemory();
    } catch (error) {
      showError(error, `Saving ${field}`);
    }
  });
}

$("reload-memory").addEventListener("click", async () => {
  clearError();
  for (const editor of Object.values(state.editors)) editor.dirty = false;
  await refreshMemory();
  status("Memory reloaded.");
});

// --- chat -------------------------------------------------------------------------------

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Companion";
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  $("chat-log").append(li);
  li.scrollIntoView({ block: "end" });
  return body;
}

async function sendMessage() {
  const message = $("message").value.trim();
  if (!message || $("send").disabled) return;
  clearError();
  $("send").disabled = true;
  addMessage("user", message);
  $("message").value = "";
  const reply = addMessage("assistant", "");
  reply.parentElement.setAttribute("aria-busy", "true");
  let pieces = 0;
  try {
    const done = await api.chatStream(state.token, message, (text) => {
      pieces += 1;
      reply.textContent += text;
      reply.dataset.pieces = String(pieces);
    });
    reply.textContent = done.reply;
    reply.parentElement.dataset.done = "true";
    status("Reply stored in episodic_memory.");
  } catch (error) {
    reply.parentElement.classList.add("failed");
    if (!reply.textContent) reply.textContent = "(no reply)";
    showError(error, "Chat");
  } finally {
    reply.parentElement.removeAttribute("aria-busy");
    $("send").disabled = false;
    $("message").focus();
  }
  await refreshMemory();
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});

$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});

// --- search (GET /api/memory/search) ----------------------------------------------------

function clearSearch() {
  $("search-results").replaceChildren();
  $("search-none").hidden = true;
}

function searchHit(result) {
  const li = document.createElement("li");
  const date = document.createElement("time");
  const when = result.created_at ? new Date(result.created_at) : null;
  if (when && !Number.isNaN(when.getTime())) {
    date.dateTime = result.created_at;
    date.textContent = when.toLocaleString();
  } else date.textContent = "(date unknown)";
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `score ${Number(result.score).toFixed(3)}`;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = itemText(result.episode);
  li.append(date, " ", score, " ", text);
  return li;
}

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  clearSearch();
  const query = $("search-q").value.trim();
  if (!query) return;
  try {
    const answer = await api.search(state.token, query);
    $("search-results").replaceChildren(...answer.results.map(searchHit));
    if (answer.results.length === 0) {
      $("search-none").textContent = `No results: no past message matches “${query}”.`;
      $("search-none").hidden = false;
    }
    status(`${answer.results.length} result(s) (${answer.mode} search).`);
  } catch (error) {
    showError(error, "Search");
  }
});

// --- start ------------------------------------------------------------------------------

showSignedIn();
if (state.token) refreshMemory();
