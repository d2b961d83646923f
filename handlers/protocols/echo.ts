/**
 * Echo: every byte back, in order. Stateless, so one protocol object serves
 * every connection; the bytes go from the shared read buffer straight to
 * `send`. Backpressure is the connection's default: reading from a peer that
 * does not read its echo pauses at the high-water mark.
 *
 * @module
 */

import type { Connection, Protocol } from "../connection.ts";
import type { ProtocolDefinition } from "./definition.ts";

/** The echo protocol. */
export const echoProtocol: Protocol = {
  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    // Connections hand us the shared read buffer from offset 0.
    const ctx = conn.context;
    if (start === 0 && data === ctx.readBuffer) {
      conn.writeFrom(ctx.readBufferPointer, data, end);
    } else {
      conn.write(data, start, end);
    }
  },
};

/** `--app echo`. */
export const echo: ProtocolDefinition = {
  name: "echo",
  summary: "every byte back, in order",
  flags: [],
  create: () => ({ connect: () => echoProtocol }),
};
