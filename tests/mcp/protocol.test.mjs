// SPDX-License-Identifier: Apache-2.0
//
// The protocol itself, no VM needed: initialize and tools/list through the
// SDK over stdio and HTTP, then malformed input over raw stdio lines and
// raw HTTP requests, after which the server must still serve.

import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { describe, it } from 'node:test';

import {
  LineClient, PROTOCOL_VERSIONS, TOOL_NAMES, serverArgs, startHttpServer, startStdio, tempDir,
} from './lib.mjs';

function checkInitialized(client, negotiated) {
  const info = client.getServerVersion();
  assert.equal(info?.name, 'luminaguard');
  assert.equal(typeof info.version, 'string');
  assert.ok(PROTOCOL_VERSIONS.includes(negotiated), `negotiated protocol version ${negotiated}`);
  assert.ok(client.getServerCapabilities()?.tools, 'the server declares the tools capability');
}

async function checkTools(client) {
  const { tools, nextCursor } = await client.listTools();
  assert.equal(nextCursor, undefined);
  assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
  const by = Object.fromEntries(tools.map((t) => [t.name, t]));
  for (const t of tools) {
    assert.equal(t.inputSchema?.type, 'object', `${t.name}: inputSchema is an object schema`);
    assert.equal(typeof t.description, 'string');
    assert.equal(typeof t.annotations, 'object', `${t.name}: has annotations`);
  }
  assert.equal(by.sandbox_fs_read.annotations.readOnlyHint, true);
  assert.equal(by.sandbox_fs_list.annotations.readOnlyHint, true);
  assert.equal(by.sandbox_list.annotations.readOnlyHint, true);
  assert.equal(by.sandbox_destroy.annotations.destructiveHint, true);
  assert.equal(by.sandbox_create.annotations.readOnlyHint, false);
  assert.deepEqual(by.sandbox_exec.inputSchema.required, ['sandbox_id']);
  assert.deepEqual([...by.sandbox_fs_write.inputSchema.required].sort(), ['content', 'path', 'sandbox_id']);
  assert.equal(by.sandbox_create.inputSchema.properties.cpus.type, 'integer');
}

describe('initialize and tools/list', { timeout: 60_000 }, () => {
  it('over stdio', async () => {
    const srv = await startStdio();
    try {
      checkInitialized(srv.client, srv.transport.negotiated);
      assert.equal(srv.transport.negotiated, '2025-11-25', 'the SDK asks for 2025-11-25, which the server speaks');
      await checkTools(srv.client);
      await srv.client.ping();
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('over Streamable HTTP', async () => {
    const srv = await startHttpServer();
    try {
      const { client, transport } = await srv.connect();
      checkInitialized(client, transport.negotiated);
      assert.match(transport.sessionId ?? '', /^[\x21-\x7e]+$/, 'Mcp-Session-Id is visible ASCII');
      await checkTools(client);
      await client.ping();
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });

  it('an unknown protocol version is answered with one the server speaks', async () => {
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir));
    try {
      const r = await lc.request(1, 'initialize', {
        protocolVersion: '1999-01-01', capabilities: {}, clientInfo: { name: 'old', version: '0' },
      });
      assert.ok(PROTOCOL_VERSIONS.includes(r.result?.protocolVersion), JSON.stringify(r));
      const r2 = await lc.request(2, 'initialize', {
        protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'old', version: '0' },
      });
      assert.equal(r2.result?.protocolVersion, '2025-03-26');
    } finally {
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bad input over stdio (raw JSON lines)', { timeout: 60_000 }, () => {
  it('is answered per JSON-RPC, and the server keeps serving', async () => {
    const dir = tempDir();
    const lc = new LineClient(serverArgs(dir));
    try {
      // Before initialize: refused (any JSON-RPC error), but ping works.
      const early = await lc.request(1, 'tools/list');
      assert.ok(early.error, `tools/list before initialize: ${JSON.stringify(early)}`);
      assert.equal(typeof early.error.code, 'number');
      const earlyCall = await lc.request(2, 'tools/call', { name: 'sandbox_list', arguments: {} });
      assert.ok(earlyCall.error, `tools/call before initialize: ${JSON.stringify(earlyCall)}`);
      assert.deepEqual((await lc.request(3, 'ping')).result, {});

      // Malformed JSON: -32700 with id null.
      lc.write('{"jsonrpc":"2.0","id":4,"method":"ping"');
      const pe = await lc.take((m) => m.error?.code === -32700, 'a parse error');
      assert.equal(pe.id, null);
      assert.equal(pe.jsonrpc, '2.0');
      lc.write('not json at all');
      assert.equal((await lc.take((m) => m.error?.code === -32700, 'a second parse error')).id, null);

      const init = await lc.initialize();
      assert.equal(init.result?.serverInfo?.name, 'luminaguard');

      // Unknown method: -32601.
      const nope = await lc.request(1, 'nope');
      assert.equal(nope.error?.code, -32601, JSON.stringify(nope));
      // A string id comes back as the same string.
      const sid = await lc.request('abc', 'nope');
      assert.equal(sid.id, 'abc');
      assert.equal(sid.error?.code, -32601);
      // Unknown tool: -32602 (a protocol error, per the MCP spec).
      const unk = await lc.request(5, 'tools/call', { name: 'no_such_tool', arguments: {} });
      assert.equal(unk.error?.code, -32602, JSON.stringify(unk));
      // Wrong argument types: a tool error the model can read and fix.
      const bad = await lc.request(6, 'tools/call', { name: 'sandbox_create', arguments: { cpus: 'two' } });
      assert.equal(bad.result?.isError, true, JSON.stringify(bad));
      assert.match(bad.result.content[0].text, /cpus/);
      const bad2 = await lc.request(7, 'tools/call', { name: 'sandbox_exec', arguments: { sandbox_id: 'sb-nope', command: 42 } });
      assert.equal(bad2.result?.isError, true, JSON.stringify(bad2));
      // arguments not an object, params not an object: -32602.
      const argsArr = await lc.request(8, 'tools/call', { name: 'sandbox_list', arguments: [1] });
      assert.equal(argsArr.error?.code, -32602, JSON.stringify(argsArr));
      const paramsArr = await lc.request(9, 'tools/call', [1, 2]);
      assert.equal(paramsArr.error?.code, -32602, JSON.stringify(paramsArr));
      const paramsStr = await lc.request(10, 'tools/list', 'x');
      assert.equal(paramsStr.error?.code, -32602, JSON.stringify(paramsStr));
      // Not JSON-RPC 2.0, a batch, a bad id: -32600.
      lc.send({ jsonrpc: '1.0', id: 11, method: 'ping' });
      assert.equal((await lc.take((m) => m.id === 11, 'the answer to jsonrpc 1.0')).error?.code, -32600);
      lc.write('[{"jsonrpc":"2.0","id":12,"method":"ping"}]');
      assert.equal((await lc.take((m) => m.error?.code === -32600, 'the answer to a batch')).id, null);
      lc.write('{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}');
      assert.equal((await lc.take((m) => m.error?.code === -32600, 'the answer to an object id')).id, null);
      // Notifications get no answer, even unknown ones; a blank line is ignored.
      lc.send({ jsonrpc: '2.0', method: 'notifications/whatever' });
      lc.write('');
      // An invalid cursor is -32602.
      const cur = await lc.request(13, 'tools/list', { cursor: 'bogus' });
      assert.equal(cur.error?.code, -32602, JSON.stringify(cur));

      // Still alive, and nothing unasked-for arrived.
      assert.deepEqual((await lc.request(14, 'ping')).result, {});
      const list = await lc.request(15, 'tools/list', {});
      assert.equal(list.result?.tools?.length, 8);
      assert.deepEqual(lc.messages, [], 'no stray messages');
      assert.deepEqual(lc.nonJson, [], 'stdout carries only JSON-RPC lines');
    } finally {
      lc.proc.stdin.end();
      const { code } = await Promise.race([lc.exited, new Promise((r) => setTimeout(() => r({ code: 'hung' }), 10_000))]);
      lc.kill();
      rmSync(dir, { recursive: true, force: true });
      assert.equal(code, 0, 'closing stdin ends the server cleanly');
    }
  });
});

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const INIT = {
  jsonrpc: '2.0', id: 1, method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw-http', version: '0' } },
};

// The JSON-RPC message of a response: a JSON body, or the first event of an SSE stream.
async function bodyMessage(res) {
  const text = await res.text();
  if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    const data = text.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim());
    return data.length ? JSON.parse(data[0]) : undefined;
  }
  return text ? JSON.parse(text) : undefined;
}

// One HTTP/1.1 exchange on a raw socket: write errors are ignored (the
// server may answer and close before reading everything).
function rawHttp(port, head, body) {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const got = [];
    sock.on('data', (d) => got.push(d));
    sock.on('error', () => {});
    sock.on('close', () => {
      const text = Buffer.concat(got).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!m) reject(new Error(`no HTTP response: ${JSON.stringify(text.slice(0, 200))}`));
      else resolve({ status: Number(m[1]), head: text.slice(0, text.indexOf('\r\n\r\n') + 4), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    sock.setTimeout(20_000, () => sock.destroy());
    sock.write(head);
    if (body !== undefined) sock.end(body);
    else sock.once('data', () => sock.end());
  });
}

describe('bad input over HTTP (raw requests)', { timeout: 60_000 }, () => {
  it('gets the right status codes, and the server keeps serving', async () => {
    const srv = await startHttpServer();
    const url = srv.url;
    try {
      // A raw session, to prove the ones below do not disturb it.
      const init = await fetch(url, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify(INIT) });
      assert.equal(init.status, 200);
      const session = init.headers.get('mcp-session-id');
      assert.ok(session, 'initialize answers with Mcp-Session-Id');
      const initMsg = await bodyMessage(init);
      assert.equal(initMsg.result?.serverInfo?.name, 'luminaguard');
      const proto = initMsg.result.protocolVersion;
      const sh = { ...JSON_HEADERS, 'mcp-session-id': session, 'mcp-protocol-version': proto };
      const note = await fetch(url, { method: 'POST', headers: sh, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
      assert.equal(note.status, 202, 'a notification is answered 202 Accepted');
      await note.text();

      // Malformed JSON: 400 with a -32700 error.
      const mal = await fetch(url, { method: 'POST', headers: sh, body: '{"jsonrpc": "2.0", "id": 2, ' });
      assert.equal(mal.status, 400);
      assert.equal((await bodyMessage(mal))?.error?.code, -32700);
      const mal0 = await fetch(url, { method: 'POST', headers: JSON_HEADERS, body: 'nope' });
      assert.equal(mal0.status, 400, 'malformed JSON without a session: 400');
      assert.equal((await bodyMessage(mal0))?.error?.code, -32700);

      // A browser Origin not allowed: 403 (DNS rebinding defence).
      const evil = await fetch(url, { method: 'POST', headers: { ...sh, origin: 'http://evil.example' }, body: JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'ping' }) });
      assert.equal(evil.status, 403);
      await evil.text();
      const evilInit = await fetch(url, { method: 'POST', headers: { ...JSON_HEADERS, origin: 'http://evil.example' }, body: JSON.stringify(INIT) });
      assert.equal(evilInit.status, 403, 'no session is created for a foreign Origin');
      assert.equal(evilInit.headers.get('mcp-session-id'), null);
      await evilInit.text();
      const local = await fetch(url, { method: 'POST', headers: { ...sh, origin: 'http://localhost:1234' }, body: JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'ping' }) });
      assert.equal(local.status, 200, 'a localhost Origin is allowed');
      assert.deepEqual((await bodyMessage(local))?.result, {});

      // Unknown session: 404.
      const unknown = await fetch(url, { method: 'POST', headers: { ...sh, 'mcp-session-id': 'f'.repeat(32) }, body: JSON.stringify({ jsonrpc: '2.0', id: 6, method: 'ping' }) });
      assert.equal(unknown.status, 404);
      await unknown.text();
      // No session on a request that is not initialize: 400.
      const nosess = await fetch(url, { method: 'POST', headers: JSON_HEADERS, body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/list' }) });
      assert.equal(nosess.status, 400);
      await nosess.text();
      // Unsupported MCP-Protocol-Version: 400.
      const badver = await fetch(url, { method: 'POST', headers: { ...sh, 'mcp-protocol-version': '1999-01-01' }, body: JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'ping' }) });
      assert.equal(badver.status, 400);
      await badver.text();
      // Another path: 404.
      const path = await fetch(url.replace('/mcp', '/other'), { method: 'POST', headers: sh, body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'ping' }) });
      assert.equal(path.status, 404);
      await path.text();
      // JSON-RPC errors inside a valid session come back as JSON-RPC.
      const nope = await fetch(url, { method: 'POST', headers: sh, body: JSON.stringify({ jsonrpc: '2.0', id: 10, method: 'nope' }) });
      assert.equal((await bodyMessage(nope))?.error?.code, -32601);

      // The raw session still works; DELETE ends it; then it is unknown.
      const ping = await fetch(url, { method: 'POST', headers: sh, body: JSON.stringify({ jsonrpc: '2.0', id: 11, method: 'ping' }) });
      assert.equal(ping.status, 200);
      assert.deepEqual((await bodyMessage(ping))?.result, {});
      const del = await fetch(url, { method: 'DELETE', headers: sh });
      assert.ok(del.status === 200 || del.status === 204, `DELETE: ${del.status}`);
      await del.text();
      const after = await fetch(url, { method: 'POST', headers: sh, body: JSON.stringify({ jsonrpc: '2.0', id: 12, method: 'ping' }) });
      assert.equal(after.status, 404, 'a deleted session is unknown');
      await after.text();

      // And a new session through the SDK works.
      const { client } = await srv.connect();
      assert.equal((await client.listTools()).tools.length, 8);
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
  it('an oversized body is answered 413 Content Too Large', async () => {
    // The limit is 4 MiB.  Raw sockets: fetch cannot send Expect, and reports
    // a server that closes before reading the body as EPIPE.
    const srv = await startHttpServer();
    try {
      const big = JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'ping', params: { pad: 'x'.repeat(5 << 20) } });
      const hdrs = 'Host: 127.0.0.1\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n';
      // Announced, and the client waits for 100 Continue: 413 at once.
      const expect = await rawHttp(srv.port, `POST /mcp HTTP/1.1\r\n${hdrs}Expect: 100-continue\r\nContent-Length: ${big.length}\r\n\r\n`);
      assert.equal(expect.status, 413, expect.head);
      // Chunked: found out while reading.
      const chunked = await rawHttp(srv.port, `POST /mcp HTTP/1.1\r\n${hdrs}Transfer-Encoding: chunked\r\n\r\n`, `${big.length.toString(16)}\r\n${big}\r\n0\r\n\r\n`);
      assert.equal(chunked.status, 413, chunked.head);
      assert.equal(JSON.parse(chunked.body).error?.code, -32600);
      // Announced, body sent at once (what fetch does): the 413 must still
      // reach the client (RFC 9112 9.6: close lingering, not at once).
      const sized = await rawHttp(srv.port, `POST /mcp HTTP/1.1\r\n${hdrs}Content-Length: ${big.length}\r\n\r\n`, big)
        .catch((e) => ({ status: e.message }));
      assert.equal(sized.status, 413, 'Content-Length over the limit, body sent without waiting');
      // Still serving.
      const { client } = await srv.connect();
      await client.ping();
    } finally {
      await srv.stop();
      srv.cleanup();
    }
  });
});
