/**
 * libc through FFI: raw bindings (`libc.ts`), constants, errno and
 * `SyscallError`, struct layouts and socket set-up helpers. The only module
 * tree that calls `Deno.dlopen`.
 *
 * @module
 */

export * from "./constants.ts";
export * from "./errno.ts";
export * from "./io_uring.ts";
export * from "./layout.ts";
export * from "./libc.ts";
export * from "./socket.ts";
