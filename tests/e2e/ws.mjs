// A small WebSocket client for the tests of the terminal endpoint: raw
// frames over node:net, so a test can also send what a browser never would
// (unmasked frames, oversized ones). Node built-ins only.
import net from "node:net";
import { randomBytes } from "node:crypto";
import { ADMIN_KEY, BASE } from "./lib.mjs";

const TEXT = 1, BINARY = 2, CLOSE = 8, PING = 9, PONG = 10;

/** One frame, masked unless mask is false. */
export function frame(opcode, payload, { mask = true, fin = true } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload ?? "");
  const len = data.length;
  const head = [(fin ? 0x80 : 0) | opcode];
  const ext = len < 126 ? [] : len < 65536 ? [len >> 8, len & 255] : [0, 0, 0, 0, (len >>> 24) & 255, (len >> 16) & 255, (len >> 8) & 255, len & 255];
  head.push((mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127), ...ext);
  if (!mask) return Buffer.concat([Buffer.from(head), data]);
  const key = randomBytes(4);
  const body = Buffer.from(data);
  for (let i = 0; i < len; i++) body[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), key, body]);
}

/**
 * Opens path on the server as a WebSocket. key goes in the Authorization
 * header unless protocols is given (a browser's way: ["sprout-terminal",
 * "bearer.KEY"]). Resolves to {status, headers, json} when the server did
 * not switch protocols, else {status: 101, headers, ws}.
 */
export function wsOpen(path, { key = ADMIN_KEY, protocols } = {}) {
  const url = new URL(BASE);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(url.port), url.hostname);
    let buf = Buffer.alloc(0);
    const lines = [`GET ${path} HTTP/1.1`, `Host: ${url.host}`, "Upgrade: websocket", "Connection: Upgrade",
      `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}`, "Sec-WebSocket-Version: 13"];
    if (protocols) lines.push(`Sec-WebSocket-Protocol: ${protocols.join(", ")}`);
    else if (key !== null) lines.push(`Authorization: Bearer ${key}`);
    sock.on("error", reject);
    sock.write(lines.join("\r\n") + "\r\n\r\n");
    const onHead = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const [status, ...hs] = buf.subarray(0, end).toString().split("\r\n");
      const headers = Object.fromEntries(hs.map((h) => [h.slice(0, h.indexOf(":")).toLowerCase(), h.slice(h.indexOf(":") + 1).trim()]));
      const code = Number(status.split(" ")[1]);
      const rest = buf.subarray(end + 4);
      sock.off("data", onHead);
      if (code === 101) return resolve({ status: code, headers, ws: new Ws(sock, rest) });
      let body = rest;
      const done = () => {
        sock.destroy();
        let json;
        try { json = JSON.parse(body.toString()); } catch {}
        resolve({ status: code, headers, json });
      };
      const need = Number(headers["content-length"] ?? 0);
      if (body.length >= need) return done();
      sock.on("data", (x) => { body = Buffer.concat([body, x]); if (body.length >= need) done(); });
      sock.on("end", done);
    };
    sock.on("data", onHead);
  });
}

/** An open connection: output bytes and messages as they come. */
class Ws {
  constructor(sock, rest) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.output = "";        // every binary message, as text
    this.messages = [];      // every text message, parsed
    this.closeCode = null;   // the server's close frame's code
    this.ended = false;      // the socket is closed
    this.waiters = [];
    sock.on("data", (d) => this.#feed(d));
    sock.on("close", () => { this.ended = true; this.#wake(); });
    sock.on("error", () => {});
    if (rest.length) this.#feed(rest);
  }

  #feed(d) {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      if (this.buf.length < 2) break;
      let len = this.buf[1] & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) break; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) break; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      if (this.buf.length < off + len) break;
      const op = this.buf[0] & 0x0f, payload = this.buf.subarray(off, off + len);
      this.buf = this.buf.subarray(off + len);
      if (op === BINARY) this.output += payload.toString();
      else if (op === TEXT) this.messages.push(JSON.parse(payload.toString()));
      else if (op === CLOSE) this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      else if (op === PING) this.sock.write(frame(PONG, payload));
    }
    this.#wake();
  }

  #wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once cond() holds (checked at each frame), or rejects after ms. */
  until(cond, ms = 30_000, what = "condition") {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) { clearTimeout(t); return resolve(); }
        if (this.ended && !cond()) { clearTimeout(t); return reject(new Error(`connection ended before ${what}; output: ${JSON.stringify(this.output.slice(-500))}, messages: ${JSON.stringify(this.messages)}`)); }
        this.waiters.push(check);
      };
      const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; output: ${JSON.stringify(this.output.slice(-500))}`)), ms);
      check();
    });
  }

  type(text) { this.sock.write(frame(BINARY, text)); }
  resize(rows, cols) { this.sock.write(frame(TEXT, JSON.stringify({ type: "resize", rows, cols }))); }
  raw(bytes) { this.sock.write(bytes); }
  close() { this.sock.write(frame(CLOSE, Buffer.from([3, 232]))); }
  destroy() { this.sock.destroy(); }
}

export const WS_OPCODES = { TEXT, BINARY, CLOSE, PING, PONG };
