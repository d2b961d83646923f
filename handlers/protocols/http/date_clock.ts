/**
 * The Date header's value (RFC 9110 5.6.7, IMF-fixdate), made once a second
 * by a reactor timer set for the start of each second, so responses read a
 * cached string. `generation` moves whenever the value does: caches of
 * prebuilt heads keyed on it know when they are stale.
 *
 * @module
 */

import type { Reactor } from "../../../reactor/reactor.ts";
import type { Timer } from "../../../reactor/timers.ts";

/** Milliseconds to the start of the next second. */
const toNextSecond = () => 1000 - (Date.now() % 1000);

/** One second's Date value, kept current by a reactor timer. */
export class DateClock {
  /** The IMF-fixdate of this second. */
  value: string = new Date().toUTCString();
  /** Bumped each time `value` changes. */
  generation = 0;
  readonly #reactor: Reactor;
  readonly #timer: Timer;

  /**
   * @param reactor whose timer keeps the value current
   * @param onChange called after the value changed (drop caches built on it)
   * @param onSecond called every second (periodic work that shares the timer)
   */
  constructor(reactor: Reactor, onChange?: () => void, onSecond?: () => void) {
    this.#reactor = reactor;
    const tick = () => {
      const value = new Date().toUTCString();
      if (value !== this.value) {
        this.value = value;
        this.generation++;
        onChange?.();
      }
      onSecond?.();
      reactor.resetTimer(this.#timer, toNextSecond());
    };
    this.#timer = reactor.setTimer(toNextSecond(), tick);
  }

  /** Stops the timer. */
  close(): void {
    this.#reactor.cancelTimer(this.#timer);
  }
}
