/**
 * A request router that matches the request target's bytes: no string is
 * made per request. Routes are a trie of path segments; a static segment is
 * compared byte for byte (by length, then bytes; a node with many static
 * children finds them by a hash of the bytes computed during the scan for
 * the next "/"), a parameter (`:name`) matches one non-empty segment and is
 * recorded as two offsets, a trailing `*` matches the rest of the path.
 *
 * ```ts ignore
 * const router = new Router()
 *   .get("/", (_req, res) => res.text("home"))
 *   .get("/users/:id/posts/:post", (req, res) => res.json({ id: req.param("id") }))
 *   .get("/static/*", (req, res) => res.text(req.param("*")));
 * ```
 *
 * Rules:
 *
 * - **Segments.** A pattern is "/" then segments separated by "/". Matching
 *   is exact, trailing slash included: `/users` and `/users/` are two paths
 *   (register both if both are wanted). The empty path of an absolute-form
 *   target (`GET http://host HTTP/1.1`) is "/".
 * - **Priority.** At each segment a static child is tried first, then the
 *   parameter, then the wildcard; a branch that fails further down falls
 *   back to the next (`/users/new` beats `/users/:id` for "new", and
 *   `/users/:id` still gets "7").
 * - **Wildcard.** `*` is allowed only as the last segment. It matches the
 *   rest of the path after its "/", slashes included, possibly empty:
 *   `/static/*` matches `/static/` and `/static/a/b.css` but not `/static`.
 *   Its value is the parameter named `"*"`, after the named ones.
 * - **Bytes, not text.** The target is matched as it was sent: nothing is
 *   percent-decoded or normalised. `/caf%C3%A9` matches the pattern
 *   `/caf%C3%A9` (not `/café`, and not `/caf%c3%a9`), a parameter's value is
 *   the raw bytes of its segment (`decodeURIComponent` it if you need the
 *   text), and `%2F` in a segment is not a "/". Patterns must therefore be
 *   ASCII, written the way clients send them (`encodeURI("/café")`).
 * - **Query.** Everything from the first "?" is ignored for matching.
 * - **Methods.** A route is registered for one method (or `all`). HEAD is
 *   served by the GET route when none was registered for HEAD. When a path
 *   matches but no route of it takes the method, the result is 405 and
 *   `allow` lists the methods that path takes; when no path matches, 404.
 *
 * @module
 */

import type { NativeHandler } from "./native.ts";
import {
  METHOD_DELETE,
  METHOD_GET,
  METHOD_HEAD,
  METHOD_OPTIONS,
  METHOD_OTHER,
  METHOD_PATCH,
  METHOD_POST,
  METHOD_PUT,
} from "./http_parser.ts";

const SLASH = 0x2f;
const QUESTION = 0x3f;

/** The parser's method codes by name; anything else is METHOD_OTHER. */
const METHOD_CODES: Record<string, number> = {
  GET: METHOD_GET,
  HEAD: METHOD_HEAD,
  POST: METHOD_POST,
  PUT: METHOD_PUT,
  DELETE: METHOD_DELETE,
  OPTIONS: METHOD_OPTIONS,
  PATCH: METHOD_PATCH,
};

/** A token (RFC 9110 §5.6.2): what a method name may be made of. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** What a parameter name may be. */
const PARAM_NAME = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
/**
 * Bytes a static segment may hold: what the parser lets through in a target,
 * minus "?", "/" and "*" (kept for the wildcard).
 */
const SEGMENT = /^[\x21-\x29\x2b-\x2e\x30-\x3e\x40-\x7e]*$/;

/** Static children past this many are found by a hash of their bytes. */
const LINEAR_MAX = 8;

/** One route: a method, a pattern and what handles it. */
export interface Route<T = NativeHandler> {
  /** A number for this route, unique in its router, from 0 in registration order. */
  readonly id: number;
  /** The method as registered ("GET", or "*" for `all`). */
  readonly method: string;
  /** The pattern as registered. */
  readonly pattern: string;
  /** The handler. */
  readonly handler: T;
  /** The names of its parameters, in order; `"*"` last when it ends in a wildcard. */
  readonly paramNames: readonly string[];
}

/**
 * Where `Router.match` puts its result; reused from request to request, so
 * matching allocates nothing.
 */
export class RouteMatch<T = NativeHandler> {
  /** 200 when a route was found, 404 when no path matched, 405 when the method did not. */
  status = 404;
  /** The route found (status 200), else null. */
  route: Route<T> | null = null;
  /** With 405: the `Allow` header's value for the path that matched. Else "". */
  allow = "";
  /** Whether the route is the GET route serving a HEAD request. */
  headByGet = false;
  /** Parameter `k` is `target[params[2k], params[2k + 1])`. */
  params: Int32Array;
  /** How many parameters the route has. */
  paramCount = 0;
  /** Where the path starts in the target (after the authority of an absolute-form target). */
  pathStart = 0;
  /** Where the path ends in the target: its length, or the index of the first "?". */
  pathEnd = 0;
  /** The target's length. */
  targetEnd = 0;

  /** A result holder for up to `maxParams` parameters (grown by `match` if need be). */
  constructor(maxParams = 4) {
    this.params = new Int32Array(2 * Math.max(1, maxParams));
  }
}

/** The routes of one path (one trie node): by method. */
class Methods<T> {
  /** Index: the parser's METHOD_* code (1 to 7). */
  readonly byCode: (Route<T> | null)[] = [null, null, null, null, null, null, null, null];
  /** Methods the parser has no code for, by name. */
  readonly others = new Map<string, Route<T>>();
  /** The `all` route. */
  any: Route<T> | null = null;
  /** The `Allow` value: the methods registered here, HEAD added when GET is. */
  allow = "";

  find(code: number, name: string): Route<T> | null {
    const r = code === METHOD_OTHER ? (this.others.get(name) ?? null) : this.byCode[code];
    if (r !== null) return r;
    if (code === METHOD_HEAD) {
      const get = this.byCode[METHOD_GET];
      if (get !== null) return get;
    }
    return this.any;
  }

  updateAllow(): void {
    const names: string[] = [];
    for (const [name, code] of Object.entries(METHOD_CODES)) {
      if (this.byCode[code] !== null) names.push(name);
      else if (code === METHOD_HEAD && this.byCode[METHOD_GET] !== null) names.push(name);
    }
    for (const name of this.others.keys()) names.push(name);
    this.allow = names.join(", ");
  }
}

/** A trie node: one segment of a path. */
class Node<T> {
  /** This node's bytes (static nodes). */
  readonly segment: Uint8Array;
  readonly hash: number;
  /** Static children, in registration order. */
  readonly statics: Node<T>[] = [];
  /** With more than LINEAR_MAX static children: hash -> the first child with it. */
  byHash: Map<number, Node<T>> | null = null;
  /** The next static sibling with the same hash. */
  nextSameHash: Node<T> | null = null;
  /** The `:name` child. */
  param: Node<T> | null = null;
  /** The routes of a `*` ending here. */
  wildcard: Methods<T> | null = null;
  /** The routes of the path ending at this node. */
  routes: Methods<T> | null = null;

  constructor(segment: Uint8Array) {
    this.segment = segment;
    this.hash = hashOf(segment, 0, segment.length);
  }

  /** The static child whose bytes are `t[from, to)` (with hash `h`), or null. */
  findStatic(t: Uint8Array, from: number, to: number, h: number): Node<T> | null {
    const len = to - from;
    const map = this.byHash;
    if (map !== null) {
      for (let c = map.get(h) ?? null; c !== null; c = c.nextSameHash) {
        if (sameBytes(c.segment, t, from, len)) return c;
      }
      return null;
    }
    const kids = this.statics;
    for (let k = 0; k < kids.length; k++) {
      const c = kids[k];
      if (c.hash === h && sameBytes(c.segment, t, from, len)) return c;
    }
    return null;
  }

  addStatic(child: Node<T>): void {
    this.statics.push(child);
    if (this.statics.length <= LINEAR_MAX) return;
    const map = new Map<number, Node<T>>();
    // Rebuilt from scratch: chains in registration order.
    for (let k = this.statics.length - 1; k >= 0; k--) {
      const c = this.statics[k];
      c.nextSameHash = map.get(c.hash) ?? null;
      map.set(c.hash, c);
    }
    this.byHash = map;
  }
}

/** A hash of t[from, to): the same the matcher computes while it scans for "/". */
function hashOf(t: Uint8Array, from: number, to: number): number {
  let h = 0;
  for (let k = from; k < to; k++) h = (Math.imul(h, 31) + t[k]) | 0;
  return h;
}

/** Whether t[from, from + len) is exactly `a`. */
function sameBytes(a: Uint8Array, t: Uint8Array, from: number, len: number): boolean {
  if (a.length !== len) return false;
  for (let k = 0; k < len; k++) if (a[k] !== t[from + k]) return false;
  return true;
}

/**
 * Where the path starts in an absolute-form target (`http://authority/path`,
 * scheme in any case, RFC 9112 §3.2.2): the index of the "/", "?" or end after
 * the authority; -1 for anything else that does not start with "/" (the
 * asterisk form, authority form, other schemes).
 */
function absolutePathStart(t: Uint8Array, start: number, end: number): number {
  const len = end - start;
  if (len < 7 || (t[start] | 0x20) !== 0x68 || (t[start + 1] | 0x20) !== 0x74) return -1;
  if ((t[start + 2] | 0x20) !== 0x74 || (t[start + 3] | 0x20) !== 0x70) return -1;
  let k = start + ((t[start + 4] | 0x20) === 0x73 ? 5 : 4);
  if (k + 3 > end || t[k] !== 0x3a || t[k + 1] !== SLASH || t[k + 2] !== SLASH) return -1;
  k += 3;
  while (k < end && t[k] !== SLASH && t[k] !== QUESTION) k++;
  return k;
}

const encoder = new TextEncoder();
const ROOT_PATH = encoder.encode("/");

/**
 * Routes by method and path, matched on the target's bytes. `T` is what a
 * route carries: a `NativeHandler` for `nativeProtocol`, anything for other
 * uses. The methods that add routes return the router, so they chain.
 */
export class Router<T = NativeHandler> {
  readonly #root = new Node<T>(new Uint8Array(0));
  readonly #routes: Route<T>[] = [];
  #maxParams = 0;

  /** Every route, in registration order (index = `Route.id`). */
  get routes(): readonly Route<T>[] {
    return this.#routes;
  }

  /** The most parameters any route has. */
  get maxParams(): number {
    return this.#maxParams;
  }

  /** Adds a GET route (it serves HEAD too, unless a HEAD route is added for the path). */
  get(pattern: string, handler: T): this {
    return this.on("GET", pattern, handler);
  }

  /** Adds a HEAD route (the answer's body is never sent). */
  head(pattern: string, handler: T): this {
    return this.on("HEAD", pattern, handler);
  }

  /** Adds a POST route. */
  post(pattern: string, handler: T): this {
    return this.on("POST", pattern, handler);
  }

  /** Adds a PUT route. */
  put(pattern: string, handler: T): this {
    return this.on("PUT", pattern, handler);
  }

  /** Adds a DELETE route. */
  delete(pattern: string, handler: T): this {
    return this.on("DELETE", pattern, handler);
  }

  /** Adds a PATCH route. */
  patch(pattern: string, handler: T): this {
    return this.on("PATCH", pattern, handler);
  }

  /** Adds an OPTIONS route. */
  options(pattern: string, handler: T): this {
    return this.on("OPTIONS", pattern, handler);
  }

  /** Adds a route for every method (one registered for the method itself wins). */
  all(pattern: string, handler: T): this {
    return this.on("*", pattern, handler);
  }

  /**
   * Adds a route for `method` (case-sensitive, as HTTP methods are: "GET";
   * any token, e.g. "PROPFIND"; "*" for all).
   *
   * @throws {TypeError} for a malformed method or pattern, or a route that
   * is already there
   */
  on(method: string, pattern: string, handler: T): this {
    if (method !== "*" && !TOKEN.test(method)) {
      throw new TypeError(`Invalid method ${JSON.stringify(method)}`);
    }
    if (!pattern.startsWith("/")) {
      throw new TypeError(`A route pattern starts with "/": ${JSON.stringify(pattern)}`);
    }
    const parts = pattern.slice(1).split("/");
    const names: string[] = [];
    let node = this.#root;
    let methods: Methods<T> | null = null;
    for (let k = 0; k < parts.length; k++) {
      const part = parts[k];
      if (part === "*") {
        if (k !== parts.length - 1) {
          throw new TypeError(`"*" must be the last segment: ${JSON.stringify(pattern)}`);
        }
        names.push("*");
        methods = node.wildcard ??= new Methods<T>();
        break;
      }
      if (part.startsWith(":")) {
        const name = part.slice(1);
        if (!PARAM_NAME.test(name)) {
          throw new TypeError(`Invalid parameter name in ${JSON.stringify(pattern)}: "${part}"`);
        }
        if (names.includes(name)) {
          throw new TypeError(`Parameter "${name}" twice in ${JSON.stringify(pattern)}`);
        }
        names.push(name);
        node = node.param ??= new Node<T>(new Uint8Array(0));
        continue;
      }
      if (!SEGMENT.test(part)) {
        throw new TypeError(
          `Invalid segment "${part}" in ${JSON.stringify(pattern)}: patterns are matched ` +
            `against the bytes clients send, so write them as sent (ASCII, ` +
            `percent-encoded: encodeURI), without "?" or "*" inside a segment`,
        );
      }
      const bytes = encoder.encode(part);
      let child = node.findStatic(bytes, 0, bytes.length, hashOf(bytes, 0, bytes.length));
      if (child === null) {
        child = new Node<T>(bytes);
        node.addStatic(child);
      }
      node = child;
    }
    methods ??= node.routes ??= new Methods<T>();
    const route: Route<T> = {
      id: this.#routes.length,
      method,
      pattern,
      handler,
      paramNames: names,
    };
    const code = METHOD_CODES[method] ?? METHOD_OTHER;
    const taken = method === "*"
      ? methods.any
      : code === METHOD_OTHER
      ? (methods.others.get(method) ?? null)
      : methods.byCode[code];
    if (taken !== null) {
      throw new TypeError(`${method} ${pattern} is already routed (as ${taken.pattern})`);
    }
    if (method === "*") methods.any = route;
    else if (code === METHOD_OTHER) methods.others.set(method, route);
    else methods.byCode[code] = route;
    methods.updateAllow();
    this.#routes.push(route);
    if (names.length > this.#maxParams) this.#maxParams = names.length;
    return this;
  }

  /**
   * Matches a request: `code` is the parser's METHOD_* code, `name` the
   * method's text (only read for METHOD_OTHER), `t[start, end)` the target.
   * Fills `out` and returns its status (200, 404 or 405). Allocates nothing
   * (unless `out` has room for fewer parameters than some route has).
   */
  match(
    code: number,
    name: string,
    t: Uint8Array,
    start: number,
    end: number,
    out: RouteMatch<T>,
  ): number {
    if (out.params.length < 2 * this.#maxParams) out.params = new Int32Array(2 * this.#maxParams);
    out.route = null;
    out.allow = "";
    out.headByGet = false;
    out.paramCount = 0;
    out.targetEnd = end;
    let from = start;
    if (from < end && t[from] !== SLASH) {
      from = absolutePathStart(t, start, end);
      if (from < 0) {
        out.pathStart = out.pathEnd = start;
        out.status = 404;
        return 404;
      }
    }
    let stop = from;
    while (stop < end && t[stop] !== QUESTION) stop++;
    out.pathStart = from;
    out.pathEnd = stop;
    let found: Methods<T> | null;
    this.#pathMatch = null;
    if (from === stop) {
      // An absolute-form target with an empty path: that is "/" (RFC 9110 §4.2.3).
      found = this.#walk(this.#root, ROOT_PATH, 1, 1, 0, code, name, out);
    } else {
      found = this.#walk(this.#root, t, from + 1, stop, 0, code, name, out);
    }
    if (found !== null) {
      const route = found.find(code, name)!;
      out.route = route;
      out.headByGet = code === METHOD_HEAD && route.method === "GET";
      out.status = 200;
      this.#pathMatch = null;
      return 200;
    }
    const pathMatch = this.#pathMatch as Methods<T> | null;
    this.#pathMatch = null;
    if (pathMatch !== null) {
      out.allow = pathMatch.allow;
      out.status = 405;
      return 405;
    }
    out.status = 404;
    return 404;
  }

  /** The first path that matched without the method, during a match (for 405). */
  #pathMatch: Methods<T> | null = null;

  /**
   * Matches the segments of t[i, end) (i just after a "/") below `node`;
   * returns the routes of a path that takes the method, recording `p`
   * parameters so far in `out`.
   */
  #walk(
    node: Node<T>,
    t: Uint8Array,
    i: number,
    end: number,
    p: number,
    code: number,
    name: string,
    out: RouteMatch<T>,
  ): Methods<T> | null {
    let j = i;
    let h = 0;
    for (; j < end; j++) {
      const b = t[j];
      if (b === SLASH) break;
      h = (Math.imul(h, 31) + b) | 0;
    }
    const last = j >= end;
    const child = node.findStatic(t, i, j, h);
    if (child !== null) {
      const r = last ? this.#accept(child.routes, p, code, name, out) : this.#walk(
        child,
        t,
        j + 1,
        end,
        p,
        code,
        name,
        out,
      );
      if (r !== null) return r;
    }
    const param = node.param;
    if (param !== null && j > i) {
      const params = out.params;
      params[2 * p] = i;
      params[2 * p + 1] = j;
      const r = last
        ? this.#accept(param.routes, p + 1, code, name, out)
        : this.#walk(param, t, j + 1, end, p + 1, code, name, out);
      if (r !== null) return r;
    }
    if (node.wildcard !== null) {
      const params = out.params;
      params[2 * p] = i;
      params[2 * p + 1] = end;
      return this.#accept(node.wildcard, p + 1, code, name, out);
    }
    return null;
  }

  /** The routes of a path that matched: themselves if they take the method, else null (noted for 405). */
  #accept(
    m: Methods<T> | null,
    p: number,
    code: number,
    name: string,
    out: RouteMatch<T>,
  ): Methods<T> | null {
    if (m === null) return null;
    if (m.find(code, name) === null) {
      this.#pathMatch ??= m;
      return null;
    }
    out.paramCount = p;
    return m;
  }

  /**
   * Matches `method` and `target` given as strings (for tests and tools; it
   * allocates). The target is taken as sent: ASCII, percent-encoded.
   */
  lookup(
    method: string,
    target: string,
  ): { status: number; route: Route<T> | null; params: Record<string, string>; allow: string } {
    const bytes = encoder.encode(target);
    const out = new RouteMatch<T>(this.#maxParams);
    this.match(METHOD_CODES[method] ?? METHOD_OTHER, method, bytes, 0, bytes.length, out);
    const params: Record<string, string> = {};
    if (out.route !== null) {
      const names = out.route.paramNames;
      for (let k = 0; k < out.paramCount; k++) {
        params[names[k]] = String.fromCharCode(
          ...bytes.subarray(out.params[2 * k], out.params[2 * k + 1]),
        );
      }
    }
    return { status: out.status, route: out.route, params, allow: out.allow };
  }
}
