/**
 * `reactor probe`: a health check that needs no shell or curl in the
 * container: one HTTP GET, exit 0 on 200, 1 otherwise.
 *
 * @module
 */

import type { ProbeCommand } from "./args.ts";
import { formatAddress } from "../syscalls/socket.ts";

/** Returns the exit code: 0 when `GET path` answers 200 within the timeout. */
export async function probe(cmd: ProbeCommand): Promise<number> {
  const url = `http://${formatAddress(cmd.host, cmd.port)}${cmd.path}`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(cmd.timeoutMs) });
    await res.body?.cancel();
    if (res.status === 200) return 0;
    console.error(`probe: ${url} answered ${res.status}`);
    return 1;
  } catch (e) {
    console.error(`probe: ${url}: ${(e as Error).message}`);
    return 1;
  }
}
