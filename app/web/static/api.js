// Requests to the server: the API key (when the server asks for one) and errors as the server words them.
//
// Paths are relative to the page ("web/speak", not "/web/speak"), so the page also works when a proxy
// serves the app under a prefix.

const KEY_STORE = "cosyvoice.apiKey";

// An answer that was not 2xx: `message` is the server's own sentence ("<field>: <problem>").
export class ServerError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ServerError";
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
let memoryKey = storedKey();

// `handler(message)` is called whenever the server answers 401 (it wants a key, or a valid one).
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

export function storedKey() {
  try {
    return localStorage.getItem(KEY_STORE) || "";
  } catch {
    return ""; // storage refused (private mode, a sandbox): no key kept
  }
}

export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    // nothing to do: the key then lives only as long as the page
  }
  memoryKey = key;
}

// The server's message from an error answer: the seed's {"error": {"message"}}, OpenAI's and FastAPI's shapes,
// or the status line when the body is not JSON.
async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let code = "http_error";
  let message = "";
  try {
    const body = JSON.parse(text);
    const error = body && body.error;
    if (error && typeof error === "object") {
      code = error.code || error.type || code;
      message = error.message || "";
    } else if (body && typeof body.detail === "string") {
      message = body.detail;
    } else if (body && typeof body.message === "string") {
      message = body.message;
      code = body.code || code;
    }
  } catch {
    message = text.trim().slice(0, 300);
  }
  return new ServerError(response.status, code, message || `HTTP ${response.status} ${response.statusText}`.trim());
}

// fetch() with the key, answering a Response only when it is 2xx; otherwise throws a ServerError.
export async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (memoryKey) headers.set("X-API-Key", memoryKey);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ServerError(0, "network", `cannot reach the server (${err.message})`);
  }
  if (response.ok) return response;
  const error = await errorOf(response);
  if (response.status === 401) onUnauthorized(error.message);
  throw error;
}

export async function getJson(path) {
  return (await request(path)).json();
}

export async function postJson(path, body, options = {}) {
  return request(path, {
    ...options,
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

export async function postForm(path, form) {
  return (await request(path, { method: "POST", body: form })).json();
}

export async function remove(path) {
  return (await request(path, { method: "DELETE" })).json();
}
