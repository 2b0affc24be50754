// Helpers shared by the Node processes of bench/peers.py: the clock, percentiles, stdin commands.
"use strict";
const readline = require("node:readline");

// CLOCK_MONOTONIC in seconds, the clock Python's bench.common.now() reads: times compare across processes.
function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function percentile(values, q) {
  if (values.length === 0) return 0;
  const ordered = Float64Array.from(values).sort();
  const rank = Math.min(ordered.length - 1, Math.max(0, Math.ceil((q / 100) * ordered.length) - 1));
  return ordered[rank];
}

function latencySummary(values) {
  return {
    n: values.length,
    p50_ms: percentile(values, 50) * 1e3,
    p90_ms: percentile(values, 90) * 1e3,
    p99_ms: percentile(values, 99) * 1e3,
  };
}

// Calls handler(words) for every line on stdin; `quit` (or the end of stdin) calls onQuit.
function commands(handler, onQuit) {
  const lines = readline.createInterface({ input: process.stdin });
  lines.on("line", async (line) => {
    const words = line.trim().split(/\s+/);
    if (words[0] === "quit") {
      lines.close();
      return;
    }
    try {
      await handler(words);
    } catch (err) {
      console.log("ERROR " + JSON.stringify(String(err && err.stack ? err.stack : err)));
    }
  });
  lines.on("close", onQuit);
}

// A message's payload, the same shape as web.message.client_event's `new_message`, stamped with `t`.
function messagePayload(content, t) {
  return {
    id: content,
    threadId: null,
    parentId: null,
    createdAt: "",
    output: content,
    name: "Assistant",
    type: "assistant_message",
    streaming: false,
    isError: false,
    metadata: { t },
  };
}

// Sends at `rate` per second for `seconds`, in ticks of 10 ms (never a sub-millisecond timer); each
// tick starts the messages due by then, concurrently. Returns {sent, seconds, errors}.
async function paced(rate, seconds, sendOne) {
  const start = now();
  let sent = 0;
  let errors = 0;
  const inflight = new Set();
  while (true) {
    const elapsed = now() - start;
    if (elapsed >= seconds) break;
    const due = Math.floor(rate * elapsed);
    while (sent < due) {
      const p = sendOne(sent).catch(() => {
        errors += 1;
      });
      inflight.add(p);
      p.finally(() => inflight.delete(p));
      sent += 1;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await Promise.all(inflight);
  return { sent, seconds: now() - start, errors };
}

// Sends n messages as fast as possible from k concurrent loops.
async function blast(n, k, sendOne) {
  const start = now();
  let next = 0;
  let errors = 0;
  async function loop() {
    while (next < n) {
      const i = next++;
      try {
        await sendOne(i);
      } catch (err) {
        errors += 1;
      }
    }
  }
  await Promise.all(Array.from({ length: k }, loop));
  return { sent: n, seconds: now() - start, errors, t_start: start, t_end: now() };
}

module.exports = { now, percentile, latencySummary, commands, messagePayload, paced, blast };
