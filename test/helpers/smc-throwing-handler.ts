// An SMC-D server whose 'data' handler throws once, in a process that handles uncaught
// exceptions (test/smc/smcd-edges.test.ts runs it, in its runtime directory): as with
// node:net, the exception reaches 'uncaughtException' and the connection goes on; the later
// writes arrive.

const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);
process.on('uncaughtException', (e) => { process.stdout.write(`uncaught: ${e.message}\n`); });
let first = true;
const got: string[] = [];
const srv = smc.createServer((s) => {
  s.on('data', (d: Buffer) => {
    got.push(d.toString());
    if (got.join('').includes('c')) { process.stdout.write(`server got ${got.join('')}\n`); process.exit(0); }
    if (first) { first = false; throw new Error('application bug'); }
  });
});
srv.listen(0, '127.0.0.1', () => {
  const c = smc.connect((srv.address() as { port: number }).port, '127.0.0.1');
  c.on('smc', (info: { mode: string }) => {
    process.stdout.write(`client ${info.mode}\n`);
    let n = 0;
    const next = () => { c.write('abc'[n]!); if (++n < 3) setTimeout(next, 30); };
    next();
  });
  setTimeout(() => { process.stdout.write(`server got only ${JSON.stringify(got.join(''))}\n`); process.exit(1); }, 5000).unref();
});
