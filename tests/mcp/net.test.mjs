// SPDX-License-Identifier: Apache-2.0
//
// A sandbox's network under the MCP server: the guest reaches an allowed
// host through its proxy; a host not on the allowlist is a red action that
// the client is asked about (elicitation); a no refuses the connection, a
// yes allows that destination for this sandbox only; every connection ends
// in an audit event.  The test hosts are HTTP servers of this test on the
// host's loopback, which only an explicit address entry lets a guest reach.

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { alive, call, readAudit, resultText, startStdio } from './lib.mjs';

function httpServer(body) {
  return new Promise((resolve) => {
    const s = createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(body);
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

describe('sandbox network through the egress proxy', { timeout: 300_000 }, () => {
  const ctx = {};
  before(async () => {
    ctx.a = await httpServer('hello-from-a\n');
    ctx.b = await httpServer('hello-from-b\n');
    ctx.portA = ctx.a.address().port;
    ctx.portB = ctx.b.address().port;
    ctx.srv = await startStdio({
      elicitation: true, clientName: 'lg-net-approver',
      extra: ['--net', `allow=127.0.0.1:${ctx.portA}`],
    });
    const r = await call(ctx.srv.client, 'sandbox_create', {});
    assert.equal(r.isError, false, resultText(r));
    ctx.id = r.structuredContent.sandbox_id;
  });
  after(async () => {
    if (ctx.srv && alive(ctx.srv.pid)) await ctx.srv.stop();
    ctx.srv?.cleanup();
    ctx.a?.close();
    ctx.b?.close();
  });
  const fetch = (port) => call(ctx.srv.client, 'sandbox_exec', {
    sandbox_id: ctx.id, command: `wget -q -O- http://127.0.0.1:${port}/ 2>&1; echo "rc=$?"`,
  });

  it('an allowed host is reached without asking anyone', async () => {
    const n = ctx.srv.box.requests.length;
    const r = await fetch(ctx.portA);
    assert.equal(r.isError, false, resultText(r));
    assert.equal(r.structuredContent.stdout, 'hello-from-a\nrc=0\n');
    assert.equal(ctx.srv.box.requests.length, n, 'no elicitation for an allowed host');
  });

  it('a host not on the list is asked about; a no refuses it', async () => {
    ctx.srv.box.answer = { action: 'decline' };
    const n = ctx.srv.box.requests.length;
    const r = await fetch(ctx.portB);
    assert.equal(r.isError, false, resultText(r));
    assert.doesNotMatch(r.structuredContent.stdout, /hello-from-b/);
    assert.match(r.structuredContent.stdout, /rc=1/);
    assert.equal(ctx.srv.box.requests.length, n + 1, 'one elicitation');
    assert.ok(ctx.srv.box.requests[n].message.includes(`127.0.0.1:${ctx.portB}`),
      `the question names the destination: ${ctx.srv.box.requests[n].message}`);
  });

  it('a yes allows it for this sandbox, and is not asked again', async () => {
    ctx.srv.box.answer = { action: 'accept', content: { approve: true } };
    const n = ctx.srv.box.requests.length;
    const r = await fetch(ctx.portB);
    assert.equal(r.structuredContent.stdout, 'hello-from-b\nrc=0\n', resultText(r));
    assert.equal(ctx.srv.box.requests.length, n + 1);
    ctx.srv.box.answer = { action: 'decline' };
    const again = await fetch(ctx.portB);
    assert.equal(again.structuredContent.stdout, 'hello-from-b\nrc=0\n', resultText(again));
    assert.equal(ctx.srv.box.requests.length, n + 1, 'an approved destination is not asked again');
  });

  it('every connection is in the audit log', async () => {
    const net = readAudit(ctx.srv.audit).filter((e) => e.type === 'net');
    const to = (port, verdict) => net.filter((e) => e.port === port && e.verdict === verdict && e.sandbox === ctx.id);
    assert.equal(to(ctx.portA, 'allowed').length, 1, JSON.stringify(net));
    assert.equal(to(ctx.portB, 'denied').length, 1, JSON.stringify(net));
    assert.equal(to(ctx.portB, 'allowed').length, 2, JSON.stringify(net));
    assert.ok(net.every((e) => e.host === '127.0.0.1' && e.session), JSON.stringify(net));
  });

  it('the server stops and leaves no VM behind', async () => {
    const q = ctx.srv.qemu();
    assert.ok(q.length >= 1, 'the sandbox has a VMM');
    await ctx.srv.stop();
    for (const pid of q) assert.equal(alive(pid), false, `VMM ${pid} is gone`);
  });
});
