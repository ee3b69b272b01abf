'use strict';
/**
 * TokenVault client for Node.js services: one file, no dependencies.
 *
 *   const { TokenVaultClient } = require('tokenvault-client');
 *   const vault = new TokenVaultClient();                 // $TOKENVAULT_SOCKET, else ./.tokenvault/tokenvault.sock
 *   const token = await vault.token('acme/ads');          // just the token string
 *   const reply = await vault.get('acme/ads', { proof: 'timed' });  // token, kind, appsecret_proof, ...
 *   const changes = await vault.watch(['acme/*']);        // the subscription is in place once this resolves
 *   for await (const change of changes) { ... }          // { name: 'acme/ads', change: 'replaced' }
 *   vault.close();
 *
 * Speaks protocol v1 (Docs/PROTOCOL.md): one JSON object per line over a Unix socket. Requests share one
 * connection (pipelined, matched by id), opened on first use and reopened when the daemon closed it idle.
 *
 * Node cannot ask the kernel who serves a socket (SO_PEERCRED), so before the first request the client
 * checks who could have bound it: the socket file and its directory must be owned by `expectedUid` (or
 * $TOKENVAULT_SERVER_UID) when one is given, else by root or by one uid that owns both; no symlink on the
 * way may belong to anyone else, and every ancestor directory must be owned by root or that uid and not be
 * writable by others unless sticky. The daemon itself refuses a directory others can write. A socket in a
 * directory only its owner can write can only have been bound by that owner (or root).
 */

const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');

class TokenVaultError extends Error {
  constructor(message, code = 'error') {
    super(message);
    this.name = 'TokenVaultError';
    this.code = code;
  }
}

const CODES = ['bad_request', 'unknown_op', 'too_large', 'denied', 'not_found', 'unavailable', 'rate_limited',
  'internal', 'connect', 'protocol_error', 'impostor'];
const MAX_LINE = 1 << 20;

function defaultSocketPath() {
  if (process.env.TOKENVAULT_SOCKET) return process.env.TOKENVAULT_SOCKET;
  return path.join(process.env.TOKENVAULT_HOME || './.tokenvault', 'tokenvault.sock');
}

function parseUid(value, what) {
  const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  if (!Number.isInteger(n) || n < 0) throw new TypeError(`${what} must be a uid (a number >= 0), not ${JSON.stringify(value)}`);
  return n;
}

/** Throws TokenVaultError('impostor') unless the socket at `socketPath` can only have been bound by a trusted uid. */
function checkServerPath(socketPath, expectedUid) {
  const fail = (why) => {
    throw new TokenVaultError(`refusing to trust the daemon at ${socketPath}: ${why}` +
      (expectedUid === undefined ? ' (set expectedUid or TOKENVAULT_SERVER_UID if this daemon is genuine)' : ''), 'impostor');
  };
  let sock, realDir;
  try {
    sock = fs.lstatSync(socketPath);
    realDir = fs.realpathSync(path.dirname(socketPath));
  } catch (e) {
    return; // nothing there: connecting fails with a clear error of its own
  }
  if (!sock.isSocket()) fail('it is not a socket');
  const dirStat = fs.statSync(realDir);
  const owner = sock.uid;
  if (expectedUid !== undefined) {
    if (owner !== expectedUid) fail(`the socket is owned by uid ${owner}, but uid ${expectedUid} was expected`);
  } else if (owner !== 0 && dirStat.uid !== owner) {
    fail(`the socket is owned by uid ${owner} but its directory ${realDir} by uid ${dirStat.uid}`);
  }
  const trusted = (uid) => uid === 0 || uid === owner;
  if (!trusted(dirStat.uid)) fail(`its directory ${realDir} is owned by uid ${dirStat.uid}`);
  // Symlinks on the path as given (absolute, unresolved).
  let component = '/';
  for (const part of path.dirname(path.resolve(socketPath)).split('/').filter(Boolean)) {
    component = path.join(component, part);
    const st = fs.lstatSync(component);
    if (st.isSymbolicLink() && !trusted(st.uid)) fail(`the symlink ${component} on its path is owned by uid ${st.uid}`);
  }
  // The directory and every ancestor: owned by root or the server, not writable by others unless sticky.
  for (let dir = realDir; ; dir = path.dirname(dir)) {
    const st = fs.lstatSync(dir);
    if (!trusted(st.uid)) fail(`directory ${dir} on its path is owned by uid ${st.uid}`);
    if ((st.mode & 0o022) && !(st.mode & 0o1000)) fail(`directory ${dir} (mode ${(st.mode & 0o7777).toString(8)}) can be written by others`);
    if (dir === '/') break;
  }
}

/** One connection: newline-delimited JSON, replies matched to requests by id. */
class Connection {
  constructor(client, onEvent) {
    this.client = client;
    this.onEvent = onEvent; // for watch connections: lines without an id
    this.pending = new Map();
    this.buffer = '';
    this.closed = false;
    this.socket = net.createConnection(client.socketPath);
    this.socket.setEncoding('utf8');
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('connect', resolve);
      this.socket.once('error', (e) => reject(new TokenVaultError(
        `cannot connect to the TokenVault daemon at ${client.socketPath}: ${e.code || e.message} (is \`tokenvault serve\` running?)`, 'connect')));
    });
    this.opened.catch(() => {});
    this.socket.on('data', (chunk) => this.receive(chunk));
    this.socket.on('error', () => {});
    this.socket.on('close', () => this.shut(new TokenVaultError('the daemon closed the connection', 'connect')));
  }

  receive(chunk) {
    this.buffer += chunk;
    let nl;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      let obj;
      try {
        obj = JSON.parse(line);
      } catch {
        return this.shut(new TokenVaultError('the reply is not JSON', 'protocol_error'), true);
      }
      if (obj === null || typeof obj !== 'object') return this.shut(new TokenVaultError('the reply is not a JSON object', 'protocol_error'), true);
      const waiter = this.pending.get(obj.id);
      if (waiter) {
        this.pending.delete(obj.id);
        clearTimeout(waiter.timer);
        waiter.resolve(obj);
      } else if (this.onEvent && obj.event !== undefined) {
        this.onEvent(obj);
      } else {
        return this.shut(new TokenVaultError("the reply's id does not match a request", 'protocol_error'), true);
      }
    }
    if (this.buffer.length > MAX_LINE) this.shut(new TokenVaultError('a reply line is too long', 'protocol_error'), true);
  }

  send(request) {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.error);
      const timer = this.client.timeout > 0 ? setTimeout(() => {
        this.pending.delete(request.id);
        reject(new TokenVaultError(`no reply from the daemon within ${this.client.timeout} ms`, 'connect'));
        this.shut(new TokenVaultError('timed out', 'connect'), true);
      }, this.client.timeout) : null;
      this.pending.set(request.id, { resolve, reject, timer });
      this.socket.write(JSON.stringify(request) + '\n');
    });
  }

  shut(error, destroy = false) {
    if (this.closed) return;
    this.closed = true;
    this.error = error;
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.pending.clear();
    if (destroy) this.socket.destroy();
    if (this.onEvent) this.onEvent(null);
  }

  close() {
    this.shut(new TokenVaultError('the client closed the connection', 'connect'), true);
  }
}

function replyError(obj) {
  const err = (obj && obj.error) || {};
  const code = CODES.includes(err.code) ? err.code : 'internal';
  return new TokenVaultError(err.message || 'no message', code);
}

/** An open `watch` subscription: an async iterator of { name, change }; close() ends it. */
class Watch {
  constructor(client) {
    this.queue = [];
    this.waiters = [];
    this.done = false;
    this.conn = new Connection(client, (event) => {
      if (event === null) {
        this.done = true;
      } else if (event.event === 'changed' && typeof event.name === 'string') {
        this.queue.push({ name: event.name, change: event.change || 'replaced' });
      }
      while (this.waiters.length && (this.queue.length || this.done)) {
        const w = this.waiters.shift();
        w(this.queue.length ? { value: this.queue.shift(), done: false } : { value: undefined, done: true });
      }
    });
  }

  next() {
    if (this.queue.length) return Promise.resolve({ value: this.queue.shift(), done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  return() {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  close() {
    this.conn.close();
  }
}

class TokenVaultClient {
  /**
   * @param {object} [options]
   * @param {string} [options.socketPath] default $TOKENVAULT_SOCKET, else $TOKENVAULT_HOME/tokenvault.sock
   * @param {number} [options.timeout] ms to wait for a reply (default 10000; 0: no limit)
   * @param {number} [options.expectedUid] the uid the daemon runs as (default $TOKENVAULT_SERVER_UID)
   */
  constructor(options = {}) {
    this.socketPath = options.socketPath || defaultSocketPath();
    this.timeout = options.timeout === undefined ? 10000 : options.timeout;
    if (options.expectedUid !== undefined) this.expectedUid = parseUid(options.expectedUid, 'expectedUid');
    else if (process.env.TOKENVAULT_SERVER_UID) this.expectedUid = parseUid(process.env.TOKENVAULT_SERVER_UID, 'TOKENVAULT_SERVER_UID');
    this.conn = null;
    this.nextId = 0;
  }

  async ping() { return (await this.call({ op: 'ping' })).protocol; }

  async whoami() {
    const r = await this.call({ op: 'whoami' });
    return { uid: r.uid, gid: r.gid, pid: r.pid };
  }

  async list() { return (await this.call({ op: 'list' })).names; }

  /** The whole `get` reply. `options.proof`: undefined, 'timed' or 'legacy'. */
  async get(name, options = {}) {
    const request = { op: 'get', name };
    if (options.proof !== undefined) {
      if (options.proof !== 'timed' && options.proof !== 'legacy') throw new TypeError("proof must be 'timed' or 'legacy'");
      request.proof = options.proof;
    }
    const reply = await this.call(request);
    if (typeof reply.token !== 'string') throw new TokenVaultError('a get reply without a token', 'protocol_error');
    return reply;
  }

  async token(name) { return (await this.get(name)).token; }

  /**
   * Subscribes to committed changes to the names matching `patterns` (exact names or `prefix*`) that this
   * caller may read. Resolves, once the daemon has acknowledged it, to an async iterator of
   * { name, change: 'replaced' | 'removed' | 'refreshed' }; no token is sent (read it again with get()).
   * Rejects with code 'denied' for a pattern the policy does not cover. It uses a connection of its own and
   * ends when the daemon closes it (a stop, or a watcher too far behind) or on close(): then reconnect and
   * get() again, since changes made meanwhile are not replayed.
   */
  async watch(patterns) {
    checkServerPath(this.socketPath, this.expectedUid);
    const w = new Watch(this);
    try {
      await w.conn.opened;
      const reply = await w.conn.send({ op: 'watch', names: [...patterns], id: 1 });
      if (reply.ok !== true) throw replyError(reply);
    } catch (e) {
      w.close();
      throw e;
    }
    return w;
  }

  close() {
    if (this.conn) this.conn.close();
    this.conn = null;
  }

  async call(request) {
    for (let attempt = 0; ; attempt++) {
      const conn = await this.connection();
      const id = ++this.nextId;
      let reply;
      try {
        reply = await conn.send({ ...request, id });
      } catch (e) {
        if (this.conn === conn) this.conn = null;
        if (attempt === 0 && e.code === 'connect' && !/within/.test(e.message)) continue; // closed while idle: once more
        throw e;
      }
      if (reply.ok === true) return reply;
      const err = replyError(reply);
      if (err.code === 'too_large') this.close();
      throw err;
    }
  }

  async connection() {
    if (this.conn && !this.conn.closed) return this.conn;
    checkServerPath(this.socketPath, this.expectedUid);
    const conn = new Connection(this, null);
    this.conn = conn;
    try {
      await conn.opened;
    } catch (e) {
      if (this.conn === conn) this.conn = null;
      throw e;
    }
    return conn;
  }
}

module.exports = { TokenVaultClient, TokenVaultError, checkServerPath, defaultSocketPath };
