/**
 * The results of one poll/select wait: which fds are ready, with what
 * bits and tokens, compacted from the scan of the whole set into three
 * parallel arrays allocated once. (epoll needs none: the kernel fills its
 * events array directly.)
 *
 * @module
 */

/** Parallel result arrays of a scanning backend, and the scan's fairness cursor. */
export class ReadyList {
  /** How many results one wait may return (`--max-events`). */
  readonly capacity: number;
  /** Result i's fd. */
  readonly fds: Int32Array;
  /** Result i's event bits (EPOLL* values). */
  readonly events: Uint32Array;
  /** Result i's registration token. */
  readonly tokens: Uint32Array;
  /**
   * Where the next scan starts: when more fds are ready than `capacity`, the
   * ones after the cut come first next time, so none is starved.
   */
  cursor = 0;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.fds = new Int32Array(capacity);
    this.events = new Uint32Array(capacity);
    this.tokens = new Uint32Array(capacity);
  }
}
