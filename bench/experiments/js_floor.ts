/**
 * Experiment "js floor": the leanest epoll HTTP loop JavaScript can run on
 * Deno's FFI, to tell what any JS loop costs over C from what our reactor
 * adds on top.
 *
 *   ../shared/bench/compare c 'js-floor=deno run -A bench/experiments/js_floor.ts' \
 *     'ours=deno run -A main.ts serve --app http --port $PORT'
 *
 * It mirrors `../shared/bench/c_epoll_server.c` line for line: one function,
 * no object per connection, level-triggered, one `recv` per event, one
 * 78-byte response (no Date or Server header) per CRLFCRLF, one `send`. It
 * leaves out everything a server needs: partial sends, backpressure,
 * timeouts, a parser, and turns of Deno's event loop (`epoll_wait(-1)` on
 * the JS thread freezes Deno's timers and signals). Not a design: a
 * measurement. Listens on 127.0.0.1:$PORT (default 8081); stop it with a
 * signal.
 *
 * @module
 */

import {
  accept4,
  close,
  epoll_create1,
  epoll_ctl,
  epoll_wait,
  recv_ptr,
  send_ptr,
  setsockopt,
} from "../../syscalls/libc.ts";
import {
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLLIN,
  EPOLLRDHUP,
  IPPROTO_TCP,
  MSG_NOSIGNAL,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  TCP_NODELAY,
} from "../../syscalls/constants.ts";
import { epollEventLayout } from "../../syscalls/layout.ts";
import { listenTcp } from "../../syscalls/socket.ts";

const MAX_EVENTS = 1024;
const layout = epollEventLayout();
const stride = layout.size >> 2;
const dataWord = layout.dataOffset >> 2;

const listener = listenTcp({ host: "127.0.0.1", port: Number(Deno.env.get("PORT") ?? 8081) });
const epfd = epoll_create1(EPOLL_CLOEXEC);
const events = new Uint8Array(layout.size * MAX_EVENTS);
const eventWords = new Uint32Array(events.buffer);
const ctl = new Uint8Array(layout.size);
const ctlWords = new Uint32Array(ctl.buffer);

function add(fd: number, bits: number): void {
  ctlWords[0] = bits;
  ctlWords[dataWord] = fd;
  epoll_ctl(epfd, EPOLL_CTL_ADD, fd, ctl);
}

const input = new Uint8Array(65536);
const inputPointer = Deno.UnsafePointer.of(input)!;
const RESPONSE = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!",
);
const output = new Uint8Array(65536);
const outputPointer = Deno.UnsafePointer.of(output)!;
const one = new Uint8Array(new Int32Array([1]).buffer);

add(listener, EPOLLIN);
for (;;) {
  const n = epoll_wait(epfd, events, MAX_EVENTS, -1);
  for (let i = 0; i < n; i++) {
    const fd = eventWords[i * stride + dataWord];
    if (fd === listener) {
      for (;;) {
        const c = accept4(listener, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, one, 4);
        add(c, EPOLLIN | EPOLLRDHUP);
      }
      continue;
    }
    const got = recv_ptr(fd, inputPointer, input.length, 0);
    if (got <= 0) {
      epoll_ctl(epfd, EPOLL_CTL_DEL, fd, ctl);
      close(fd);
      continue;
    }
    let length = 0;
    for (let k = 3; k < got; k++) {
      if (input[k] === 10 && input[k - 1] === 13 && input[k - 2] === 10 && input[k - 3] === 13) {
        output.set(RESPONSE, length);
        length += RESPONSE.length;
      }
    }
    if (length > 0) send_ptr(fd, outputPointer, length, MSG_NOSIGNAL);
  }
}
