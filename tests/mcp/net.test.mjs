// SPDX-License-Identifier: Apache-2.0
//
// A sandbox's network under the MCP server: the guest reaches an allowed
// host through its proxy; a host not on the allowlist is a red action that
// the client is asked about (elicitation); a no refuses the connection, a
// yes allows that destination for this sandbox only; every connection ends
// in an audit event.  The test hosts are HTTP servers of this test on the
// host's loopback, which only an address entry written on the host (the
// server's --net allow=) lets a guest reach: an approval never does.

import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { createServer } from 'node:http';
import { after, before, describe, it } from 'node:test';

import { alive, call, readAudit, resultText, startStdio } from './lib.mjs';

function httpServer(body) {
  return new Promise((resolve) => {
    const s = createServer((req, res) => {
      s.hits = (s.hits ?? 0) + 1;
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end(body);
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

// The approval cases ask about the name "localhost" (a name can be
// approved; a loopback address cannot): it must resolve here.
const localhostResolves = await lookup('localhost', { family: 4 })
  .then((a) => a.address === '127.0.0.1', () => false);
const needsLocalhost = localhostResolves ? {} : { skip: "'localhost' does not resolve to 127.0.0.1 here" };

describe('sandbox network through the egress proxy', { timeout: 300_000 }, () => {
  const ctx = {};
  before(async () => {
    ctx.a = await httpServer('hello-from-a\n');
    ctx.b = await httpServer('hello-from-b\n');
    ctx.c = await httpServer('hello-from-c\n');
    ctx.portA = ctx.a.address().port;
    ctx.portB = ctx.b.address().port;
    ctx.portC = ctx.c.address().port;
    // A by address (reached as such); B's address is written too, so that
    // an approved *name* for it can reach it; C is on no list at all.
    ctx.srv = await startStdio({
      elicitation: true, clientName: 'lg-net-approver',
      extra: ['--net', `allow=127.0.0.1:${ctx.portA},127.0.0.1:${ctx.portB}`],
    });
    // busybox's wget is the client (the Debian default image has none).
    const r = await call(ctx.srv.client, 'sandbox_create', { image: 'tiny' });
    assert.equal(r.isError, false, resultText(r));
    ctx.id = r.structuredContent.sandbox_id;
  });
  after(async () => {
    if (ctx.srv && alive(ctx.srv.pid)) await ctx.srv.stop();
    ctx.srv?.cleanup();
    ctx.a?.close();
    ctx.b?.close();
    ctx.c?.close();
  });
  const fetch = (host, port) => call(ctx.srv.client, 'sandbox_exec', {
    sandbox_id: ctx.id, command: `wget -q -O- http://${host}:${port}/ 2>&1; echo "rc=$?"`,
  });

  it('an allowed host is reached without asking anyone', async () => {
    const n = ctx.srv.box.requests.length;
    const r = await fetch('127.0.0.1', ctx.portA);
    assert.equal(r.isError, false, resultText(r));
    assert.equal(r.structuredContent.stdout, 'hello-from-a\nrc=0\n');
    assert.equal(ctx.srv.box.requests.length, n, 'no elicitation for an allowed host');
  });

  it('a host not on the list is asked about; a no refuses it', needsLocalhost, async () => {
    ctx.srv.box.answer = { action: 'decline' };
    const n = ctx.srv.box.requests.length;
    const r = await fetch('localhost', ctx.portB);
    assert.equal(r.isError, false, resultText(r));
    assert.doesNotMatch(r.structuredContent.stdout, /hello-from-b/);
    assert.match(r.structuredContent.stdout, /rc=1/);
    assert.equal(ctx.srv.box.requests.length, n + 1, 'one elicitation');
    const msg = ctx.srv.box.requests[n].message;
    assert.ok(msg.includes(`localhost:${ctx.portB}`), `the question names the destination: ${msg}`);
    assert.ok(msg.includes('this host itself'), `the question says what localhost is: ${msg}`);
  });

  it('a yes allows it for this sandbox, and is not asked again', needsLocalhost, async () => {
    ctx.srv.box.answer = { action: 'accept', content: { approve: true } };
    const n = ctx.srv.box.requests.length;
    const r = await fetch('localhost', ctx.portB);
    assert.equal(r.structuredContent.stdout, 'hello-from-b\nrc=0\n', resultText(r));
    assert.equal(ctx.srv.box.requests.length, n + 1);
    ctx.srv.box.answer = { action: 'decline' };
    const again = await fetch('localhost', ctx.portB);
    assert.equal(again.structuredContent.stdout, 'hello-from-b\nrc=0\n', resultText(again));
    assert.equal(ctx.srv.box.requests.length, n + 1, 'an approved destination is not asked again');
  });

  // Issue 8: a yes to 127.0.0.1:PORT used to open the host's loopback.
  it('no approval opens the host loopback', async () => {
    ctx.srv.box.answer = { action: 'accept', content: { approve: true } };
    const n = ctx.srv.box.requests.length;
    const r = await fetch('127.0.0.1', ctx.portC);
    assert.doesNotMatch(r.structuredContent.stdout, /hello-from-c/);
    assert.match(r.structuredContent.stdout, /rc=1/);
    assert.equal(ctx.srv.box.requests.length, n, 'a loopback address is refused without asking');
    if (localhostResolves) {
      const byName = await fetch('localhost', ctx.portC);
      assert.doesNotMatch(byName.structuredContent.stdout, /hello-from-c/);
      assert.equal(ctx.srv.box.requests.length, n + 1, 'a name is asked about');
    }
    assert.equal(ctx.c.hits ?? 0, 0, 'the loopback-only server saw no request');
  });

  it('every connection is in the audit log', async () => {
    const net = readAudit(ctx.srv.audit).filter((e) => e.type === 'net');
    const to = (port, verdict) => net.filter((e) => e.port === port && e.verdict === verdict && e.sandbox === ctx.id);
    assert.equal(to(ctx.portA, 'allowed').length, 1, JSON.stringify(net));
    assert.equal(to(ctx.portB, 'denied').length, localhostResolves ? 1 : 0, JSON.stringify(net));
    assert.equal(to(ctx.portB, 'allowed').length, localhostResolves ? 2 : 0, JSON.stringify(net));
    assert.equal(to(ctx.portC, 'denied').length, localhostResolves ? 2 : 1, JSON.stringify(net));
    assert.ok(to(ctx.portC, 'denied').every((e) => /loopback/.test(e.reason)), JSON.stringify(net));
    assert.ok(net.every((e) => ['127.0.0.1', 'localhost'].includes(e.host) && e.session), JSON.stringify(net));
  });

  it('the server stops and leaves no VM behind', async () => {
    const q = ctx.srv.qemu();
    assert.ok(q.length >= 1, 'the sandbox has a VMM');
    await ctx.srv.stop();
    for (const pid of q) assert.equal(alive(pid), false, `VMM ${pid} is gone`);
  });
});
