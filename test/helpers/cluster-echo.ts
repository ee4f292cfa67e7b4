// A node:cluster program as an application writes it, run under the auto preload: the primary
// forks two workers that each serve an echo on the shared port (round-robin: the primary
// accepts and passes each handle on), then connects four clients and prints one JSON line
// with how each client's connection settled and what came back.
// CLUSTER_WORKERS=plain: the workers are forked without the preload (setupPrimary's execArgv
// replaces the primary's --require), as an application that sets its workers' flags does.

import cluster from 'node:cluster';
import net from 'node:net';

interface SmcInfo { mode: string }

if (cluster.isPrimary) {
  if (process.env.CLUSTER_WORKERS === 'plain') cluster.setupPrimary({ execArgv: [] });
  const workers = [cluster.fork(), cluster.fork()];
  let listening = 0;
  let port = 0;
  cluster.on('listening', (_w, addr) => {
    port = addr.port;
    if (++listening === workers.length) void run();
  });
  const run = async (): Promise<void> => {
    const results = await Promise.all([0, 1, 2, 3].map((i) => new Promise<{ mode: string; echo: string }>((resolve, reject) => {
      const c = net.connect(port, '127.0.0.1');
      let mode = '';
      let echo = '';
      c.on('smc', (info: SmcInfo) => { mode = info.mode; });
      c.on('error', reject);
      c.setEncoding('utf8').on('data', (d: string) => { echo += d; });
      c.on('close', () => resolve({ mode, echo }));
      c.end(`ping ${i}`);
    })));
    console.log(JSON.stringify({ results }));
    for (const w of workers) w.kill();
  };
} else {
  net.createServer((s) => {
    s.setEncoding('utf8').on('data', (d: string) => s.end(`echo ${d}`));
  }).listen(0, '127.0.0.1');
}
