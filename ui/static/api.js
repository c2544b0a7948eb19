// The controller's Connect API, spoken with JSON: unary calls as plain
// POSTs (Content-Type: application/json), the metadata watch as a Connect
// server stream (application/connect+json: each message in a 5-byte
// envelope, the last one flagged end-of-stream and carrying any error).
// The bearer token lives in this module's memory only.

const metadata = "dmq.metadata.v1.MetadataService";
const quorum = "dmq.metadata.v1.QuorumService";
export const services = { metadata, quorum };

let token = "";

export function setToken(value) { token = value.trim(); }
export function hasToken() { return token !== ""; }

function headers(contentType) {
  const h = { "Content-Type": contentType, "Connect-Protocol-Version": "1" };
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

// ApiError is a refused or failed call: code is Connect's ("unauthenticated",
// "permission_denied", "invalid_argument", ...), message the server's.
export class ApiError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.code = code;
    this.details = details || [];
  }
}

// call makes one unary call and answers the response message.
export async function call(service, method, request = {}) {
  let response;
  try {
    response = await fetch(`/${service}/${method}`, {
      method: "POST", headers: headers("application/json"), body: JSON.stringify(request),
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError("unavailable", `the controller did not answer: ${e.message}`);
  }
  const text = await response.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch { body = { message: text }; }
  if (!response.ok) {
    throw new ApiError(body.code || `http ${response.status}`, body.message || response.statusText, body.details);
  }
  return body;
}

function envelope(message) {
  const payload = new TextEncoder().encode(JSON.stringify(message));
  const out = new Uint8Array(5 + payload.length);
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

// watch follows the metadata from sinceVersion: onMessage gets each
// WatchMetadataResponse ({fullState} or {delta}). It resolves when the
// stream ends cleanly and rejects with an ApiError otherwise; abort stops it.
export async function watch(sinceVersion, onMessage, abort) {
  let response;
  try {
    response = await fetch(`/${metadata}/WatchMetadata`, {
      method: "POST", headers: headers("application/connect+json"),
      body: envelope({ sinceVersion: String(sinceVersion) }), signal: abort, cache: "no-store",
    });
  } catch (e) {
    throw new ApiError("unavailable", `the controller did not answer: ${e.message}`);
  }
  if (!response.ok) {
    const text = await response.text();
    let body = {};
    try { body = JSON.parse(text); } catch { body = { message: text }; }
    throw new ApiError(body.code || `http ${response.status}`, body.message || response.statusText);
  }
  const reader = response.body.getReader();
  let buffer = new Uint8Array(0);
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (buffer.length > 0) throw new ApiError("unavailable", "the watch ended in the middle of a message");
      throw new ApiError("unavailable", "the watch ended without an end-of-stream message");
    }
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
    while (buffer.length >= 5) {
      const flags = buffer[0];
      const length = new DataView(buffer.buffer, buffer.byteOffset + 1, 4).getUint32(0);
      if (buffer.length < 5 + length) break;
      const json = JSON.parse(decoder.decode(buffer.subarray(5, 5 + length)) || "{}");
      buffer = buffer.slice(5 + length);
      if (flags & 0x02) {
        if (json.error) throw new ApiError(json.error.code, json.error.message, json.error.details);
        return;
      }
      onMessage(json);
    }
  }
}
