/**
 * Echo: every byte back, in order. Stateless, so one protocol object serves
 * every connection; the bytes go from the shared read buffer straight to
 * `send`.
 *
 * @module
 */

import type { Connection, Protocol } from "../connection.ts";

/** The echo protocol. */
export const echoProtocol: Protocol = {
  data(conn: Connection, data: Uint8Array, start: number, end: number): void {
    // Connections hand us the reactor's read buffer from offset 0.
    if (start === 0 && data === conn.reactor.readBuffer) {
      conn.writeFrom(conn.reactor.readBufferPointer, data, end);
    } else {
      conn.write(data, start, end);
    }
  },
};
