/**
 * Linux constants for the calls bound in `libc.ts`, with the values of
 * x86_64 and aarch64 (the two architectures we support; they agree on every
 * value used here because both follow asm-generic).
 *
 * @module
 */

/** `AF_UNIX`: local sockets (used by `socketpair` in tests and experiments). */
export const AF_UNIX = 1;
/** `AF_INET`: IPv4. */
export const AF_INET = 2;
/** `AF_INET6`: IPv6. */
export const AF_INET6 = 10;
/** `SOCK_STREAM`: TCP. */
export const SOCK_STREAM = 1;
/** `SOCK_NONBLOCK` for `socket`/`accept4`: the fd starts nonblocking (saves an fcntl). */
export const SOCK_NONBLOCK = 0o4000;
/** `SOCK_CLOEXEC` for `socket`/`accept4`: the fd is not inherited by children we spawn. */
export const SOCK_CLOEXEC = 0o2000000;

/** `SOL_SOCKET`: socket-level options. */
export const SOL_SOCKET = 1;
/** `SO_REUSEADDR`: bind again right after a restart despite TIME_WAIT. */
export const SO_REUSEADDR = 2;
/** `SO_ERROR`: the pending error of a socket (nonblocking connect result). */
export const SO_ERROR = 4;
/** `SO_LINGER`: with `{ l_onoff: 1, l_linger: 0 }`, close() sends RST instead of FIN. */
export const SO_LINGER = 13;
/** `SO_SNDBUF`: send buffer size. */
export const SO_SNDBUF = 7;
/** `SO_RCVBUF`: receive buffer size. */
export const SO_RCVBUF = 8;
/** `SO_REUSEPORT`: several sockets (processes) listen on one port; the kernel balances. */
export const SO_REUSEPORT = 15;
/** `IPPROTO_TCP`: TCP-level options. */
export const IPPROTO_TCP = 6;
/** `TCP_NODELAY`: no Nagle delay for small responses. */
export const TCP_NODELAY = 1;
/** `IPPROTO_IPV6`: IPv6-level options. */
export const IPPROTO_IPV6 = 41;
/** `IPV6_V6ONLY`: an IPv6 listener does not also take IPv4-mapped connections. */
export const IPV6_V6ONLY = 26;
/** `SOMAXCONN` on kernels since 5.4; `listen` clamps the backlog to the sysctl anyway. */
export const SOMAXCONN = 4096;

/** `MSG_PEEK`: read without consuming. */
export const MSG_PEEK = 2;
/** `MSG_DONTWAIT`: nonblocking for this call only. */
export const MSG_DONTWAIT = 0x40;
/** `MSG_NOSIGNAL`: a send to a closed peer returns EPIPE instead of raising SIGPIPE. */
export const MSG_NOSIGNAL = 0x4000;
/** `MSG_MORE`: more follows: let the kernel coalesce this send with the next. */
export const MSG_MORE = 0x8000;

/** `shutdown` how: stop reading. */
export const SHUT_RD = 0;
/** `shutdown` how: stop writing (sends FIN). */
export const SHUT_WR = 1;
/** `shutdown` how: both. */
export const SHUT_RDWR = 2;

/** `fcntl` command: read the file status flags. */
export const F_GETFL = 3;
/** `fcntl` command: set the file status flags. */
export const F_SETFL = 4;
/** `fcntl` command: duplicate an fd onto the lowest free fd >= the argument, close-on-exec. */
export const F_DUPFD_CLOEXEC = 1030;
/** File status flag: nonblocking IO. */
export const O_NONBLOCK = 0o4000;

/** `epoll_create1` flag: close-on-exec. */
export const EPOLL_CLOEXEC = 0o2000000;
/** `epoll_ctl` op: add an fd to the interest list. */
export const EPOLL_CTL_ADD = 1;
/** `epoll_ctl` op: remove an fd. */
export const EPOLL_CTL_DEL = 2;
/** `epoll_ctl` op: change an fd's events. */
export const EPOLL_CTL_MOD = 3;

/** Readable, or the peer closed (a read then returns 0). Same value as POLLIN. */
export const EPOLLIN = 0x001;
/** Urgent (out-of-band) data. Same value as POLLPRI. */
export const EPOLLPRI = 0x002;
/** Writable: room in the send buffer. Same value as POLLOUT. */
export const EPOLLOUT = 0x004;
/** Error condition; always reported, need not be asked for. */
export const EPOLLERR = 0x008;
/** Hang-up: both directions closed; always reported. */
export const EPOLLHUP = 0x010;
/** The peer shut down its writing half; buffered data can still be read. */
export const EPOLLRDHUP = 0x2000;
/** Only one of several epoll instances waiting on the fd is woken (Linux 4.5+). */
export const EPOLLEXCLUSIVE = 1 << 28;
/** After one event the fd is disabled until re-armed with EPOLL_CTL_MOD. */
export const EPOLLONESHOT = 1 << 30;
/** Edge-triggered: report transitions to ready, not the ready state. (1 << 31, negative as i32.) */
export const EPOLLET = 1 << 31;

/** poll(2) bits; equal to the EPOLL ones, which lets backends share one event mask. */
export const POLLIN = 0x001;
/** See POLLIN. */
export const POLLPRI = 0x002;
/** See POLLIN. */
export const POLLOUT = 0x004;
/** See POLLIN. */
export const POLLERR = 0x008;
/** See POLLIN. */
export const POLLHUP = 0x010;
/** The fd is not open: poll's answer to a closed fd in the array. */
export const POLLNVAL = 0x020;
/** See EPOLLRDHUP. */
export const POLLRDHUP = 0x2000;

/** `select` handles fds below this only (glibc's fd_set is 1024 bits on every arch). */
export const FD_SETSIZE = 1024;

/** `eventfd` flag: nonblocking. */
export const EFD_NONBLOCK = 0o4000;
/** `eventfd` flag: close-on-exec. */
export const EFD_CLOEXEC = 0o2000000;

/** `getrlimit` resource: the open-files limit. */
export const RLIMIT_NOFILE = 7;
