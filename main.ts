/**
 * The `reactor` command: parses flags, builds the server, nothing else.
 *
 * @module
 */

import { parseCommandLine, UsageError } from "./cli/args.ts";
import { LIBC_ERROR } from "./syscalls/libc.ts";

function fail(message: string, code: number): never {
  console.error(`reactor: ${message}`);
  Deno.exit(code);
}

async function main(argv: string[]): Promise<void> {
  let cmd;
  try {
    cmd = parseCommandLine(argv);
  } catch (e) {
    if (e instanceof UsageError) fail(`${e.message} (see reactor --help)`, 2);
    throw e;
  }
  if (cmd.command === "help" || cmd.command === "version") {
    console.log(cmd.text);
    return;
  }
  if (Deno.build.os !== "linux" || !["x86_64", "aarch64"].includes(Deno.build.arch)) {
    fail(`needs Linux on x86_64 or aarch64 (epoll via libc); this is ${Deno.build.target}`, 1);
  }
  // Importing syscalls/ never throws: without a usable libc every binding
  // would throw when called, so say why once, here.
  if (LIBC_ERROR !== null) fail(LIBC_ERROR, 1);
  if (cmd.command === "probe") {
    const { probe } = await import("./cli/probe.ts");
    Deno.exit(await probe(cmd));
  }
  // Loaded only when needed: the server's modules, or the probe's.
  const { serve } = await import("./cli/serve.ts");
  Deno.exit(await serve(cmd));
}

if (import.meta.main) await main(Deno.args);
