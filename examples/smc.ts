import net from 'softrdma/smc';          // same exports as node:net, plus getSmcInfo

const server = net.createServer((sock) => sock.pipe(sock));
server.listen(7000, '127.0.0.1');

const sock = net.connect(7000, '127.0.0.1', () => sock.write('hello'));
sock.on('smc', (info) => console.log(info.mode));   // 'SMCD', or 'TCP' with a reason
sock.on('data', (data) => {
  console.log(data.toString(), net.getSmcInfo(sock));   // hello { mode, pending, fallbackReason?, ... }
  sock.end();
  server.close();
});
