// SPDX-License-Identifier: Apache-2.0
//
// Clients that go away in the middle of a call: their sandboxes must go
// with them, QEMU included, even while a command is still running.

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';

import {
  LineClient, alive, call, qemuChildren, resultText, serverArgs, sleep, startHttpServer, tempDir, waitFor,
} from './lib.mjs';

describe('a client that disconnects mid-call', { timeout: 180_000 }, () => {
  it('over HTTP: cancel the call, DELETE the session: its sandboxes are destroyed', async () => {
    const srv = await startHttpServer();
    try {
      const a = await srv.connect();
      const b = await srv.connect();
      const created = await call(a.client, 'sandbox_create', {});
      assert.equal(created.isError, false, resultText(created));
      const id = created.structuredContent.sandbox_id;
      const kept = await call(b.client, 'sandbox_create', {});
      assert.equal(kept.isError, false, resultText(kept));
      assert.equal(srv.qemu().length, 2);
      const victim = qemuChildren(srv.pid);

      const ac = new AbortController();
      const t0 = Date.now();
      const long = call(a.client, 'sandbox_exec', { sandbox_id: id, command: 'sleep 600' }, { signal: ac.signal })
        .then(() => 'resolved', (e) => e);
      await sleep(1_500);
      ac.abort('the user pressed stop');
      const err = await long;
      assert.ok(err instanceof Error, `the aborted call rejects on the client: ${err}`);
      // The session is gone for good: DELETE it.
      await a.transport.inner.terminateSession();
      await a.client.close();
      srv.clients.splice(srv.clients.indexOf(a), 1);
      await waitFor('one QEMU left (the other session\'s)', () => srv.qemu().length === 1, 15_000);
      assert.ok(Date.now() - t0 < 20_000);

      // The other session and its sandbox are untouched.
      const still = await call(b.client, 'sandbox_exec', { sandbox_id: kept.structuredContent.sandbox_id, command: 'echo alive' });
      assert.equal(still.structuredContent?.stdout, 'alive\n', resultText(still));
      // And new sessions are served.
      const c = await srv.connect();
      assert.deepEqual((await call(c.client, 'sandbox_list', {})).structuredContent.sandboxes, []);
      assert.ok(victim.length >= 1);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('notifications/cancelled stops the call: its sandbox is usable again', async () => {
    // MCP cancellation: the receiver SHOULD stop processing a cancelled
    // request.  A `sleep 600` left running would hold the sandbox for ten
    // minutes, and every later call on it would wait behind it.
    const srv = await startHttpServer();
    try {
      const { client } = await srv.connect();
      const created = await call(client, 'sandbox_create', {});
      const id = created.structuredContent.sandbox_id;
      const ac = new AbortController();
      const long = call(client, 'sandbox_exec', { sandbox_id: id, command: 'sleep 600' }, { signal: ac.signal }).catch((e) => e);
      await sleep(1_500);
      ac.abort('the user pressed stop');
      assert.ok((await long) instanceof Error);
      const next = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo again' }, { timeout: 15_000 })
        .catch((e) => ({ isError: true, content: [{ type: 'text', text: String(e) }] }));
      assert.equal(next.structuredContent?.stdout, 'again\n', `the next call on the sandbox: ${resultText(next)}`);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('over HTTP: stopping the server with SIGTERM during a call leaves no QEMU', async () => {
    const srv = await startHttpServer();
    try {
      const { client } = await srv.connect();
      const created = await call(client, 'sandbox_create', {});
      const id = created.structuredContent.sandbox_id;
      const long = call(client, 'sandbox_exec', { sandbox_id: id, command: 'sleep 600' }).catch((e) => e);
      await sleep(1_000);
      const q = srv.qemu();
      assert.equal(q.length, 1);
      process.kill(srv.pid, 'SIGTERM');
      await waitFor('the server to exit on SIGTERM', () => !alive(srv.pid), 15_000);
      await waitFor('its QEMU to be gone', () => q.every((p) => !alive(p)), 15_000);
      // The server is gone; the SDK would wait out the call's timeout.
      await client.close();
      await long;
    } finally {
      for (const c of srv.clients) await c.client.close().catch(() => {});
      srv.clients.length = 0;
      await srv.stop();
      srv.cleanup();
    }
  });

  it('over stdio: closing stdin during a call ends the server and its VMs', async () => {
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir));
    try {
      await lc.initialize();
      const created = await lc.request(2, 'tools/call', { name: 'sandbox_create', arguments: {} }, 120_000);
      assert.equal(created.result?.isError, false, JSON.stringify(created));
      const id = created.result.structuredContent.sandbox_id;
      const q = qemuChildren(lc.pid);
      assert.equal(q.length, 1, 'one QEMU for the sandbox');
      lc.send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'sandbox_exec', arguments: { sandbox_id: id, command: 'sleep 600' } } });
      await sleep(1_500);
      const t0 = Date.now();
      lc.proc.stdin.end();
      const exit = await Promise.race([lc.exited, sleep(15_000).then(() => ({ code: 'still running after 15 s' }))]);
      assert.equal(exit.code, 0, 'the server exits cleanly when its client closes stdin');
      assert.ok(Date.now() - t0 < 15_000);
      await waitFor('its QEMU to be gone', () => q.every((p) => !alive(p)), 5_000);
    } finally {
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('over stdio: a client killed outright (SIGKILL of the server\'s peer) leaves no QEMU', async () => {
    // The stdio client dies: stdin hits EOF and stdout breaks.  Same end.
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir));
    try {
      await lc.initialize();
      const created = await lc.request(2, 'tools/call', { name: 'sandbox_create', arguments: {} }, 120_000);
      assert.equal(created.result?.isError, false, JSON.stringify(created));
      const q = qemuChildren(lc.pid);
      assert.equal(q.length, 1);
      lc.proc.stdout.destroy();
      lc.proc.stdin.destroy();
      const exit = await Promise.race([lc.exited, sleep(15_000).then(() => ({ code: 'still running after 15 s' }))]);
      assert.notEqual(exit.code, 'still running after 15 s');
      await waitFor('its QEMU to be gone', () => q.every((p) => !alive(p)), 5_000);
    } finally {
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
