// SPDX-License-Identifier: Apache-2.0
//
// Root file system images over MCP (issue 9): sandbox_create and sandbox_run
// take image names, a disk size and a user; the default image is a Debian
// root with python3; each sandbox's writable layer is its own.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { call, resultText, startStdio } from './lib.mjs';

describe('root file system images', { timeout: 300_000 }, () => {
  it('python3, a private layer per sandbox, --user and a full layer', async () => {
    const srv = await startStdio();
    try {
      const { client } = srv;
      const [a, b] = await Promise.all([
        call(client, 'sandbox_create', { disk: 64 }),
        call(client, 'sandbox_create', { image: 'default', disk: 32 }),
      ]);
      assert.equal(a.isError, false, resultText(a));
      assert.equal(b.isError, false, resultText(b));
      const A = a.structuredContent.sandbox_id;
      const B = b.structuredContent.sandbox_id;

      // A file written into /usr/lib by A (the base image's directory) is A's alone.
      const w = await call(client, 'sandbox_fs_write', {
        sandbox_id: A, path: '/usr/lib/python3/dist-packages/lgmod.py', content: 'X = 6 * 7\n',
      });
      assert.equal(w.isError, false, resultText(w));
      const inA = await call(client, 'sandbox_exec', { sandbox_id: A, command: 'python3 -c "import lgmod; print(lgmod.X)"' });
      assert.equal(inA.structuredContent?.stdout, '42\n', resultText(inA));
      const inB = await call(client, 'sandbox_exec', { sandbox_id: B, command: 'python3 -c "import lgmod"' });
      assert.notEqual(inB.structuredContent?.exit_code, 0, 'B must not see A\'s module');
      assert.match(inB.structuredContent?.stderr ?? '', /No module named 'lgmod'/);

      // The layer's size is the disk argument; filling it is ENOSPC in the guest, and B lives on.
      const full = await call(client, 'sandbox_exec', {
        sandbox_id: B, command: 'df -k / | tail -1; dd if=/dev/zero of=/fill bs=1M count=64 2>&1; echo "dd=$?"',
      });
      assert.match(full.structuredContent?.stdout ?? '', /overlay\s+32768\s/);
      assert.match(full.structuredContent?.stdout ?? '', /No space left on device/);
      assert.match(full.structuredContent?.stdout ?? '', /dd=1/);
      const again = await call(client, 'sandbox_exec', { sandbox_id: B, command: 'rm /fill && echo ok' });
      assert.equal(again.structuredContent?.stdout, 'ok\n', resultText(again));

      const who = await call(client, 'sandbox_exec', { sandbox_id: A, command: 'echo "$(id -u) $HOME"', user: 'nobody' });
      assert.equal(who.structuredContent?.stdout, '65534 /nonexistent\n', resultText(who));
      const bad = await call(client, 'sandbox_exec', { sandbox_id: A, command: 'true', user: '../x' });
      assert.equal(bad.isError, true);

      const run = await call(client, 'sandbox_run', { command: 'python3 -c "print(6*7)"; cat /etc/debian_version >/dev/null && echo debian', disk: 16 });
      assert.equal(run.structuredContent?.stdout, '42\ndebian\n', resultText(run));

      const tiny = await call(client, 'sandbox_run', { command: 'command -v python3 || echo none', image: 'tiny' });
      assert.equal(tiny.structuredContent?.stdout, 'none\n', resultText(tiny));

      const missing = await call(client, 'sandbox_run', { command: 'true', image: 'no-such-image' });
      assert.equal(missing.isError, true);
      assert.match(resultText(missing), /luminaguard image build/);
      for (const id of [A, B]) await call(client, 'sandbox_destroy', { sandbox_id: id });
      assert.deepEqual(srv.qemu(), []);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
});
