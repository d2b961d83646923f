/**
 * `reactor serve` with RLIMIT_NOFILE lowered first, to provoke EMFILE.
 *
 *   deno run -A tests/support/limited_server.ts SOFT_LIMIT [serve flags...]
 */
import { parseCommandLine } from "../../cli/args.ts";
import { serve } from "../../cli/serve.ts";
import { setOpenFileLimit } from "../../syscalls/socket.ts";

const [limit, ...flags] = Deno.args;
setOpenFileLimit(Number(limit), Number(limit)); // hard too: serve raises soft to hard
const cmd = parseCommandLine(["serve", ...flags]);
if (cmd.command !== "serve") throw new Error("expected serve flags");
Deno.exit(await serve(cmd));
