// SPDX-License-Identifier: Apache-2.0
//
// A sandbox's whole life through the SDK client, over stdio and over HTTP,
// with real VMs: create, exec, files both ways, list, destroy, one-shot run.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { call, resultText, startHttpServer, startStdio } from './lib.mjs';

// Every byte value, so that the base64 path is exercised for real.
const BINARY = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

async function lifecycle(client, srv) {
  const created = await call(client, 'sandbox_create', {});
  assert.equal(created.isError, false, resultText(created));
  const id = created.structuredContent?.sandbox_id;
  assert.match(id ?? '', /^sb-[0-9a-f]+$/);
  assert.equal(created.structuredContent.cpus, 1);
  assert.equal(srv.qemu().length, 1, 'one QEMU runs for the sandbox');

  const uname = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'uname -r' });
  assert.equal(uname.isError, false, resultText(uname));
  assert.equal(uname.structuredContent.exit_code, 0);
  assert.match(uname.structuredContent.stdout, /amd64/);
  assert.match(resultText(uname), /amd64/, 'the text content carries the output too');

  // Each tools/call has its own request id, carried through the service into the guest.
  const rid1 = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo "$LUMINAGUARD_REQUEST_ID"' });
  const rid2 = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo "$LUMINAGUARD_REQUEST_ID"' });
  assert.match(rid1.structuredContent.stdout, /^mcp-[0-9a-f]{16}\n$/, resultText(rid1));
  assert.match(rid2.structuredContent.stdout, /^mcp-[0-9a-f]{16}\n$/, resultText(rid2));
  assert.notEqual(rid1.structuredContent.stdout, rid2.structuredContent.stdout, 'one request id per call');

  const fail = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo oops >&2; echo out; exit 3' });
  assert.equal(fail.isError, false, 'a command that fails is a result, not a tool error');
  assert.equal(fail.structuredContent.exit_code, 3);
  assert.equal(fail.structuredContent.stdout, 'out\n');
  assert.equal(fail.structuredContent.stderr, 'oops\n');
  assert.equal(fail.structuredContent.timed_out, false);

  const argv = await call(client, 'sandbox_exec', {
    sandbox_id: id, argv: ['sh', '-c', 'echo "$GREETING $(pwd)"; cat'], env: { GREETING: 'hi' }, cwd: '/tmp', stdin: 'from stdin',
  });
  assert.equal(argv.structuredContent?.stdout, 'hi /tmp\nfrom stdin', resultText(argv));

  const text = 'hello, sandbox ✓\nline two\n';
  const w1 = await call(client, 'sandbox_fs_write', { sandbox_id: id, path: '/tmp/work/hello.txt', content: text });
  assert.equal(w1.isError, false, resultText(w1));
  const r1 = await call(client, 'sandbox_fs_read', { sandbox_id: id, path: '/tmp/work/hello.txt' });
  assert.equal(r1.isError, false, resultText(r1));
  assert.equal(r1.structuredContent.content, text);
  assert.equal(r1.structuredContent.encoding, 'utf-8');
  assert.equal(r1.structuredContent.size, Buffer.byteLength(text));

  const w2 = await call(client, 'sandbox_fs_write', {
    sandbox_id: id, path: '/tmp/work/bin.dat', content: BINARY.toString('base64'), encoding: 'base64', mode: 0o600,
  });
  assert.equal(w2.isError, false, resultText(w2));
  const r2 = await call(client, 'sandbox_fs_read', { sandbox_id: id, path: '/tmp/work/bin.dat' });
  assert.equal(r2.structuredContent?.encoding, 'base64', resultText(r2));
  assert.deepEqual(Buffer.from(r2.structuredContent.content, 'base64'), BINARY);
  const sum = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'wc -c < /tmp/work/bin.dat' });
  assert.equal(sum.structuredContent.stdout.trim(), '256', 'the guest sees the bytes written');

  const ls = await call(client, 'sandbox_fs_list', { sandbox_id: id, path: '/tmp/work' });
  assert.equal(ls.isError, false, resultText(ls));
  const entries = Object.fromEntries(ls.structuredContent.entries.map((e) => [e.name, e]));
  assert.equal(entries['hello.txt']?.type, 'file', JSON.stringify(ls.structuredContent));
  assert.equal(entries['hello.txt'].size, Buffer.byteLength(text));
  assert.equal(entries['bin.dat']?.size, 256);
  assert.equal(entries['bin.dat'].mode, 0o600);

  const missing = await call(client, 'sandbox_fs_read', { sandbox_id: id, path: '/no/such/file' });
  assert.equal(missing.isError, true, 'reading a missing file is a tool error');

  const list = await call(client, 'sandbox_list', {});
  const mine = list.structuredContent.sandboxes.find((s) => s.sandbox_id === id);
  assert.ok(mine, JSON.stringify(list.structuredContent));
  assert.equal(list.structuredContent.sandboxes.length, 1);

  const gone = await call(client, 'sandbox_destroy', { sandbox_id: id });
  assert.equal(gone.isError, false, resultText(gone));
  assert.equal(gone.structuredContent.destroyed, id);
  assert.deepEqual((await call(client, 'sandbox_list', {})).structuredContent.sandboxes, []);
  assert.deepEqual(srv.qemu(), [], 'the QEMU of a destroyed sandbox is gone');

  const late = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'true' });
  assert.equal(late.isError, true);
  assert.match(resultText(late), /no sandbox/);
  const again = await call(client, 'sandbox_destroy', { sandbox_id: id });
  assert.equal(again.isError, true, 'destroying twice is a tool error');

  const run = await call(client, 'sandbox_run', { command: 'echo one-shot; uname -m; exit 5' });
  assert.equal(run.isError, false, resultText(run));
  assert.equal(run.structuredContent.exit_code, 5);
  assert.equal(run.structuredContent.stdout, 'one-shot\nx86_64\n');
  assert.deepEqual((await call(client, 'sandbox_list', {})).structuredContent.sandboxes, [], 'sandbox_run leaves no sandbox behind');
  assert.deepEqual(srv.qemu(), [], 'sandbox_run leaves no QEMU behind');

  const timeout = await call(client, 'sandbox_run', { command: 'sleep 30', timeout: 1 });
  assert.equal(timeout.structuredContent?.timed_out, true, resultText(timeout));
}

describe('sandbox lifecycle', { timeout: 300_000 }, () => {
  it('over stdio', async () => {
    const srv = await startStdio();
    try {
      await lifecycle(srv.client, srv);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('over Streamable HTTP', async () => {
    const srv = await startHttpServer();
    try {
      const { client } = await srv.connect();
      await lifecycle(client, srv);
      // Sessions are isolated: another session sees none of this one's sandboxes.
      const a = await call(client, 'sandbox_create', {});
      const { client: other } = await srv.connect();
      assert.deepEqual((await call(other, 'sandbox_list', {})).structuredContent.sandboxes, []);
      const steal = await call(other, 'sandbox_exec', { sandbox_id: a.structuredContent.sandbox_id, command: 'true' });
      assert.equal(steal.isError, true, 'a session cannot use another session\'s sandbox');
      assert.equal((await call(client, 'sandbox_destroy', { sandbox_id: a.structuredContent.sandbox_id })).isError, false);
      assert.deepEqual(srv.qemu(), []);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
});
