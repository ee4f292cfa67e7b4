// smcss -R against smc-tools' smcss.c: the header print_header prints with show_smcr, and an
// SMC-R row's smc_diag_lgrinfo columns as show_one_smc_sock lays them out ("%4s " role,
// "%-15s " IB device, "%02x   " port, "%02x     " link id, "%-40s " GID, then the peer GID),
// after -d's columns when both are given. Fixed rows, fixed expected text.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { format } from '../../src/tools/smcss.js';

const G1 = '0000:0000:0000:0000:0000:ffff:0a00:0001';
const G2 = '0000:0000:0000:0000:0000:ffff:0a00:0002';
const base = { pid: 42, localAddress: '10.0.0.1', localPort: 5000, peerAddress: '10.0.0.2', peerPort: 40000 };
const lgrinfo = { role: 'server' as const, ibDev: 'rxe0', ibPort: 1, linkId: 1, gid: G1, peerGid: G2, lgrId: 0x12345600, qpn: 17, peerQpn: 18 };

describe('smcss -R (smc-tools smcss.c)', () => {
  it('the header and an SMC-R row: Role, IB-device, Port, Linkid, GID, Peer-GID', () => {
    const [head, line, client] = format([
      { ...base, state: 'ACTIVE', mode: 'SMCR', lgrinfo },
      { ...base, state: 'ACTIVE', mode: 'SMCR', lgrinfo: { ...lgrinfo, role: 'client', ibDev: 'rxe_a_longer_name', linkId: 0x1f, gid: G2, peerGid: G1 } },
    ], { smcr: true, uid: 0 }).split('\n');
    assert.equal(head, 'State          UID   Inode   Local Address           Peer Address            Intf Mode Role IB-device       Port Linkid GID                                      Peer-GID');
    assert.equal(line, `ACTIVE         00000 0000042 10.0.0.1:5000           10.0.0.2:40000          0000 SMCR SERV rxe0            01   01     ${G1}  ${G2}`);
    assert.equal(client, `ACTIVE         00000 0000042 10.0.0.1:5000           10.0.0.2:40000          0000 SMCR CLNT rxe_a_longer_name 01   1f     ${G2}  ${G1}`);
  });

  it('-R -d: -d\'s columns, then -R\'s; rows without lgrinfo, listeners and fallbacks end where smcss.c ends them', () => {
    const cur = { wrap: 0, count: 5 };
    const conninfo = {
      token: 7, sndbufSize: 0x100000, rmbeSize: 0x100000, peerRmbeSize: 0x100000, rxProd: cur, rxCons: cur, txProd: cur, txCons: cur, txPrep: cur, txSent: cur, txFin: cur,
      rxProdFlags: 0, rxConnStateFlags: 0, txProdFlags: 0, txConnStateFlags: 0, rxFlags: [], txFlags: [],
    };
    const text = format([
      { ...base, state: 'ACTIVE', mode: 'SMCR', shutdown: 0, conninfo, lgrinfo },
      { ...base, state: 'ACTIVE', mode: 'SMCR' },
      { ...base, state: 'LISTEN', mode: 'SMCD', peerAddress: '*', peerPort: 0 },
      { ...base, state: 'INIT', mode: 'INIT' },
    ], { smcr: true, debug: true, uid: 0 }).split('\n');
    assert.match(text[0]!, /txfin-Cursor {2}Role IB-device {7}Port Linkid GID {38}Peer-GID$/);
    const five = '0000:00000005';
    assert.equal(text[1], `ACTIVE         00000 0000042 10.0.0.1:5000           10.0.0.2:40000          0000 SMCR  <->  00000007 00100000 00100000 00100000 ${five} ${five} 00:00   ${five} ${five} 00:00   ${five} ${five} ${five} SERV rxe0            01   01     ${G1}  ${G2}`);
    // With their trailing blanks, as smcss.c's printf formats leave them (" %c-%c  ", "%-*s ", "%07llu ").
    assert.equal(text[2], 'ACTIVE         00000 0000042 10.0.0.1:5000           10.0.0.2:40000          0000 SMCR  <->  ');
    assert.equal(text[3], 'LISTEN         00000 0000042 10.0.0.1:5000           ');
    assert.equal(text[4], 'INIT           00000 0000042 ');
  });
});
