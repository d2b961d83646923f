/**
 * Runs an in-process server for the length of a test.
 *
 * @module
 */

import { Server, type ServerOptions } from "../../server/server.ts";

/** Starts a server on 127.0.0.1 and a free port, runs `fn`, always stops it. */
export async function withServer(
  opts: Partial<ServerOptions>,
  fn: (server: Server) => Promise<void>,
): Promise<void> {
  const server = await Server.start({ app: "echo", host: "127.0.0.1", port: 0, ...opts });
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}
