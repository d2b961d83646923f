/**
 * The experiments' snapshot protocol, answering side (the measuring side is
 * `ServerSnapshot` in `common.ts`): on SIGUSR2, collect garbage when
 * `--v8-flags=--expose-gc` exposed `gc()`, then append one JSON line
 * `{seq, t, connections, counters, memory}` to the file named by
 * `$SNAPSHOT_FILE` (stdout when unset). SIGUSR1 is not used: it starts V8's
 * inspector in Deno, as in Node.
 *
 * @module
 */

/** What the process reports besides its memory. */
export interface SnapshotState {
  /** Connections open now. */
  connections: number;
  /** Counters to difference over a window (may be empty). */
  counters: Record<string, number>;
}

/** Answers every SIGUSR2 with a snapshot of `state()` and `Deno.memoryUsage()`. */
export function answerSnapshots(state: () => SnapshotState): void {
  const file = Deno.env.get("SNAPSHOT_FILE");
  const gc = (globalThis as { gc?: () => void }).gc;
  let seq = 0;
  Deno.addSignalListener("SIGUSR2", () => {
    if (gc) gc();
    const line = JSON.stringify({
      seq: ++seq,
      t: performance.now(),
      ...state(),
      memory: Deno.memoryUsage(),
    });
    if (file) Deno.writeTextFileSync(file, line + "\n", { append: true });
    else console.log(line);
  });
}
