// The page's WebSocket to the observer: connects, follows the user's mode (periodic with its
// interval, manual, live), sends the periodic update requests, and reconnects with backoff when
// the observer goes away. Messages go to an ObserverModel; listeners hear about state changes.
import { ObserverModel, backoffDelay, encode, setMode, updateRequest, validateClientMessage, ping } from './protocol.js';

export class ObserverConnection {
  /**
   * @param {object} o
   * @param {string} o.url           ws:// or wss:// URL of /v1/stream (token included if any)
   * @param {ObserverModel} o.model  receives every server message
   * @param {(what: object) => void} o.onUpdate  called after each message with what changed
   * @param {(state: object) => void} o.onState  connection state changes
   */
  constructor({ url, model, onUpdate, onState, WebSocketImpl = globalThis.WebSocket, now = () => Date.now() }) {
    this.url = url;
    this.model = model;
    this.onUpdate = onUpdate;
    this.onState = onState;
    this.WebSocketImpl = WebSocketImpl;
    this.now = now;
    this.mode = 'periodic';
    this.intervalMs = 1000;
    this.ws = null;
    this.attempt = 0;
    this.timer = null; // periodic update requests
    this.retryTimer = null;
    this.pingTimer = null;
    this.awaiting = false; // a periodic request is out and unanswered
    this.state = { name: 'connecting', attempt: 0, retryAt: null };
    this.stopped = false;
  }

  start() {
    this.stopped = false;
    this.#open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.#stopTimers();
    if (this.ws) this.ws.close(1000, 'page closed');
    this.#setState({ name: 'closed', attempt: this.attempt, retryAt: null });
  }

  /** Switches the update mode; for periodic, `intervalMs` is the user's interval. */
  setMode(mode, intervalMs = this.intervalMs) {
    this.mode = mode;
    this.intervalMs = intervalMs;
    this.#send(setMode(mode, mode === 'periodic' ? intervalMs : undefined));
    this.#schedule();
  }

  /** The refresh button: one manual update request (periodic and manual modes only). */
  refresh() {
    if (this.mode === 'live') return false;
    return this.#send(updateRequest('manual'));
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  #setState(s) {
    this.state = s;
    this.onState?.(s);
  }

  #open() {
    clearTimeout(this.retryTimer);
    this.#setState({ name: this.attempt ? 'reconnecting' : 'connecting', attempt: this.attempt, retryAt: null });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (e) {
      this.#retry(String(e.message ?? e));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.#setState({ name: 'open', attempt: 0, retryAt: null, since: this.now() });
      // The server starts every connection in periodic mode at 1 s: restore the user's choice.
      this.#send(setMode(this.mode, this.mode === 'periodic' ? this.intervalMs : undefined));
      this.#schedule();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (typeof ev.data !== 'string') return;
      let what;
      try {
        what = this.model.apply(ev.data, this.now());
      } catch (e) {
        what = { error: true };
        this.model.lastError = { reason: 'bad_server_message', message: String(e.message ?? e), at: this.now() };
      }
      if (what.summary || what.changes) this.awaiting = false;
      this.onUpdate?.(what);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.#stopTimers();
      if (!this.stopped) this.#retry(ev.reason || `closed (${ev.code})`);
    };
    ws.onerror = () => {
      // onclose follows and does the retrying.
    };
  }

  #retry(why) {
    const delay = backoffDelay(this.attempt);
    this.attempt++;
    this.#setState({ name: 'reconnecting', attempt: this.attempt, retryAt: this.now() + delay, why });
    this.retryTimer = setTimeout(() => this.#open(), delay);
  }

  #stopTimers() {
    clearInterval(this.timer);
    clearInterval(this.pingTimer);
    this.timer = null;
    this.pingTimer = null;
    this.awaiting = false;
  }

  // Periodic mode: one update request per interval (not piling up behind a slow answer);
  // live mode: a ping now and then measures the round trip; manual mode: nothing.
  #schedule() {
    this.#stopTimers();
    if (!this.isOpen) return;
    if (this.mode === 'periodic') {
      this.timer = setInterval(() => {
        if (this.awaiting) return;
        if (this.#send(updateRequest('periodic'))) this.awaiting = true;
      }, this.intervalMs);
    }
    this.pingTimer = setInterval(() => this.#send(ping(this.now())), 5000);
  }

  #send(message) {
    if (!this.isOpen) return false;
    this.ws.send(encode(validateClientMessage(message)));
    return true;
  }
}
