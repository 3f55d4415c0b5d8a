// SPDX-License-Identifier: Apache-2.0
//
// Admission counts every VM of a server, sandbox_run's one-shot VMs
// included (issue 8: sandbox_run used to boot outside --max-sandboxes), and
// paths in the guest must be absolute (issue 8: `etc/x` slipped past a rule
// on `/etc/**`).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { call, resultText, startStdio } from './lib.mjs';

// /etc/** is red for the file tools; everything else green.
const ETC_POLICY = {
  version: 1,
  comment: 'admission and path tests',
  default: { verdict: 'red', risk: 'high', reason: 'no rule covers this action' },
  rules: [
    {
      name: 'etc-red', tool: ['sandbox_fs_write', 'sandbox_fs_read'],
      match: { path: { glob: '/etc/**' } },
      verdict: 'red', risk: 'high', reason: 'the test policy guards /etc',
    },
    { name: 'rest', tool: '*', verdict: 'green', risk: 'low', reason: 'the test allows the rest' },
  ],
};

describe('admission and paths', { timeout: 300_000 }, () => {
  it('sandbox_run counts against --max-sandboxes', async () => {
    const srv = await startStdio({ extra: ['--max-sandboxes', '1'] });
    try {
      const { client } = srv;
      const created = await call(client, 'sandbox_create', {});
      assert.equal(created.isError, false, resultText(created));
      const run = await call(client, 'sandbox_run', { command: 'echo booted' });
      assert.equal(run.isError, true, 'a one-shot VM over the limit must not boot');
      assert.match(resultText(run), /limit of 1 sandboxes/);
      assert.equal(srv.qemu().length, 1, 'no second QEMU was started');
      const second = await call(client, 'sandbox_create', {});
      assert.equal(second.isError, true);
      assert.match(resultText(second), /limit/);
      // The budget comes back when the sandbox goes.
      await call(client, 'sandbox_destroy', { sandbox_id: created.structuredContent.sandbox_id });
      const again = await call(client, 'sandbox_run', { command: 'echo booted' });
      assert.equal(again.isError, false, resultText(again));
      assert.equal(again.structuredContent.stdout, 'booted\n');
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('memory is a host-wide budget over all VMs', async () => {
    // One 256 MiB guest + a 64 MiB writable layer (guest RAM too) + 192 MiB
    // VMM overhead = 512 MiB fits 600; a second does not, even a small one.
    const srv = await startStdio({ extra: ['--max-memory', '600'] });
    try {
      const { client } = srv;
      const created = await call(client, 'sandbox_create', { memory: 256, disk: 64 });
      assert.equal(created.isError, false, resultText(created));
      const run = await call(client, 'sandbox_run', { command: 'true', memory: 64, disk: 16 });
      assert.equal(run.isError, true);
      assert.match(resultText(run), /memory budget of 600 MiB/);
      assert.equal(srv.qemu().length, 1);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('relative paths are refused, never resolved past a rule', async () => {
    const srv = await startStdio({ policy: ETC_POLICY, approvalTimeout: 2 });
    try {
      const { client } = srv;
      const created = await call(client, 'sandbox_create', {});
      const id = created.structuredContent.sandbox_id;
      for (const path of ['etc/x', './etc/x', '../etc/x', 'tmp/../etc/x']) {
        const w = await call(client, 'sandbox_fs_write', { sandbox_id: id, path, content: 'pwned' });
        assert.equal(w.isError, true, `${path} must be refused`);
        assert.match(resultText(w), /must be an absolute path/);
      }
      const cwd = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'pwd', cwd: 'etc' });
      assert.equal(cwd.isError, true);
      assert.match(resultText(cwd), /cwd must be an absolute path/);
      const probe = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'test -e /etc/x; echo $?' });
      assert.equal(probe.structuredContent.stdout, '1\n', 'nothing landed in /etc');
      // The absolute spelling is red, and with no human it times out.
      const abs = await call(client, 'sandbox_fs_write', { sandbox_id: id, path: '/etc/x', content: 'pwned' });
      assert.equal(abs.isError, true);
      assert.match(resultText(abs), /not approved in time/);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
});
