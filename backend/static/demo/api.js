// The memory service's HTTP API as the demo uses it: a bearer token on every call, errors as
// ApiError (status, the server's detail, Retry-After), chat streams read as server-sent events.

export class ApiError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail);
    this.status = status; // 0: the server could not be reached
    this.detail = detail;
    this.retryAfter = retryAfter; // seconds, or null
  }
}

function detailText(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ");
  return JSON.stringify(detail);
}

async function errorOf(response) {
  let detail = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.detail !== undefined) detail = detailText(body.detail);
  } catch {
    // not JSON: keep the status text
  }
  const retry = response.headers.get("Retry-After");
  return new ApiError(response.status, detail, retry === null ? null : Number(retry));
}

async function send(path, { token, method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch {
    throw new ApiError(0, "cannot reach the server (is it running, is the network up?)", null);
  }
}

async function json(response) {
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

export async function signIn(userId) {
  const response = await send("/demo/sign-in", {
    method: "POST",
    body: userId ? { user_id: userId } : {},
  });
  return json(response); // {access_token, user_id, expires_in}
}

export async function me(token) {
  return json(await send("/api/me", { token }));
}

/** The whole memory and its version (the ETag, without quotes). */
export async function readMemory(token) {
  const response = await send("/api/memory", { token });
  const doc = await json(response);
  const etag = response.headers.get("ETag");
  return { doc, version: etag ? etag.replaceAll('"', "") : String(doc.version) };
}

/** Replace an object field only if the memory is still at `version` (412 otherwise). */
export async function saveField(token, field, value, version) {
  const response = await send(`/api/memory/${encodeURIComponent(field)}`, {
    token,
    method: "PUT",
    body: value,
    headers: { "If-Match": `"${version}"` },
  });
  return json(response);
}

export async function search(token, query, limit = 10) {
  const params = new URLSearchParams({ q: query, limit: String(limit) });
  return json(await send(`/api/memory/search?${params}`, { token }));
}

/** One streamed chat turn: `onDelta(text)` per piece; resolves with the `done` event's data
 *  ({reply, episodes}); rejects with ApiError for an error status or an `error` event. */
export async function chatStream(token, message, onDelta) {
  const response = await send("/api/chat", {
    token,
    method: "POST",
    body: { message, stream: true },
    headers: { Accept: "text/event-stream" },
  });
  if (!response.ok) throw await errorOf(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch {
      throw new ApiError(0, "the connection dropped during the reply", null);
    }
    if (chunk.done) break;
    buffer += chunk.value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event === null) continue;
      if (event.name === "delta") onDelta(event.data.text);
      else if (event.name === "done") return event.data;
      else if (event.name === "error") throw new ApiError(event.data.status, event.data.detail, null);
    }
  }
  throw new ApiError(0, "the reply stream ended early", null);
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? { name, data: JSON.parse(data.join("\n")) } : null;
}
