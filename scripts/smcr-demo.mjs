// The program scripts/smcr-demo.sh runs on both sides: plain node:net, no softrdma import.
// Under `--import softrdma/smc/auto` its sockets become SMC sockets (SMC-R between hosts).
//
//   node smcr-demo.mjs server ADDR        an echo server on ADDR:7000
//   node smcr-demo.mjs client ADDR        64 MiB echoed and checked (sha256), then 5000
//                                         round trips of 14 bytes; prints one JSON line

import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';

const [role, addr] = process.argv.slice(2);
const PORT = 7000;

if (role === 'server') {
  net.createServer((s) => { s.pipe(s); s.on('error', () => {}); }).listen(PORT, addr, () => console.log('listening'));
} else {
  const connect = () => new Promise((resolve, reject) => {
    const s = net.connect(PORT, addr, () => resolve(s));
    s.setNoDelay(true);
    s.once('error', reject);
  });
  // Bulk: 64 MiB out, the same back, both hashed.
  const data = randomBytes(64 << 20);
  let s = await connect();
  const t0 = performance.now();
  const back = createHash('sha256');
  let got = 0;
  await new Promise((resolve) => {
    s.on('data', (d) => { back.update(d); got += d.length; if (got >= data.length) resolve(); });
    for (let off = 0; off < data.length; off += 256 << 10) s.write(data.subarray(off, off + (256 << 10)));
  });
  const secs = (performance.now() - t0) / 1000;
  const ok = back.digest('hex') === createHash('sha256').update(data).digest('hex');
  s.destroy();
  // Round trips: 14 bytes out, 14 back, one at a time.
  s = await connect();
  const msg = Buffer.alloc(14, 0x61);
  const rtts = [];
  await new Promise((resolve) => {
    let n = 0, t = 0, have = 0;
    s.on('data', (d) => {
      have += d.length;
      if (have < 14) return;
      have -= 14;
      if (n++ >= 500) rtts.push(performance.now() - t);
      if (rtts.length >= 5000) return resolve();
      t = performance.now();
      s.write(msg);
    });
    t = performance.now();
    s.write(msg);
  });
  s.destroy();
  rtts.sort((a, b) => a - b);
  console.log(JSON.stringify({ sha256ok: ok, mibPerSec: Math.round(64 / secs), rttMedianUs: Math.round(rtts[rtts.length >> 1] * 1000) }));
}
