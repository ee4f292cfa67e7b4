// A process whose own 'exit' listener destroys an SMC-D socket, registered after the ISM
// device's (test/smc/smcd-edges.test.ts runs it, in its runtime directory): the device's exit
// hook must leave the memory mapped, or the socket's teardown reads unmapped cursors (SIGSEGV).

const smc = await import('../../src/smc/index.js');
smc.setSmcLearning(false);
const srv = smc.createServer((s) => { s.on('data', () => {}); s.on('error', () => {}); });
srv.listen(0, '127.0.0.1', () => {
  const c = smc.connect((srv.address() as { port: number }).port, '127.0.0.1');
  c.on('error', () => {});
  c.on('smc', (info: { mode: string }) => {
    process.stdout.write(`client ${info.mode}\n`);
    process.on('exit', () => {
      c.destroy();
      process.stdout.write('destroyed in exit\n');
    });
    setTimeout(() => process.exit(0), 50);
  });
});
