import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';
import { promisify } from 'node:util';
import { Injectable } from '@nestjs/common';
import { BrokerUnavailableError, type EventContext, OnEvent, SyncPublisher } from '../../lib/index.js';
import { startApp, type TestApp } from '../support/app.js';
import { LogCapture } from '../support/log-capture.js';
import { unique, waitFor } from '../support/wait.js';

const run = promisify(execFile);

/**
 * `amqps://` end to end: the module speaks TLS to a listener with a self-signed certificate
 * (made here with openssl) that forwards the decrypted stream to the local RabbitMQ. The TLS
 * handshake, certificate checks and SNI are the client's; the broker behind is the real one.
 */
describe('amqps:// with TLS options', () => {
  let dir: string;
  let ca: Buffer;
  let listener: Server;
  let port: number;
  const sockets = new Set<Socket>();
  const handshakes: Array<{ servername: string | false; protocol: string | null }> = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sync-tls-'));
    const file = (name: string) => join(dir, name);
    // A CA, and a server certificate it signs for localhost.
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=sync-test-ca', '-keyout', file('ca.key'), '-out', file('ca.pem')]);
    await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', file('server.key'), '-out', file('server.csr')]);
    const extensions = file('ext.cnf');
    await run('sh', ['-c', `printf 'subjectAltName=DNS:localhost\\n' > '${extensions}'`]);
    await run('openssl', ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', extensions, '-out', file('server.pem')]);
    ca = readFileSync(file('ca.pem'));
    listener = createServer({ key: readFileSync(file('server.key')), cert: readFileSync(file('server.pem')) }, (tlsSocket) => {
      handshakes.push({ servername: (tlsSocket as unknown as { servername: string | false }).servername, protocol: tlsSocket.getProtocol() });
      const upstream = netConnect(5672, '127.0.0.1');
      for (const socket of [tlsSocket, upstream]) {
        sockets.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => sockets.delete(socket));
      }
      tlsSocket.pipe(upstream).pipe(tlsSocket);
      tlsSocket.on('close', () => upstream.destroy());
      upstream.on('close', () => tlsSocket.destroy());
    });
    listener.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    port = (listener.address() as AddressInfo).port;
  });

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => listener?.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  it('publishes and consumes over TLS when given the CA', async () => {
    const received: string[] = [];
    @Injectable()
    class Secure {
      @OnEvent('Secure.Changed', { consumer: unique('Secure.onChanged') })
      async onChanged(data: { id: string }, _ctx: EventContext) {
        received.push(data.id);
      }
    }
    const app: TestApp = await startApp({
      engine: 'postgres',
      providers: [Secure],
      sync: { url: `amqps://guest:guest@localhost:${port}`, tls: { ca }, startupTimeout: '10s' },
    });
    try {
      const id = unique('secure');
      await app.app.get(SyncPublisher).publish('Secure.Changed', { id });
      await waitFor(() => received.includes(id), { what: 'the event received over TLS' });
      // Publisher and consumer each connected through the TLS listener, naming localhost (SNI).
      expect(handshakes.length).toBeGreaterThanOrEqual(2);
      expect(handshakes.every((handshake) => handshake.servername === 'localhost' && /^TLSv1\.[23]$/.test(handshake.protocol ?? ''))).toBe(true);
    } finally {
      await app.close();
    }
  });

  it('refuses a certificate it cannot verify, and says why', async () => {
    const logs = new LogCapture();
    const before = handshakes.length;
    @Injectable()
    class Untrusting {
      @OnEvent('Secure.Changed', { consumer: unique('Untrusting.onChanged') })
      async onChanged() {}
    }
    const starting = startApp({
      engine: 'postgres',
      providers: [Untrusting],
      logger: logs,
      sync: { url: `amqps://guest:guest@localhost:${port}`, tls: { servername: 'localhost' }, startupTimeout: '2s' },
    });
    await expect(starting).rejects.toThrow(BrokerUnavailableError);
    expect(logs.matching(/self[- ]signed certificate|unable to verify|certificate/i).length).toBeGreaterThan(0);
    // No session was set up: the handshake failed before our listener accepted a connection.
    expect(handshakes.length).toBe(before);
  });
});
