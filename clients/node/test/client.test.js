'use strict';
// Tests of tokenvault-client.js: against a fake server always, and against the real daemon when
// TOKENVAULT_BIN names the built `tokenvault` (the Swift suite sets it and runs `node --test`).
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { TokenVaultClient, TokenVaultError } = require('../tokenvault-client.js');

const CLI = path.join(__dirname, '..', 'cli.js');

function tempDir() {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tv-node-'));
}

/** A server that answers each request line with handler(request, socket) (an object, a string or null). */
function fakeServer(socketPath, handler) {
  const seen = [];
  const server = net.createServer((s) => {
    let buffer = '';
    s.setEncoding('utf8');
    s.on('error', () => {});
    s.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const req = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        seen.push(req);
        const reply = handler(req, s);
        if (reply !== null) s.write((typeof reply === 'string' ? reply : JSON.stringify({ id: req.id, ...reply })) + '\n');
      }
    });
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve({ server, seen })));
}

describe('against a fake server', () => {
  let dir, sock;
  before(() => { dir = tempDir(); sock = path.join(dir, 'tv.sock'); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('pipelined requests are matched to their replies by id', async (t) => {
    const { server } = await fakeServer(sock, (req, s) => {
      // Answer the first request last.
      if (req.name === 'a') { setTimeout(() => s.write(JSON.stringify({ id: req.id, ok: true, token: 'A' }) + '\n'), 50); return null; }
      return { ok: true, token: req.name.toUpperCase() };
    });
    t.after(() => server.close());
    const c = new TokenVaultClient({ socketPath: sock });
    const [a, b, x] = await Promise.all([c.token('a'), c.token('b'), c.token('x')]);
    assert.deepEqual([a, b, x], ['A', 'B', 'X']);
    c.close();
    await new Promise((r) => server.close(r));
  });

  test("error replies carry the contract's code", async () => {
    const { server } = await fakeServer(sock, (req) => ({ ok: false, error: { code: req.name, message: `no: ${req.name}` } }));
    const c = new TokenVaultClient({ socketPath: sock });
    for (const code of ['denied', 'not_found', 'unavailable', 'rate_limited', 'bad_request']) {
      await assert.rejects(c.get(code), (e) => e instanceof TokenVaultError && e.code === code && e.message === `no: ${code}`);
    }
    await assert.rejects(c.get('something-new'), (e) => e.code === 'internal');
    c.close();
    await new Promise((r) => server.close(r));
  });

  test('a connection the daemon closed while idle is reopened once', async () => {
    let connections = 0;
    const { server, seen } = await fakeServer(sock, (req, s) => {
      setImmediate(() => s.end());
      return { ok: true, token: 't' + seen.length };
    });
    server.on('connection', () => connections++);
    const c = new TokenVaultClient({ socketPath: sock });
    assert.equal(await c.token('x'), 't1');
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(await c.token('x'), 't2');
    assert.equal(connections, 2);
    c.close();
    await new Promise((r) => server.close(r));
  });

  test('a reply with a wrong id, or not JSON, is a protocol error', async () => {
    const { server } = await fakeServer(sock, (req) => (req.name === 'junk' ? 'not json' : { id: 999, ok: true, token: 'x' }));
    const c = new TokenVaultClient({ socketPath: sock });
    await assert.rejects(c.get('junk'), (e) => e.code === 'protocol_error');
    await assert.rejects(c.get('x'), (e) => e.code === 'protocol_error');
    c.close();
    await new Promise((r) => server.close(r));
  });

  test('no daemon: a clear connect error', async () => {
    const c = new TokenVaultClient({ socketPath: path.join(dir, 'absent.sock') });
    await assert.rejects(c.ping(), (e) => e.code === 'connect' && /is `tokenvault serve` running/.test(e.message));
  });

  test('a daemon that does not answer times out', async () => {
    const { server } = await fakeServer(sock, () => null);
    const c = new TokenVaultClient({ socketPath: sock, timeout: 200 });
    await assert.rejects(c.ping(), (e) => e.code === 'connect' && /within 200 ms/.test(e.message));
    c.close();
    await new Promise((r) => server.close(r));
  });

  test('watch yields change events and stops on close()', async () => {
    const { server } = await fakeServer(sock, (req, s) => {
      if (req.op !== 'watch') return { ok: false, error: { code: 'unknown_op', message: '?' } };
      setTimeout(() => {
        s.write('{"event":"changed","name":"acme/ads","change":"replaced"}\n{"event":"changed","name":"acme/b","change":"removed"}\n');
      }, 20);
      return { ok: true, watching: req.names };
    });
    const c = new TokenVaultClient({ socketPath: sock });
    const w = await c.watch(['acme/*']);
    const got = [];
    for await (const change of w) {
      got.push(change);
      if (got.length === 2) w.close();
    }
    assert.deepEqual(got, [{ name: 'acme/ads', change: 'replaced' }, { name: 'acme/b', change: 'removed' }]);
    await new Promise((r) => server.close(r));
  });
});

describe('refusing a socket someone else could have bound', { skip: process.getuid() !== 0 && 'needs root (chown)' }, () => {
  let dir;
  before(() => { dir = tempDir(); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a socket in a directory owned by another uid', async () => {
    const d = path.join(dir, 'other');
    fs.mkdirSync(d, { mode: 0o755 });
    const sock = path.join(d, 'tv.sock');
    const { server, seen } = await fakeServer(sock, () => ({ ok: true, token: 'ATTACKER' }));
    fs.chownSync(d, 65534, 65534); // the socket stays root's: root's socket in nobody's directory
    const c = new TokenVaultClient({ socketPath: sock });
    await assert.rejects(c.token('x'), (e) => e.code === 'impostor' && /directory/.test(e.message));
    assert.equal(seen.length, 0, 'nothing may be sent to a server that is not trusted');
    await new Promise((r) => server.close(r));
  });

  test('an ancestor that others can write without the sticky bit', async () => {
    const open = path.join(dir, 'open');
    fs.mkdirSync(path.join(open, 'vault'), { recursive: true });
    fs.chmodSync(open, 0o777);
    const sock = path.join(open, 'vault', 'tv.sock');
    const { server, seen } = await fakeServer(sock, () => ({ ok: true, token: 'ATTACKER' }));
    const c = new TokenVaultClient({ socketPath: sock });
    await assert.rejects(c.token('x'), (e) => e.code === 'impostor' && /can be written by others/.test(e.message));
    assert.equal(seen.length, 0);
    await new Promise((r) => server.close(r));
  });

  test('expectedUid must own the socket', async () => {
    const sock = path.join(dir, 'mine.sock');
    const { server } = await fakeServer(sock, () => ({ ok: true, protocol: 1 }));
    await assert.rejects(new TokenVaultClient({ socketPath: sock, expectedUid: 4242 }).ping(), (e) => e.code === 'impostor');
    const c = new TokenVaultClient({ socketPath: sock, expectedUid: 0 });
    assert.equal(await c.ping(), 1);
    c.close();
    await new Promise((r) => server.close(r));
  });
});

describe('against the real daemon', { skip: !process.env.TOKENVAULT_BIN && 'set TOKENVAULT_BIN to run against the real daemon' }, () => {
  const bin = process.env.TOKENVAULT_BIN;
  let home, env, sock, daemon;
  const tv = (args, input) => {
    const r = spawnSync(bin, args, { env, input: input === undefined ? undefined : input + '\n' });
    assert.equal(r.status, 0, `tokenvault ${args.join(' ')}: ${r.stderr}`);
    return r;
  };

  before(async () => {
    home = tempDir();
    env = { ...process.env, TOKENVAULT_HOME: path.join(home, 'v'), TOKENVAULT_GRAPH_URL: 'http://127.0.0.1:9' };
    tv(['init']);
    tv(['app', 'add', 'acme', '--app-id', '1234'], 'node-app-secret');
    tv(['put', 'acme/ads', '--kind', 'system_user', '--app', 'acme'], 'EAAB-node');
    tv(['put', 'other/x'], 'EAAB-other');
    fs.writeFileSync(path.join(home, 'v', 'policy.toml'), `[[allow]]\nuid = ${process.getuid()}\ntokens = ["acme/*"]\nproof = true\n`);
    sock = path.join(home, 'v', 'tokenvault.sock');
    daemon = spawn(bin, ['serve'], { env, stdio: 'ignore' });
    for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  });
  after(async () => {
    daemon.kill('SIGTERM');
    await new Promise((r) => daemon.once('exit', r));
    fs.rmSync(home, { recursive: true, force: true });
  });

  test('get, list and both proofs', async () => {
    const c = new TokenVaultClient({ socketPath: sock });
    assert.equal(await c.ping(), 1);
    assert.equal((await c.whoami()).uid, process.getuid());
    assert.deepEqual(await c.list(), ['acme/ads']);
    assert.equal(await c.token('acme/ads'), 'EAAB-node');
    const hmac = (msg) => crypto.createHmac('sha256', 'node-app-secret').update(msg).digest('hex');
    const timed = await c.get('acme/ads', { proof: 'timed' });
    assert.equal(timed.appsecret_proof, hmac(`EAAB-node|${timed.appsecret_time}`));
    assert.equal((await c.get('acme/ads', { proof: 'legacy' })).appsecret_proof, hmac('EAAB-node'));
    await assert.rejects(c.get('acme/none'), (e) => e.code === 'not_found');
    await assert.rejects(c.get('other/x'), (e) => e.code === 'denied');
    c.close();
  });

  test('watch delivers a put made by another process, and refuses a name the caller may not read', async () => {
    const c = new TokenVaultClient({ socketPath: sock });
    await assert.rejects(c.watch(['other/*']), (e) => e.code === 'denied');
    const w = await c.watch(['acme/*']);
    tv(['put', 'acme/ads', '--kind', 'system_user', '--app', 'acme', '--force'], 'EAAB-node-2');
    const { value } = await w.next();
    assert.deepEqual(value, { name: 'acme/ads', change: 'replaced' });
    assert.equal(await c.token('acme/ads'), 'EAAB-node-2');
    w.close();
    tv(['put', 'acme/ads', '--kind', 'system_user', '--app', 'acme', '--force'], 'EAAB-node');
    c.close();
  });

  test('the command line: get, get --proof, and a refusal', () => {
    const run = (...args) => spawnSync(process.execPath, [CLI, ...args], { env: { ...env, TOKENVAULT_SOCKET: sock } });
    let r = run('get', 'acme/ads');
    assert.equal(r.status, 0, String(r.stderr));
    assert.equal(String(r.stdout), 'EAAB-node');
    r = run('get', 'acme/ads', '--proof', 'legacy');
    assert.equal(JSON.parse(r.stdout).token, 'EAAB-node');
    r = run('get', 'other/x');
    assert.equal(r.status, 8);
    assert.match(String(r.stderr), /denied/);
    assert.equal(run('get').status, 2);
  });
});
