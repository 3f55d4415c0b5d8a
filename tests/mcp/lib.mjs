// SPDX-License-Identifier: Apache-2.0
//
// Helpers of the MCP protocol tests: start `luminaguard mcp` over stdio or
// Streamable HTTP with a private control socket and audit log, connect the
// official MCP SDK client (or a raw line client), and find the QEMU
// processes a server started, so that every test can prove it left none.

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

export const LG = process.env.LUMINAGUARD;
if (!LG) throw new Error('LUMINAGUARD (the luminaguard binary to test) is not set; see run.sh');

export const CALL_TIMEOUT_MS = 120_000; // a VM boot under TCG, with room to spare
export const PROTOCOL_VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26'];
export const TOOL_NAMES = [
  'sandbox_create', 'sandbox_exec', 'sandbox_run', 'sandbox_fs_read',
  'sandbox_fs_write', 'sandbox_fs_list', 'sandbox_destroy', 'sandbox_list',
];

// A command the test policy makes red: it leaves a marker behind, so a test
// can prove whether it ran.
export const redCommand = (marker) => `: dangerous; touch /tmp/${marker}; echo ran-${marker}`;
export const markerProbe = (marker) => `test -e /tmp/${marker}; echo $?`;

// Red: sandbox_exec/sandbox_run whose command mentions "dangerous".  Green:
// everything else (so that destroying a dirty sandbox needs no approval).
export const TEST_POLICY = {
  version: 1,
  comment: 'MCP protocol tests',
  default: { verdict: 'red', risk: 'high', reason: 'no rule covers this action' },
  rules: [
    {
      name: 'test-dangerous', tool: ['sandbox_exec', 'sandbox_run'],
      match: { command: { regex: 'dangerous' } },
      verdict: 'red', risk: 'high', reason: 'the test policy marks dangerous commands red',
    },
    { name: 'test-rest', tool: '*', verdict: 'green', risk: 'low', reason: 'the test allows the rest' },
  ],
};

export function tempDir() {
  // Short: a unix socket path must fit in 108 bytes.
  return mkdtempSync(join(tmpdir(), 'lgmcp-'));
}

// The arguments of `luminaguard mcp` for a private server in dir.
export function serverArgs(dir, { policy = TEST_POLICY, approvalTimeout, http, extra = [] } = {}) {
  // --standalone: each test's own server, never a `luminaguard serve` that happens to run.
  const args = ['mcp', '--standalone', '--control-socket', join(dir, 'ctl.sock'), '--audit-log', join(dir, 'audit.jsonl')];
  if (policy) {
    const file = join(dir, 'policy.json');
    writeFileSync(file, JSON.stringify(policy, null, 2));
    args.push('--policy', file);
  }
  if (approvalTimeout) args.push('--approval-timeout', String(approvalTimeout));
  if (http) args.push('--http', http);
  return [...args, ...extra];
}

// ---- processes -------------------------------------------------------------

function procStat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], ppid: Number(rest[1]) };
  } catch {
    return null;
  }
}

export function alive(pid) {
  const st = procStat(pid);
  return st !== null && st.state !== 'Z' && st.state !== 'X';
}

function isSandboxQemu(pid) {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('qemu-system') && cmd.includes('org.luminaguard.agent');
  } catch {
    return false;
  }
}

// Live QEMU processes of our sandboxes whose parent is serverPid.
export function qemuChildren(serverPid) {
  const out = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const st = procStat(e);
    if (st && st.ppid === serverPid && st.state !== 'Z' && isSandboxQemu(e)) out.push(Number(e));
  }
  return out;
}

export async function waitFor(what, fn, timeoutMs = 15_000, everyMs = 100) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// Runs `luminaguard ARGS`; resolves {code, stdout, stderr}.
export function lg(args, { timeoutMs = 30_000 } = {}) {
  return new Promise((resolve) => {
    execFile(LG, args, { timeout: timeoutMs, env: process.env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

// Kills a server the way a supervisor would, and proves its VMs went with it.
async function stopProcess(pid, proc, qemu) {
  if (alive(pid)) {
    process.kill(pid, 'SIGTERM');
    try {
      await waitFor(`server ${pid} to exit on SIGTERM`, () => !alive(pid), 15_000);
    } catch (e) {
      process.kill(pid, 'SIGKILL');
      await waitFor(`server ${pid} to die on SIGKILL`, () => !alive(pid), 5_000).catch(() => {});
      throw e;
    } finally {
      proc?.unref?.();
    }
  }
  await waitFor(`QEMU ${qemu.join(',')} of server ${pid} to be gone`, () => qemu.every((q) => !alive(q)), 15_000);
}

// ---- a transport that records what the server sent --------------------------

export class TapTransport {
  constructor(inner) {
    this.inner = inner;
    this.received = [];
    this.negotiated = undefined;
  }
  async start() {
    this.inner.onmessage = (m, extra) => {
      this.received.push(m);
      this.onmessage?.(m, extra);
    };
    this.inner.onclose = () => this.onclose?.();
    this.inner.onerror = (e) => this.onerror?.(e);
    return this.inner.start();
  }
  send(m, o) { return this.inner.send(m, o); }
  close() { return this.inner.close(); }
  get sessionId() { return this.inner.sessionId; }
  setProtocolVersion(v) {
    this.negotiated = v;
    this.inner.setProtocolVersion?.(v);
  }
}

// Answers elicitation/create as `answer` says: an object (the result), a
// function (called with the request), or 'hang' (never answers).
function installElicitation(client, box) {
  client.setRequestHandler(ElicitRequestSchema, async (req, extra) => {
    box.requests.push(req.params);
    const a = box.answer;
    if (a === 'hang') {
      await new Promise((resolve) => extra.signal.addEventListener('abort', resolve, { once: true }));
      box.cancelled.push(req.params);
      throw new Error('cancelled by the server');
    }
    return typeof a === 'function' ? a(req.params) : a;
  });
}

function makeClient(elicitation, name) {
  const client = new Client({ name, version: '1.0.0' },
    { capabilities: elicitation ? { elicitation: {} } : {} });
  const box = { answer: { action: 'decline' }, requests: [], cancelled: [] };
  if (elicitation) installElicitation(client, box);
  return { client, box };
}

export async function call(client, name, args = {}, opts = {}) {
  return client.callTool({ name, arguments: args }, undefined, { timeout: CALL_TIMEOUT_MS, ...opts });
}

export const resultText = (r) => (r.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

// ---- stdio ------------------------------------------------------------------

// Starts `luminaguard mcp` on stdio under the SDK client.
export async function startStdio({ elicitation = false, clientName = 'lg-mcp-test', ...opts } = {}) {
  const dir = tempDir();
  const stderr = [];
  const inner = new StdioClientTransport({
    command: LG, args: serverArgs(dir, opts), env: { ...process.env }, stderr: 'pipe',
  });
  inner.stderr.on('data', (d) => stderr.push(d.toString()));
  const transport = new TapTransport(inner);
  const { client, box } = makeClient(elicitation, clientName);
  await client.connect(transport, { timeout: 30_000 });
  const pid = inner.pid;
  const srv = {
    kind: 'stdio', dir, pid, client, transport, box,
    audit: join(dir, 'audit.jsonl'), socket: join(dir, 'ctl.sock'),
    stderr: () => stderr.join(''),
    qemu: () => qemuChildren(pid),
    // Ends the client, then the server; every VM of it must be gone.
    async stop() {
      const q = qemuChildren(pid);
      await client.close().catch(() => {});
      await stopProcess(pid, null, q);
    },
    cleanup() { rmSync(dir, { recursive: true, force: true }); },
  };
  return srv;
}

// ---- Streamable HTTP -------------------------------------------------------

// Starts `luminaguard mcp --http 127.0.0.1:0` and waits for its port.
export async function startHttpServer(opts = {}) {
  const dir = tempDir();
  const proc = spawn(LG, serverArgs(dir, { http: '127.0.0.1:0', ...opts }), {
    env: process.env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr = [];
  const stdout = [];
  proc.stdout.on('data', (d) => stdout.push(d.toString()));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "listening" line in 20 s; stderr:\n${stderr.join('')}`)), 20_000);
    proc.stderr.on('data', (d) => {
      stderr.push(d.toString());
      const m = /listening on http:\/\/\S+ \(port (\d+)\)/.exec(stderr.join(''));
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening; stderr:\n${stderr.join('')}`));
    });
  });
  const srv = {
    kind: 'http', dir, pid: proc.pid, proc, port, url: `http://127.0.0.1:${port}/mcp`,
    audit: join(dir, 'audit.jsonl'), socket: join(dir, 'ctl.sock'),
    stderr: () => stderr.join(''), stdout: () => stdout.join(''),
    qemu: () => qemuChildren(proc.pid),
    clients: [],
    // A new SDK client session on this server.
    async connect({ elicitation = false, clientName = 'lg-mcp-test' } = {}) {
      const transport = new TapTransport(new StreamableHTTPClientTransport(new URL(srv.url)));
      const { client, box } = makeClient(elicitation, clientName);
      await client.connect(transport, { timeout: 30_000 });
      const c = { client, transport, box };
      srv.clients.push(c);
      return c;
    },
    async stop() {
      const q = qemuChildren(proc.pid);
      // Bounded: a server that hangs on DELETE must not hang the suite.
      let hung = null;
      for (const c of srv.clients) {
        const del = c.transport.inner.terminateSession().then(() => null, () => null);
        hung ??= await Promise.race([del, sleep(10_000).then(() => 'DELETE of a session got no answer in 10 s')]);
        await c.client.close().catch(() => {});
      }
      srv.clients.length = 0;
      await stopProcess(proc.pid, proc, q);
      if (hung) throw new Error(hung);
    },
    cleanup() { rmSync(dir, { recursive: true, force: true }); },
  };
  return srv;
}

// ---- a raw JSON-lines client for stdio -----------------------------------

export class LineClient {
  constructor(args) {
    this.proc = spawn(LG, args, { env: process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.pid = this.proc.pid;
    this.messages = [];
    this.nonJson = [];
    this.waiters = [];
    this.stderr = [];
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.proc.stderr.on('data', (d) => this.stderr.push(d.toString()));
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      let m;
      try {
        m = JSON.parse(line);
      } catch {
        this.nonJson.push(line);
        return;
      }
      this.messages.push(m);
      for (const w of [...this.waiters]) w();
    });
  }
  write(text) { this.proc.stdin.write(text.endsWith('\n') ? text : `${text}\n`); }
  send(obj) { this.write(JSON.stringify(obj)); }
  // The first message not yet taken that satisfies pred.
  async take(pred, what, timeoutMs = 10_000) {
    const find = () => {
      const i = this.messages.findIndex(pred);
      return i < 0 ? undefined : this.messages.splice(i, 1)[0];
    };
    let m = find();
    if (m) return m;
    return new Promise((resolve, reject) => {
      const w = () => {
        const got = find();
        if (got) {
          clearTimeout(timer);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          resolve(got);
        }
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no ${what} in ${timeoutMs} ms; got ${JSON.stringify(this.messages)}; stderr: ${this.stderr.join('')}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }
  // Sends a request and waits for the response with its id.
  async request(id, method, params, timeoutMs = 10_000) {
    const msg = { jsonrpc: '2.0', id, method };
    if (params !== undefined) msg.params = params;
    this.send(msg);
    return this.take((m) => m.id === id && ('result' in m || 'error' in m), `response to ${method} (id ${JSON.stringify(id)})`, timeoutMs);
  }
  async initialize(capabilities = {}) {
    const r = await this.request('init', 'initialize', {
      protocolVersion: '2025-11-25', capabilities, clientInfo: { name: 'raw-lines', version: '0' },
    });
    this.send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    return r;
  }
  kill() { if (alive(this.pid)) this.proc.kill('SIGKILL'); }
}

// ---- audit log ---------------------------------------------------------------

export function readAudit(file) {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

// Whether this build has `luminaguard audit`.
export async function hasAuditCommand() {
  const r = await lg(['--help']);
  return /^\s+audit\s/m.test(r.stdout + r.stderr);
}

export { sleep };
