// SPDX-License-Identifier: Apache-2.0
//
// MCP benchmark: the round trip of `tools/call sandbox_exec` with `true` in
// an existing sandbox, over stdio and over Streamable HTTP, with the official
// MCP SDK as the client; `ping` over the same session as the peer (the cost
// of the protocol alone); and the server's own RSS with 10 idle sandboxes.
//
//   bench/run-mcp.sh [RUNS]     (after scripts/test.sh has installed tests/mcp)

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const LG = process.env.LUMINAGUARD;
const RUNS = Number(process.env.RUNS || 30);
const dir = mkdtempSync(join(tmpdir(), 'lgbench-'));
const common = ['--control-socket', join(dir, 'ctl.sock'), '--audit-log', join(dir, 'audit.jsonl')];

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const opts = { timeout: 300_000 };

async function measure(client, label) {
  const { structuredContent: sb } = await client.callTool(
    { name: 'sandbox_create', arguments: {} }, undefined, opts);
  const exec = [], ping = [];
  for (let i = 0; i < RUNS; i++) {
    let t = process.hrtime.bigint();
    const r = await client.callTool(
      { name: 'sandbox_exec', arguments: { sandbox_id: sb.sandbox_id, argv: ['true'] } }, undefined, opts);
    exec.push(Number(process.hrtime.bigint() - t) / 1e6);
    if (r.isError || r.structuredContent.exit_code !== 0) throw new Error(`exec failed: ${JSON.stringify(r)}`);
    t = process.hrtime.bigint();
    await client.ping();
    ping.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  console.log(`${label}: sandbox_exec true median ${median(exec).toFixed(2)} ms, ` +
    `ping median ${median(ping).toFixed(2)} ms, exec/ping ${(median(exec) / median(ping)).toFixed(1)} ` +
    `(${RUNS} runs)`);
  return sb.sandbox_id;
}

// stdio
{
  const transport = new StdioClientTransport({ command: LG, args: ['mcp', ...common], stderr: 'inherit' });
  const client = new Client({ name: 'bench', version: '1' });
  await client.connect(transport);
  await measure(client, 'stdio');
  const pid = transport.pid;
  const before = rssKiB(pid);
  for (let i = 0; i < 9; i++) await client.callTool({ name: 'sandbox_create', arguments: {} }, undefined, opts);
  const after = rssKiB(pid);
  console.log(`server RSS: ${(before / 1024).toFixed(1)} MiB with 1 sandbox, ${(after / 1024).toFixed(1)} MiB ` +
    `with 10 idle sandboxes (the server process only; each VM is its own QEMU process)`);
  await client.close();
}

// Streamable HTTP
{
  const srv = spawn(LG, ['mcp', '--http', '127.0.0.1:0', ...common], { stdio: ['ignore', 'ignore', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    srv.stderr.on('data', (d) => {
      buf += d;
      const m = /listening on .* \(port (\d+)\)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    srv.on('exit', () => reject(new Error(`server exited: ${buf}`)));
  });
  const client = new Client({ name: 'bench', version: '1' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`)));
  await measure(client, 'http');
  await client.close();
  srv.kill('SIGTERM');
  await new Promise((r) => srv.on('exit', r));
}
rmSync(dir, { recursive: true, force: true });
