// A capture of the CLC handshake on lo must decode in Wireshark's SMC dissector (tshark):
// Proposal, Accept and Confirm of an SMC-D connection, carrying exactly the GIDs, DMB tokens
// and DMBE sizes the two ends used, and a Decline with its reason code; nothing malformed.
// Only CLC travels over TCP for an SMC-D connection, so the capture takes the segments that
// carry payload and stops by itself after the five it expects.
// Skipped, saying why, without tshark or without the right to capture.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { captureUnavailable, readFields, startCapture } from '../helpers/capture.js';
import { runNode } from '../helpers/procs.js';
import { testRuntimeDir } from '../helpers/runtime-dir.js';

const runtime = testRuntimeDir('smc-cap');
const SERVER = fileURLToPath(new URL('../helpers/smc-test-server.js', import.meta.url));

const hex64 = (v: bigint) => `0x${v.toString(16).padStart(16, '0')}`;
// TCP segments with payload: IP total length minus both header lengths is not zero.
const PAYLOAD = '(((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)';

test('the CLC handshake decodes in Wireshark\'s SMC dissector with the values both ends used', { skip: captureUnavailable(), timeout: 120_000 }, async () => {
  const smc = await import('../../src/smc/index.js');
  const { smcState } = await import('../../src/smc/state.js');
  const { encodeProposal, localSystemId, DECLINE } = await import('../../src/smc/clc.js');
  const { defaultIsmDevice } = await import('../../src/ism/device.js');
  const srv = runNode(SERVER, [], { stdin: 'pipe', env: { SOFTRDMA_RUNTIME_DIR: runtime } });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'softrdma-smc-pcap-'));
  const file = path.join(dir, 'clc.pcapng');
  try {
    const port = Number((await srv.waitFor(/"port":(\d+)/))[1]);
    const cap = await startCapture(`tcp port ${port} and ${PAYLOAD}`, 5, file);

    // 1. An SMC-D connection: Proposal, Accept, Confirm; its data goes through shared memory.
    const s = smc.connect(port, '127.0.0.1');
    const info = (await once(s, 'smc'))[0] as { mode: string };
    assert.equal(info.mode, 'SMCD');
    const st = smcState(s)!;
    const used = { client: defaultIsmDevice().gid, serverToken: st.remote!.token, clientToken: st.dmb!.token, server: st.peerGid! };
    const echoed = once(s, 'data');
    s.write('Ehello');
    assert.equal(String((await echoed)[0]), 'hello');
    s.end();
    await once(s, 'close');

    // 2. A Proposal from an ISM GID no device on this host has: a Decline, NOSMCDDEV.
    const raw = net.connect(port, '127.0.0.1');
    await once(raw, 'connect');
    const reply = once(raw, 'data');
    raw.write(encodeProposal({ version: 1, path: 1, peerId: localSystemId(), smcdGid: 0x1234n, chid: 0xffff, subnet: '127.0.0.0', prefixLength: 8, ipv6Prefixes: [] }));
    assert.equal(((await reply)[0] as Buffer)[4], 4, 'the server answered with a Decline');
    raw.destroy();

    await cap.finished();
    const rows = readFields(file, 'smc', [
      'smc.clc_msg', 'smc.length', 'smc.proposal.ism.gid', 'smc.accept.sender.server.ism.gid', 'smc.accept.dmb.token',
      'smc.accept.dmbe.buffer.size', 'smc.confirm.sender.client.ism.gid', 'smc.confirm.dmb.token', 'smc.confirm.dmbe.buffer.size',
      'smc.peer.diag.info',
    ]);
    assert.deepEqual(rows.map((r) => r[0]), ['1', '2', '3', '1', '4'], `CLC messages as tshark sees them: ${JSON.stringify(rows)}`);
    assert.deepEqual(rows.map((r) => r[1]), ['92', '48', '48', '92', '28']);
    const [proposal, accept, confirm, , decline] = rows as [string[], string[], string[], string[], string[]];
    assert.equal(proposal[2], hex64(used.client));
    assert.equal(accept[3], hex64(used.server));
    assert.equal(accept[4], hex64(used.serverToken));
    assert.equal(accept[5], '6', '1 MiB DMB: compressed size 6, the largest SMC-D v1 defines');
    assert.equal(confirm[6], hex64(used.client));
    assert.equal(confirm[7], hex64(used.clientToken));
    assert.equal(confirm[8], '6');
    assert.equal(Number(decline[9]), DECLINE.NOSMCDDEV);
    assert.deepEqual(readFields(file, '_ws.malformed || _ws.expert.severity >= error', ['frame.number']), [], 'no malformed or erroneous frames');
  } finally {
    srv.child.stdin!.end();
    await srv.exit(10_000);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
