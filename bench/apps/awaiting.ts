/**
 * A fetch module whose routes await different things, for
 * bench/experiments/async_latency.ts: `deno serve bench/apps/awaiting.ts` and
 * `reactor serve --module bench/apps/awaiting.ts` serve the same.
 *
 * - `/`       answers at once
 * - `/micro`  awaits a resolved promise (a microtask)
 * - `/timer`  awaits setTimeout(0)
 * - `/file`   awaits Deno.readFile of this file
 * - `/fetch`  awaits a fetch to UPSTREAM_URL (a second local server)
 *
 * @module
 */

const self = new URL(import.meta.url).pathname;
const upstream = Deno.env.get("UPSTREAM_URL") ?? "";

export default {
  async fetch(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    switch (path) {
      case "/micro":
        await Promise.resolve();
        return new Response("micro");
      case "/timer":
        await new Promise((r) => setTimeout(r, 0));
        return new Response("timer");
      case "/file": {
        const bytes = await Deno.readFile(self);
        return new Response(`file ${bytes.length}`);
      }
      case "/fetch": {
        const r = await fetch(upstream);
        return new Response(`fetch ${(await r.text()).length}`);
      }
      default:
        return new Response("Hello, World!");
    }
  },
};
