/**
 * The reactor shares the JS thread with Deno's own loop: Deno timers and
 * signal listeners must fire on time while the server idles and while it is
 * busy.
 */
import assert from "node:assert/strict";
import { withServer } from "./support/server.ts";
import { sleep, waitFor } from "./support/net.ts";

const ROOT = new URL("../", import.meta.url).pathname;

async function timerLateness(ms: number): Promise<number> {
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return performance.now() - t0 - ms;
}

async function signalLatency(): Promise<number> {
  let got = -1;
  const listener = () => {
    got = performance.now();
  };
  Deno.addSignalListener("SIGUSR2", listener);
  try {
    const sent = performance.now();
    Deno.kill(Deno.pid, "SIGUSR2");
    assert.ok(await waitFor(() => got >= 0, 2000), "the signal listener never ran");
    return got - sent;
  } finally {
    Deno.removeSignalListener("SIGUSR2", listener);
  }
}

Deno.test("liveness: setTimeout and a signal listener fire on time while the server is idle", async () => {
  await withServer({}, async (server) => {
    await sleep(20);
    for (let i = 0; i < 5; i++) {
      const late = await timerLateness(50);
      assert.ok(late < 20, `setTimeout(50) fired ${late.toFixed(1)} ms late`);
    }
    const lat = await signalLatency();
    assert.ok(lat < 50, `signal listener ran after ${lat.toFixed(1)} ms`);
    assert.ok(server.reactor.counters.parkedWaits >= 1, "idle reactor never parked");
  });
});

Deno.test("liveness: setTimeout and a signal listener fire on time while 50 clients keep it busy", async () => {
  await withServer({}, async (server) => {
    const load = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ROOT + "tests/support/echo_load.ts", String(server.port), "50", "2500"],
      stdout: "piped",
    }).spawn();
    await sleep(700); // let the load ramp up
    const eventsBefore = server.reactor.counters.events;
    const lateness: number[] = [];
    for (let i = 0; i < 10; i++) lateness.push(await timerLateness(50));
    const signals: number[] = [];
    for (let i = 0; i < 5; i++) signals.push(await signalLatency());
    const busyEvents = server.reactor.counters.events - eventsBefore;
    const out = await load.output();
    const { trips } = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.ok(trips > 1000, `the load did ${trips} round trips only`);
    assert.ok(busyEvents > 1000, `the server handled only ${busyEvents} events meanwhile`);
    const worst = Math.max(...lateness);
    assert.ok(worst < 25, `setTimeout(50) fired up to ${worst.toFixed(1)} ms late: ${lateness}`);
    const worstSignal = Math.max(...signals);
    console.log(
      `under load: setTimeout(50) late by ${lateness.map((l) => l.toFixed(1)).join(", ")} ms; ` +
        `signal listener after ${signals.map((l) => l.toFixed(1)).join(", ")} ms`,
    );
    assert.ok(worstSignal < 50, `signal listener took up to ${worstSignal.toFixed(1)} ms`);
  });
});
