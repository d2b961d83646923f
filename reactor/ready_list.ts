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

/**
 * What the scanning backends (poll, select) share: their results are a
 * `ReadyList`, filled by each wait and read by index.
 */
export abstract class ScanningBackend {
  /** This wait's results. */
  protected readonly ready: ReadyList;

  /** `maxEvents` bounds how many results one wait returns (the rest come next time). */
  constructor(maxEvents: number) {
    this.ready = new ReadyList(maxEvents);
  }

  /** Result i's fd. */
  resultFd(i: number): number {
    return this.ready.fds[i];
  }

  /** Result i's event bits. */
  resultEvents(i: number): number {
    return this.ready.events[i];
  }

  /** Result i's registration token. */
  resultToken(i: number): number {
    return this.ready.tokens[i];
  }
}
