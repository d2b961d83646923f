/**
 * The protocols `--app` can name. Kept apart from `server.ts` so the CLI can
 * validate flags (and print --help) without loading libc: on a system
 * without it that must be a one-line error, not a crash at import.
 *
 * @module
 */

/** The protocols `--app` can name. */
export const APPS = ["http", "echo", "proxy"] as const;
/** One of `APPS`. */
export type AppName = typeof APPS[number];
