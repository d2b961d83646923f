/**
 * The Prometheus text exposition format for a list of metrics, and the
 * metrics every server has (connections, bytes, the loop, memory).
 *
 * @module
 */

import { counter, gauge, type Metric } from "../handlers/protocols/definition.ts";
import type { ConnectionCounters } from "../handlers/context.ts";
import type { ReactorCounters } from "../reactor/reactor.ts";

/**
 * Renders `metrics` as Prometheus text, each name prefixed `reactor_`, each
 * sample with `labels` (`{worker="1"}`, or "").
 */
export function prometheusText(metrics: readonly Metric[], labels = ""): string {
  const lines: string[] = [];
  for (const m of metrics) {
    lines.push(`# HELP reactor_${m.name} ${m.help}`, `# TYPE reactor_${m.name} ${m.type}`);
    lines.push(`reactor_${m.name}${labels} ${m.value}`);
  }
  return lines.join("\n") + "\n";
}

/** The metrics of the connection layer and the loop, common to every protocol. */
export function coreMetrics(
  open: number,
  c: ConnectionCounters,
  r: ReactorCounters,
  startedAt: number,
): Metric[] {
  const mem = Deno.memoryUsage();
  return [
    gauge("connections_open", "Connections open now.", open),
    counter("connections_accepted_total", "Connections accepted.", c.accepted),
    counter("connections_closed_total", "Connections closed.", c.closed),
    counter("bytes_received_total", "Bytes read from peers.", c.bytesIn),
    counter("bytes_sent_total", "Bytes sent to peers.", c.bytesOut),
    counter("send_eagain_total", "Sends that hit EAGAIN or were partial.", c.sendEagain),
    counter("file_bytes_sent_total", "Bytes sent from files by sendfile(2).", c.fileBytesOut),
    counter(
      "file_truncations_total",
      "File responses reset because the file shrank while being sent.",
      c.fileTruncations,
    ),
    counter("writable_arms_total", "Times writable interest was armed.", c.writableArms),
    counter(
      "high_water_hits_total",
      "Times a connection's output reached high water.",
      c.highWaterHits,
    ),
    counter("read_pauses_total", "Times reading from a peer was paused.", c.readPauses),
    counter("timeouts_total", "Connections closed by a timeout.", c.timeouts),
    counter("overflows_total", "Connections closed at the output cap.", c.overflows),
    counter(
      "protocol_errors_total",
      "Connections closed because their protocol threw.",
      c.protocolErrors,
    ),
    counter("connection_limit_hits_total", "Accept pauses at the cap.", c.connectionLimitHits),
    counter("accept_limit_hits_total", "accept() out of fds/memory.", c.acceptLimitHits),
    counter("accept_errors_total", "accept() errors retried.", c.acceptErrors),
    counter("waits_total", "Wait calls (epoll_wait, poll, select).", r.waits),
    counter("events_total", "Readiness events dispatched.", r.events),
    counter(
      "batch_sleeps_total",
      "Sleeps before a wait so events gather (--batch-wait on epoll, poll and select).",
      r.batchSleeps,
    ),
    counter(
      "handler_errors_total",
      "Handler and timer exceptions caught by the loop.",
      r.handlerErrors,
    ),
    gauge("heap_used_bytes", "JS heap in use.", mem.heapUsed),
    gauge("rss_bytes", "Resident set size.", mem.rss),
    gauge("uptime_seconds", "Seconds since start.", (Date.now() - startedAt) / 1000),
  ];
}
