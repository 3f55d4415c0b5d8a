// SPDX-License-Identifier: Apache-2.0
//
// A guest that ends itself does not take its sandbox with it (issue 8: a
// green `poweroff -f` dropped a dirty sandbox whose sandbox_destroy needs a
// human).  Commands run without CAP_SYS_BOOT, so `poweroff -f` fails; a
// guest that still goes away (sysrq, a crash) leaves its sandbox listed as
// "lost", with the reason, its VM torn down, the loss audited, and removing
// it is still a sandbox_destroy under the policy.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { call, readAudit, resultText, startStdio } from './lib.mjs';

describe('a guest that ends itself', { timeout: 300_000 }, () => {
  it('cannot power off, and a lost sandbox stays until a destroy', async () => {
    // The built-in policy: exec green, destroying a dirty sandbox red.
    const srv = await startStdio({ policy: null, approvalTimeout: 2 });
    try {
      const { client } = srv;
      // busybox's poweroff/reboot/halt make the reboot(2) call themselves
      // (Debian's need systemd), so the tiny image is the one that tries.
      const created = await call(client, 'sandbox_create', { image: 'tiny' });
      assert.equal(created.isError, false, resultText(created));
      const id = created.structuredContent.sandbox_id;
      const w = await call(client, 'sandbox_fs_write', { sandbox_id: id, path: '/tmp/work.txt', content: 'work' });
      assert.equal(w.isError, false, resultText(w));

      for (const cmd of ['poweroff -f', 'reboot -f', 'halt -f']) {
        const off = await call(client, 'sandbox_exec', { sandbox_id: id, command: `${cmd}; echo "rc=$?"` });
        assert.equal(off.isError, false, `${cmd}: ${resultText(off)}`);
        assert.match(off.structuredContent.stdout, /rc=[1-9]/, `${cmd} must fail in the guest`);
      }
      const alive = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'cat /tmp/work.txt' });
      assert.equal(alive.structuredContent?.stdout, 'work', 'the sandbox and its work survive');

      // A way out the agent cannot close: the kernel's sysrq poweroff.
      const gone = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo o > /proc/sysrq-trigger; sleep 30' });
      assert.equal(gone.isError, true, resultText(gone));
      assert.deepEqual(srv.qemu(), [], 'the lost VM is torn down');

      const list = (await call(client, 'sandbox_list', {})).structuredContent.sandboxes;
      assert.equal(list.length, 1, 'the sandbox did not vanish');
      assert.equal(list[0].sandbox_id, id);
      assert.equal(list[0].state, 'lost');
      // Found by the failed exec (the agent stopped answering) or by the
      // service's watcher (the VMM exited), whichever came first.
      assert.match(list[0].lost_reason, /stopped answering|VMM exited/);
      assert.equal(list[0].dirty, true);

      const later = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'true' });
      assert.equal(later.isError, true);
      assert.match(resultText(later), /is lost/);

      // Removing it is a destroy of a dirty sandbox: red, and no human answers.
      const destroy = await call(client, 'sandbox_destroy', { sandbox_id: id });
      assert.equal(destroy.isError, true, resultText(destroy));
      assert.match(resultText(destroy), /not approved in time/);
      assert.equal((await call(client, 'sandbox_list', {})).structuredContent.sandboxes.length, 1);

      const lost = readAudit(srv.audit).filter((e) => e.type === 'sandbox_lost');
      assert.equal(lost.length, 1, 'the loss is audited once');
      assert.equal(lost[0].sandbox_id, id);
      assert.equal(lost[0].dirty, true);
      const req = readAudit(srv.audit).filter((e) => e.type === 'request' && e.tool === 'sandbox_destroy');
      assert.equal(req.at(-1).context.sandbox_lost, true, 'the policy sees that it is lost');
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
});
