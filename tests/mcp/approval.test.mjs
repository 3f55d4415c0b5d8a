// SPDX-License-Identifier: Apache-2.0
//
// The approval cliff seen from an MCP client: a red call asks the client
// (elicitation) when it can, waits for `luminaguard approvals` otherwise,
// is denied when nobody answers in time, and never runs unless approved.
// The audit log records all of it and verifies.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { rmSync } from 'node:fs';
import { join } from 'node:path';

import {
  LineClient, alive, call, hasAuditCommand, lg, markerProbe, readAudit, redCommand, resultText,
  serverArgs, startHttpServer, startStdio, tempDir, waitFor,
} from './lib.mjs';

// The decision of each approval, in order: {id: decision}.  The log may
// hold more than one decision entry per approval (the broker's and the
// server's); they must agree.
function decisions(file) {
  const out = new Map();
  for (const e of readAudit(file).filter((x) => x.type === 'decision')) {
    const prev = out.get(e.approval);
    if (prev) assert.equal(e.decision, prev.decision, `decision entries of ${e.approval} disagree`);
    else out.set(e.approval, e);
  }
  return [...out.values()];
}

async function newSandbox(client) {
  const r = await call(client, 'sandbox_create', {});
  assert.equal(r.isError, false, resultText(r));
  return r.structuredContent.sandbox_id;
}

// Proves whether the red command with this marker ran (with a green call).
async function ran(client, id, marker) {
  const r = await call(client, 'sandbox_exec', { sandbox_id: id, command: markerProbe(marker) });
  assert.equal(r.isError, false, resultText(r));
  return r.structuredContent.stdout.trim() === '0';
}

async function pendingApprovals(socket) {
  const r = await lg(['approvals', 'list', '--socket', socket, '--json']);
  assert.equal(r.code, 0, `approvals list: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function waitPending(socket, marker) {
  return waitFor(`approval of ${marker} in \`approvals list\``, async () => {
    const p = await pendingApprovals(socket);
    return p.find((x) => (x.card?.summary ?? '').includes(marker));
  }, 20_000, 200);
}

// The elicitation cases, on one server and one sandbox per transport.
function elicitationSuite(kind) {
  const ctx = {};
  before(async () => {
    if (kind === 'stdio') {
      ctx.srv = await startStdio({ elicitation: true, clientName: 'lg-approver' });
      ctx.client = ctx.srv.client;
      ctx.box = ctx.srv.box;
    } else {
      ctx.srv = await startHttpServer();
      ({ client: ctx.client, box: ctx.box } = await ctx.srv.connect({ elicitation: true, clientName: 'lg-approver' }));
    }
    ctx.id = await newSandbox(ctx.client);
  });
  after(async () => {
    if (ctx.srv && alive(ctx.srv.pid)) await ctx.srv.stop();
    ctx.srv?.cleanup();
  });
  const red = (marker) => call(ctx.client, 'sandbox_exec', { sandbox_id: ctx.id, command: redCommand(marker) });

  it('accept with approve=true: the command runs', async () => {
    ctx.box.answer = { action: 'accept', content: { approve: true } };
    const n = ctx.box.requests.length;
    const ok = await red('red-a');
    assert.equal(ok.isError, false, resultText(ok));
    assert.equal(ok.structuredContent.stdout, 'ran-red-a\n');
    assert.equal(ctx.box.requests.length, n + 1, 'one elicitation for one red call');
    const asked = ctx.box.requests[n];
    assert.ok(asked.message.includes(redCommand('red-a')), `the message names the command: ${asked.message}`);
    assert.match(asked.message, /ap-[0-9a-f]+/, 'the message names the approval');
    assert.equal(asked.requestedSchema?.type, 'object');
    assert.equal(asked.requestedSchema.properties?.approve?.type, 'boolean');
    assert.equal(await ran(ctx.client, ctx.id, 'red-a'), true);
    await call(ctx.client, 'sandbox_exec', { sandbox_id: ctx.id, command: 'true' });
    assert.equal(ctx.box.requests.length, n + 1, 'green calls are not elicited');
  });

  it('decline: denied, and the command did not run', async () => {
    ctx.box.answer = { action: 'decline' };
    const no = await red('red-d');
    assert.equal(no.isError, true, resultText(no));
    assert.match(resultText(no), /denied/);
    assert.equal(no.structuredContent, undefined, 'a denial carries no structured output');
    assert.equal(await ran(ctx.client, ctx.id, 'red-d'), false, 'a declined command did not run');
  });

  it('accept with approve=false (and a reason), or cancel: denied', async () => {
    ctx.box.answer = { action: 'accept', content: { approve: false, reason: 'looks fishy' } };
    const no2 = await red('red-f');
    assert.equal(no2.isError, true, 'accept with approve=false is a no');
    assert.match(resultText(no2), /looks fishy/);
    assert.equal(await ran(ctx.client, ctx.id, 'red-f'), false);
    ctx.box.answer = { action: 'cancel' };
    const no3 = await red('red-c');
    assert.equal(no3.isError, true, 'cancel is a no');
    assert.equal(await ran(ctx.client, ctx.id, 'red-c'), false);
  });

  it('decided out of band while the client is asked: the call runs, the question is withdrawn', async () => {
    // The client never answers; a human approves with `luminaguard
    // approvals`; the server cancels its elicitation (notifications/cancelled).
    ctx.box.answer = 'hang';
    const n = ctx.box.requests.length;
    const pending = red('red-h');
    const item = await waitPending(ctx.srv.socket, 'red-h');
    await waitFor('the elicitation to reach the client', () => ctx.box.requests.length === n + 1, 10_000);
    const ap = await lg(['approvals', 'approve', item.id, '--socket', ctx.srv.socket]);
    assert.equal(ap.code, 0, ap.stderr);
    const hung = await pending;
    assert.equal(hung.isError, false, resultText(hung));
    assert.equal(hung.structuredContent.stdout, 'ran-red-h\n');
    await waitFor('notifications/cancelled for the elicitation', () => ctx.box.cancelled.length === 1, 5_000);
  });

  it('the audit log has every request, decision and outcome, and verifies', async (t) => {
    assert.equal((await call(ctx.client, 'sandbox_destroy', { sandbox_id: ctx.id })).isError, false);
    assert.deepEqual(ctx.srv.qemu(), []);
    await ctx.srv.stop();
    await checkAudit(t, ctx.srv.audit);
    if (kind === 'stdio') {
      const dec = readAudit(ctx.srv.audit).filter((e) => e.type === 'decision');
      assert.ok(dec.some((e) => e.decision === 'approved' && /lg-approver/.test(e.decider ?? '')),
        `the decider of an elicitation names the client: ${JSON.stringify(dec)}`);
    }
  });
}

async function checkAudit(t, file) {
  const entries = readAudit(file);
  const types = new Set(entries.map((e) => e.type));
  for (const ty of ['request', 'decision', 'outcome']) assert.ok(types.has(ty), `the audit log has ${ty} entries`);
  const decided = decisions(file).map((e) => e.decision);
  assert.deepEqual(decided, ['approved', 'denied', 'denied', 'denied', 'approved'], 'approve, decline, approve=false, cancel, out of band');
  assert.ok(entries.some((e) => e.type === 'outcome' && e.outcome === 'ok' && e.exit_code === 0), 'an ok outcome with its exit code');
  const reqs = entries.filter((e) => e.type === 'request' && e.verdict === 'red');
  assert.ok(reqs.some((e) => e.args?.command === redCommand('red-d')), 'the denied request is in the log');
  assert.ok(entries.some((e) => e.type === 'outcome' && /denied/.test(e.outcome)), 'a denial outcome is logged');
  entries.forEach((e, i) => assert.equal(e.seq, i + 1, 'seq counts up from 1'));
  if (!(await hasAuditCommand())) {
    t.diagnostic('`luminaguard audit` is not in `luminaguard --help`: audit verify skipped');
    return;
  }
  const v = await lg(['audit', 'verify', file]);
  assert.equal(v.code, 0, `audit verify: ${v.stdout}${v.stderr}`);
}

describe('approval by elicitation over stdio', { timeout: 300_000 }, () => elicitationSuite('stdio'));
describe('approval by elicitation over Streamable HTTP', { timeout: 300_000 }, () => elicitationSuite('http'));

describe('approval by elicitation: edge cases', { timeout: 120_000 }, () => {
  it('a 2025-03-26 session is never elicited, even if it claims the capability', async () => {
    // Elicitation exists from 2025-06-18 on.  No VM needed: the red
    // sandbox_run is denied when the 1 s approval timeout ends.
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir, { approvalTimeout: 1 }));
    try {
      const init = await lc.request(1, 'initialize', {
        protocolVersion: '2025-03-26', capabilities: { elicitation: {} }, clientInfo: { name: 'old', version: '0' },
      });
      assert.equal(init.result?.protocolVersion, '2025-03-26');
      lc.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      const r = await lc.request(2, 'tools/call', { name: 'sandbox_run', arguments: { command: redCommand('old') } }, 15_000);
      assert.equal(r.result?.isError, true, JSON.stringify(r));
      assert.match(r.result.content[0].text, /not approved in time/);
      assert.deepEqual(lc.messages.filter((m) => m.method === 'elicitation/create'), []);
    } finally {
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a client that cannot elicit after all (error response) still gets a human out of band', async () => {
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir));
    try {
      await lc.initialize({ elicitation: {} });
      lc.send({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'sandbox_run', arguments: { command: redCommand('err') } } });
      const el = await lc.take((m) => m.method === 'elicitation/create', 'an elicitation request');
      assert.ok(Number.isInteger(el.id) || typeof el.id === 'string', 'a server request has an id');
      assert.ok(el.params.message.includes(redCommand('err')));
      lc.send({ jsonrpc: '2.0', id: el.id, error: { code: -32601, message: 'no UI here' } });
      const item = await waitPending(join(dir, 'ctl.sock'), 'err');
      const dn = await lg(['approvals', 'deny', item.id, '--socket', join(dir, 'ctl.sock')]);
      assert.equal(dn.code, 0, dn.stderr);
      const r = await lc.take((m) => m.id === 2, 'the tools/call result', 15_000);
      assert.equal(r.result?.isError, true, JSON.stringify(r));
      assert.match(r.result.content[0].text, /denied/);
    } finally {
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('approval without elicitation', { timeout: 300_000 }, () => {
  it('nobody answers: denied when the approval timeout ends, and it did not run', async () => {
    const srv = await startStdio({ approvalTimeout: 2 });
    try {
      const id = await newSandbox(srv.client);
      const t0 = Date.now();
      const r = await call(srv.client, 'sandbox_exec', { sandbox_id: id, command: redCommand('red-t') });
      const took = Date.now() - t0;
      assert.equal(r.isError, true, resultText(r));
      assert.match(resultText(r), /not approved in time/);
      assert.ok(took >= 1_500 && took <= 10_000, `denied after ${took} ms (timeout 2 s)`);
      assert.equal(await ran(srv.client, id, 'red-t'), false);
      assert.deepEqual(await pendingApprovals(srv.socket), [], 'a timed-out request is no longer pending');
      const dec = decisions(srv.audit);
      assert.equal(dec.length, 1);
      assert.equal(dec[0].decision, 'timeout');
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('`luminaguard approvals` approves and denies (with a reason)', async () => {
    const srv = await startStdio();
    try {
      const { client } = srv;
      const id = await newSandbox(client);
      assert.deepEqual(await pendingApprovals(srv.socket), []);

      const p1 = call(client, 'sandbox_exec', { sandbox_id: id, command: redCommand('red-o') });
      const item = await waitPending(srv.socket, 'red-o');
      assert.match(item.id, /^ap-[0-9a-f]{12}$/);
      assert.equal(item.card.tool, 'sandbox_exec');
      assert.equal(item.card.where, id);
      assert.equal(item.card.risk, 'high');
      assert.equal(item.card.rule, 'test-dangerous');
      assert.ok(item.card.summary.includes(redCommand('red-o')));
      const human = await lg(['approvals', 'list', '--socket', srv.socket]);
      assert.equal(human.code, 0);
      assert.ok(human.stdout.includes(item.id), human.stdout);
      const ap = await lg(['approvals', 'approve', item.id, '--socket', srv.socket]);
      assert.equal(ap.code, 0, ap.stderr);
      const r1 = await p1;
      assert.equal(r1.isError, false, resultText(r1));
      assert.equal(r1.structuredContent.stdout, 'ran-red-o\n');
      // The first decision wins: a second one is refused.
      const twice = await lg(['approvals', 'deny', item.id, '--socket', srv.socket]);
      assert.notEqual(twice.code, 0, 'deciding a decided request fails');

      const p2 = call(client, 'sandbox_exec', { sandbox_id: id, command: redCommand('red-x') });
      const item2 = await waitPending(srv.socket, 'red-x');
      const dn = await lg(['approvals', 'deny', item2.id, '--socket', srv.socket, '--reason', 'not on a Friday']);
      assert.equal(dn.code, 0, dn.stderr);
      const r2 = await p2;
      assert.equal(r2.isError, true, resultText(r2));
      assert.match(resultText(r2), /denied/);
      assert.match(resultText(r2), /not on a Friday/);
      assert.equal(await ran(client, id, 'red-x'), false, 'a denied command did not run');
      assert.equal(await ran(client, id, 'red-o'), true);

      const unknown = await lg(['approvals', 'approve', 'ap-000000000000', '--socket', srv.socket]);
      assert.equal(unknown.code, 1, 'approving an unknown id fails');

      const dec = decisions(srv.audit);
      assert.deepEqual(dec.map((e) => e.decision), ['approved', 'denied']);
      assert.equal(dec[1].reason, 'not on a Friday');
      assert.equal(typeof dec[1].decider, 'string');
      await call(client, 'sandbox_destroy', { sandbox_id: id });
      assert.deepEqual(srv.qemu(), []);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('a red call waiting when the client goes away is cancelled, not run', async () => {
    const srv = await startStdio();
    try {
      const p = call(srv.client, 'sandbox_run', { command: redCommand('gone') }).catch((e) => e);
      const item = await waitPending(srv.socket, 'gone');
      assert.ok(item);
      await srv.stop(); // closes stdin: the session ends
      await p;
      const entries = readAudit(srv.audit);
      const dec = decisions(srv.audit);
      assert.equal(dec.length, 1, JSON.stringify(entries));
      assert.equal(dec[0].decision, 'cancelled');
      assert.ok(!entries.some((e) => e.type === 'outcome' && e.outcome === 'ok'), 'nothing ran');
    } finally {
      srv.cleanup();
    }
  });
});

