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

export function envelope(message, flags = 0) {
  const payload = new TextEncoder().encode(JSON.stringify(message));
  const out = new Uint8Array(5 + payload.length);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, payload.length);
  out.set(payload, 5);
  return out;
}

// ByteQueue holds the bytes received and not yet read, as the chunks
// they came in: reading a message copies it once, whatever the chunks.
class ByteQueue {
  constructor() { this.chunks = []; this.head = 0; this.length = 0; }
  push(chunk) { this.chunks.push(chunk); this.length += chunk.length; }
  // take removes and answers the first n bytes (n <= length).
  take(n) {
    const first = this.chunks[this.head];
    let out;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.head++;
      else this.chunks[this.head] = first.subarray(n);
    } else {
      out = new Uint8Array(n);
      let filled = 0;
      while (filled < n) {
        const chunk = this.chunks[this.head];
        const part = Math.min(chunk.length, n - filled);
        out.set(chunk.subarray(0, part), filled);
        filled += part;
        if (part === chunk.length) this.head++;
        else this.chunks[this.head] = chunk.subarray(part);
      }
    }
    this.length -= n;
    if (this.head > 1024 && this.head * 2 > this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
    return out;
  }
}

// watch follows the metadata from sinceVersion: onMessage gets each
// WatchMetadataResponse ({fullState} or {delta}). It rejects with an
// ApiError when the stream fails or ends (a watch never ends by itself),
// and with the AbortError when abort fires.
export async function watch(sinceVersion, onMessage, abort) {
  let response;
  try {
    response = await fetch(`/${metadata}/WatchMetadata`, {
      method: "POST", headers: headers("application/connect+json"),
      body: envelope({ sinceVersion: String(sinceVersion) }), signal: abort, cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("unavailable", `the controller did not answer: ${e.message}`);
  }
  if (!response.ok) {
    const text = await response.text();
    let body = {};
    try { body = JSON.parse(text); } catch { body = { message: text }; }
    throw new ApiError(body.code || `http ${response.status}`, body.message || response.statusText);
  }
  return readEnvelopes(response.body.getReader(), onMessage);
}

// readEnvelopes reads Connect's streaming envelopes (a flags byte, a
// 4-byte big-endian length, the JSON) from reader, whatever the chunks
// they arrive in, and hands each message to onMessage; the end-of-stream
// message ends it, with its error.
export async function readEnvelopes(reader, onMessage) {
  const queue = new ByteQueue();
  const decoder = new TextDecoder();
  let header = null; // {flags, length} of the message being received
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError("unavailable", queue.length || header ? "the watch ended in the middle of a message" : "the watch ended");
    queue.push(value);
    for (;;) {
      if (!header) {
        if (queue.length < 5) break;
        const bytes = queue.take(5);
        header = { flags: bytes[0], length: new DataView(bytes.buffer, bytes.byteOffset, 5).getUint32(1) };
      }
      if (queue.length < header.length) break;
      const text = decoder.decode(queue.take(header.length));
      const flags = header.flags;
      header = null;
      const json = text ? JSON.parse(text) : {};
      if (flags & 0x02) {
        if (json.error) throw new ApiError(json.error.code, json.error.message, json.error.details);
        throw new ApiError("unavailable", "the watch ended");
      }
      onMessage(json);
    }
  }
}
