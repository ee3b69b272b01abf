#!/usr/bin/env node
'use strict';
// node cli.js [--socket PATH] get NAME [--proof timed|legacy] | list | watch PATTERN...
// Exit status: 0 ok, 3 not found, 8 denied, 7 any other error, 2 bad usage (like `tokenvault get`).
const { TokenVaultClient } = require('./tokenvault-client.js');

const USAGE = 'usage: tokenvault-node [--socket PATH] get NAME [--proof timed|legacy] | list | watch PATTERN...';

async function main(argv) {
  const args = [...argv];
  let socketPath;
  const at = args.indexOf('--socket');
  if (at >= 0) [, socketPath] = args.splice(at, 2);
  let proof;
  const p = args.indexOf('--proof');
  if (p >= 0) [, proof] = args.splice(p, 2);
  const [command, ...rest] = args;
  const ok = (command === 'get' && rest.length === 1 && (proof === undefined || proof === 'timed' || proof === 'legacy')) ||
    (command === 'list' && rest.length === 0 && proof === undefined) || (command === 'watch' && rest.length > 0 && proof === undefined);
  if (!ok) {
    process.stderr.write(USAGE + '\n');
    return 2;
  }
  const vault = new TokenVaultClient({ socketPath });
  try {
    if (command === 'get') {
      const r = await vault.get(rest[0], proof ? { proof } : {});
      if (proof) {
        const out = { token: r.token, appsecret_proof: r.appsecret_proof };
        if (r.appsecret_time !== undefined) out.appsecret_time = r.appsecret_time;
        process.stdout.write(JSON.stringify(out) + '\n');
      } else {
        process.stdout.write(r.token + (process.stdout.isTTY ? '\n' : ''));
      }
    } else if (command === 'list') {
      for (const name of await vault.list()) process.stdout.write(name + '\n');
    } else {
      const changes = await vault.watch(rest);
      process.once('SIGINT', () => changes.close());
      process.once('SIGTERM', () => changes.close());
      for await (const change of changes) process.stdout.write(JSON.stringify(change) + '\n');
    }
    return 0;
  } catch (e) {
    process.stderr.write(`error: ${e.code || 'error'}: ${e.message}\n`);
    return e.code === 'denied' ? 8 : e.code === 'not_found' ? 3 : 7;
  } finally {
    vault.close();
  }
}

main(process.argv.slice(2)).then((status) => { process.exitCode = status; });
