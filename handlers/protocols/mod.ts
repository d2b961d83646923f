/**
 * The protocol registry: every protocol `reactor serve --app NAME` and
 * `Server` can name. A new protocol is one file in this folder exporting a
 * `ProtocolDefinition` (see `definition.ts`), plus one line in `PROTOCOLS`
 * below; nothing else names it.
 *
 * @module
 */

import type { ProtocolDefinition } from "./definition.ts";
import { echo } from "./echo.ts";
import { http } from "./http/http.ts";
import { proxy } from "./proxy.ts";

export * from "./definition.ts";

/** The protocols, in the order `--help` lists them; the first is the default. */
export const PROTOCOLS: readonly ProtocolDefinition[] = [http, echo, proxy];

/** The protocol named `name`, or undefined. */
export function findProtocol(name: string): ProtocolDefinition | undefined {
  return PROTOCOLS.find((p) => p.name === name);
}
