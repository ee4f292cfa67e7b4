// A RoCEv2 packet for QP1 as a hostile or careless peer would build it, for the tests that
// feed QP1 what it must count and drop (test/cm/agent.test.ts, test/cm/fuzz-wire.test.ts).

import { deth, writeBth } from '../../src/providers/rxe/wire/headers.js';
import { BTH_BYTES, DETH_BYTES, ICRC_BYTES, OpCode } from '../../src/providers/rxe/wire/opcodes.js';

/** A UD SEND-only for QP1 (BTH, DETH, the MAD, pad, room for the ICRC the link writes). */
export function udToQp1(mad: Buffer, qkey: number): Buffer {
  const pad = (4 - (mad.length & 3)) & 3;
  const buf = Buffer.alloc(BTH_BYTES + DETH_BYTES + mad.length + pad + ICRC_BYTES);
  writeBth(buf, { opcode: OpCode.UD_SEND_ONLY, padCount: pad, destQp: 1, ackReq: false, psn: 0 });
  deth.write(buf, BTH_BYTES, qkey, 1);
  mad.copy(buf, BTH_BYTES + DETH_BYTES);
  return buf;
}
