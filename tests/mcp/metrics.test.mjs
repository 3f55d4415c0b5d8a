// SPDX-License-Identifier: Apache-2.0
//
// GET /metrics on the Streamable HTTP transport (issue 10, a first step):
// the Prometheus text the server renders moves when sandboxes boot, run
// commands and are approved or refused; it is guarded like /mcp.

import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { call, redCommand, resultText, startHttpServer, tempDir } from './lib.mjs';

// One sample's value, e.g. sample(text, 'luminaguard_spawn_seconds_count{path="boot"}').
function sample(text, series) {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('metrics', { timeout: 300_000 }, () => {
  it('GET /metrics moves with spawns, execs and approvals', async () => {
    const srv = await startHttpServer({ approvalTimeout: 2 });
    const metricsUrl = `http://127.0.0.1:${srv.port}/metrics`;
    try {
      const first = await fetch(metricsUrl);
      assert.equal(first.status, 200);
      assert.match(first.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
      const t0 = await first.text();
      assert.match(t0, /^# TYPE luminaguard_spawn_seconds histogram$/m);
      assert.equal(sample(t0, 'luminaguard_spawn_seconds_count{path="boot"}'), 0);
      assert.equal(sample(t0, 'luminaguard_exec_seconds_count'), 0);

      const { client } = await srv.connect();
      const created = await call(client, 'sandbox_create', { image: 'tiny' });
      assert.equal(created.isError, false, resultText(created));
      const id = created.structuredContent.sandbox_id;
      const ran = await call(client, 'sandbox_exec', { sandbox_id: id, command: 'echo hi' });
      assert.equal(ran.structuredContent?.stdout, 'hi\n', resultText(ran));
      // A red command nobody answers: the approval times out (a no).
      const red = await call(client, 'sandbox_exec', { sandbox_id: id, command: redCommand('m1') });
      assert.equal(red.isError, true);

      const t1 = await (await fetch(metricsUrl)).text();
      assert.equal(sample(t1, 'luminaguard_spawn_seconds_count{path="boot"}'), 1, t1);
      assert.ok(sample(t1, 'luminaguard_spawn_seconds_sum{path="boot"}') > 0.01, t1);
      assert.equal(sample(t1, 'luminaguard_exec_seconds_count'), 1, t1);
      assert.equal(sample(t1, 'luminaguard_approvals_total{outcome="timeout"}'), 1, t1);
      assert.equal(sample(t1, 'luminaguard_sandboxes{state="ready"}'), 1, t1);

      await call(client, 'sandbox_destroy', { sandbox_id: id });
      const t2 = await (await fetch(metricsUrl)).text();
      assert.equal(sample(t2, 'luminaguard_sandboxes{state="ready"}'), 0, t2);

      const post = await fetch(metricsUrl, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      assert.equal(post.status, 405);
      const foreign = await fetch(metricsUrl, { headers: { origin: 'http://evil.example' } });
      assert.equal(foreign.status, 403);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('with --token-file, /metrics needs the bearer token like /mcp', async () => {
    const dir = tempDir();
    const token = 'lg-metrics-test-token-0123456789abcdef';
    writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
    const srv = await startHttpServer({ extra: ['--token-file', join(dir, 'token')] });
    const metricsUrl = `http://127.0.0.1:${srv.port}/metrics`;
    try {
      assert.equal((await fetch(metricsUrl)).status, 401);
      assert.equal((await fetch(metricsUrl, { headers: { authorization: 'Bearer wrong' } })).status, 401);
      const ok = await fetch(metricsUrl, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /^# TYPE luminaguard_exec_seconds histogram$/m);
    } finally {
      await srv.stop();
      srv.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
