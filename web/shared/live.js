// The console socket (docs/LIVE.md): opened with a single-use ticket, resumed after every drop
// from the last event id seen, so nothing is missed or repeated across a reconnect or a node
// restart. Emits `frame` (every server frame), `state` (connecting | live | reconnecting |
// offline) and `resync` (the hub cannot replay: refetch over REST).

import { api, refresh } from './api.js';

const RESUME_CODES = new Set([1001, 1006, 1011, 1012, 4008]);

export class Live extends EventTarget {
  constructor({ path = '/v1/ws' } = {}) {
    super();
    this.path = path;
    this.lastEventId = null;
    this.state = 'offline';
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.timer = null;
    this.pending = new Map();
    this.seq = 0;
    this.onOnline = () => { if (!this.stopped && this.state !== 'live') this.reconnectNow(); };
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: state }));
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.failPending('the connection was closed');
    this.setState('offline');
  }

  reconnectNow() {
    clearTimeout(this.timer);
    this.attempt = 0;
    if (this.ws) this.ws.close(1000);
    else this.open();
  }

  async open() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 && this.lastEventId === null ? 'connecting' : 'reconnecting');
    let ticket;
    try {
      ticket = (await api('POST', '/v1/ws/ticket')).ticket;
    } catch (e) {
      if (e.status === 401) { this.stop(); return; } // signed out: api.js told the page
      this.schedule();
      return;
    }
    if (this.stopped) return;
    const url = new URL(this.path, window.location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('ticket', ticket);
    if (this.lastEventId !== null) url.searchParams.set('last_event_id', String(this.lastEventId));
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = (c) => this.closed(ws, c.code);
  }

  receive(text) {
    let frame;
    try { frame = JSON.parse(text); } catch (_) { return; }
    if (frame.type === 'hello') {
      this.attempt = 0;
      if (this.lastEventId === null || !frame.data.resumed) this.lastEventId = frame.data.last_event_id;
      this.setState('live');
    } else if (frame.type === 'resync.required') {
      this.lastEventId = frame.data.last_event_id;
      this.dispatchEvent(new CustomEvent('resync', { detail: frame.data }));
      return;
    } else if (frame.type === 'ack' || frame.type === 'error') {
      const ref = frame.data && frame.data.ref;
      const waiting = ref && this.pending.get(ref);
      if (waiting) {
        this.pending.delete(ref);
        if (frame.type === 'ack') waiting.resolve(frame.data);
        else waiting.reject(Object.assign(new Error(frame.data.message), { code: frame.data.code }));
      }
      return;
    }
    if (typeof frame.id === 'number') {
      if (this.lastEventId !== null && frame.id <= this.lastEventId) return; // already seen
      this.lastEventId = frame.id;
    }
    this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
  }

  async closed(ws, code) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.failPending('the connection dropped');
    if (this.stopped) return;
    if (code === 4001) {
      // The token expired or the session was revoked: a fresh token, or signed out.
      if (!(await refresh())) { this.stop(); return; }
      this.attempt = 0;
    }
    if (code === 1008 || code === 1009) {
      console.error(`The hub closed the console socket (${code}).`);
    }
    this.setState('reconnecting');
    if (code === 1012 || code === 4001 || code === 1000) this.open();
    else this.schedule(RESUME_CODES.has(code));
  }

  schedule() {
    this.setState('reconnecting');
    const delay = Math.min(30000, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.open(), delay);
  }

  failPending(why) {
    for (const p of this.pending.values()) p.reject(new Error(why));
    this.pending.clear();
  }

  /** Sends a command; resolves the `ack` data, rejects with the `error` frame's message. */
  command(cmd) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error('not connected'));
    }
    this.seq += 1;
    const ref = `c${this.seq}`;
    return new Promise((resolve, reject) => {
      this.pending.set(ref, { resolve, reject });
      this.ws.send(JSON.stringify({ ...cmd, ref }));
      setTimeout(() => {
        if (this.pending.delete(ref)) reject(new Error('no answer from the hub'));
      }, 10000);
    });
  }
}
