/**
 * The plainest fetch module: "Hello, World!" on every path. For the
 * compare runs: `deno serve bench/apps/hello.ts` against
 * `reactor serve --module bench/apps/hello.ts`, the same handler on both.
 *
 * @module
 */

export default {
  fetch(): Response {
    return new Response("Hello, World!");
  },
};
