/*
 * openloop: an open-loop HTTP/1.1 load generator that reports latency.
 *
 *   openloop PORT CONNECTIONS RATE SECONDS [PATH]
 *
 * Sends RATE requests per second in all, spread evenly over CONNECTIONS
 * keep-alive connections to 127.0.0.1:PORT, each on its own fixed schedule,
 * whether or not the answer to the last one came (a late answer does not
 * delay the next request: they pipeline). A request's latency runs from the
 * time it was due, not the time it was sent, so a client or server that
 * falls behind shows it (no coordinated omission). The first second is
 * warm-up. Prints one line: requests answered, p50/p90/p99/p99.9/max in µs,
 * and how many sends were late by more than 1 ms.
 *
 * Why: wrk is closed-loop. Against it, latency is fixed by throughput
 * (connections / rate), so it cannot show what a server's loop policy (a
 * batched wait, say) costs in latency at a load below saturation.
 *
 * Build: cc -O2 -o openloop openloop.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_OUT 4096 /* answers one connection may owe */

typedef struct {
  int fd;
  int64_t next_ns;       /* when its next request is due */
  int64_t due[MAX_OUT];  /* due times of requests sent, not yet answered */
  int head, count;
  char buf[65536];
  int have;
} conn_t;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Length of the first complete response in b[0, n), or 0 if not complete. */
static int response_length(const char *b, int n) {
  const char *end = memmem(b, n, "\r\n\r\n", 4);
  if (end == NULL) return 0;
  int head = (int)(end - b) + 4;
  long body = 0;
  for (const char *p = b; p < end; p++) {
    if ((p == b || p[-1] == '\n') && end - p > 15 && strncasecmp(p, "content-length:", 15) == 0) {
      body = strtol(p + 15, NULL, 10);
      break;
    }
  }
  return head + body <= n ? head + (int)body : 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: openloop PORT CONNECTIONS RATE SECONDS [PATH]\n");
    return 2;
  }
  int port = atoi(argv[1]), nconn = atoi(argv[2]);
  double rate = atof(argv[3]), seconds = atof(argv[4]);
  const char *path = argc > 5 ? argv[5] : "/";
  if (port <= 0 || nconn <= 0 || rate <= 0 || seconds <= 0) {
    fprintf(stderr, "openloop: PORT, CONNECTIONS, RATE and SECONDS must be positive\n");
    return 2;
  }
  prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 µs: sends leave on time, not up to 50 µs late */
  char req[512];
  int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
  int64_t interval = (int64_t)(1e9 * nconn / rate); /* per connection */
  conn_t *conns = calloc(nconn, sizeof(conn_t));
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int64_t start = now_ns() + 100000000; /* 100 ms to connect */
  for (int i = 0; i < nconn; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
      perror("openloop: connect");
      return 1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    conns[i].fd = fd;
    conns[i].next_ns = start + (int64_t)i * interval / nconn; /* staggered */
  }
  int64_t warm_end = start + 1000000000;
  int64_t stop = warm_end + (int64_t)(seconds * 1e9);
  size_t cap = (size_t)(rate * seconds * 1.1) + 1024, nlat = 0;
  int64_t *lat = malloc(cap * sizeof(int64_t));
  long late = 0, sent = 0;
  struct epoll_event evs[256];
  for (;;) {
    int64_t t = now_ns();
    int64_t soonest = INT64_MAX;
    for (int i = 0; i < nconn; i++) {
      conn_t *c = &conns[i];
      while (c->next_ns <= t && c->next_ns < stop) {
        if (c->count == MAX_OUT) {
          fprintf(stderr, "openloop: %d answers owed on one connection: the server fell behind\n", MAX_OUT);
          return 1;
        }
        if (t - c->next_ns > 1000000) late++;
        if (write(c->fd, req, reqlen) != reqlen) {
          perror("openloop: write");
          return 1;
        }
        c->due[(c->head + c->count++) % MAX_OUT] = c->next_ns;
        c->next_ns += interval;
        sent++;
      }
      if (c->next_ns < soonest) soonest = c->next_ns;
    }
    int owed = 0;
    for (int i = 0; i < nconn; i++) owed += conns[i].count;
    if (t >= stop && owed == 0) break;
    if (t >= stop + 2000000000LL) {
      fprintf(stderr, "openloop: %d answers still owed 2 s after the end\n", owed);
      return 1;
    }
    int64_t wait = soonest == INT64_MAX || soonest < t ? 0 : soonest - t;
    if (t >= stop) wait = 10000000;
    /* Sleep until the next send is due (ns timeout, 1 µs timer slack): no spinning, so the
     * client leaves the server's core alone on a small machine. */
    struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
    int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
    int64_t got = now_ns();
    for (int k = 0; k < n; k++) {
      conn_t *c = &conns[evs[k].data.u32];
      int r = read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
      if (r <= 0) {
        fprintf(stderr, "openloop: the server closed a connection (%s)\n", r < 0 ? strerror(errno) : "EOF");
        return 1;
      }
      c->have += r;
      int len;
      while ((len = response_length(c->buf, c->have)) > 0) {
        if (c->count == 0) {
          fprintf(stderr, "openloop: an answer nobody asked for\n");
          return 1;
        }
        int64_t due = c->due[c->head];
        c->head = (c->head + 1) % MAX_OUT;
        c->count--;
        if (due >= warm_end && nlat < cap) lat[nlat++] = got - due;
        memmove(c->buf, c->buf + len, c->have - len);
        c->have -= len;
      }
    }
  }
  if (nlat == 0) {
    fprintf(stderr, "openloop: no answers measured\n");
    return 1;
  }
  qsort(lat, nlat, sizeof(int64_t), cmp64);
#define PCT(p) (lat[(size_t)((p) * (nlat - 1))] / 1000.0)
  printf("%zu answers (%.0f/s), latency µs: p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f max %.0f; late sends %ld of %ld\n",
         nlat, nlat / seconds, PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), lat[nlat - 1] / 1000.0, late, sent);
  return 0;
}
