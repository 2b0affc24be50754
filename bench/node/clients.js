// The clients of bench/peers.py, the same for every server: raw socket.io-client sockets (websocket
// transport, no reconnection), many per process.
//   node clients.js --urls URL[,URL] --path /chat/ws/socket.io --count N --out FILE [--concurrency C]
// Socket i connects to URLs[i % len]; each server answers a connect with `session` {sessionId}. The
// session ids go to FILE, one a line, as "URL SESSION_ID". Prints `READY {json}` (connected, failed,
// seconds: the setup time), then obeys stdin:
//   mark     forget what was received so far
//   report   REPORT {json}: messages and tokens received since the mark, their latency (now minus the
//            sender's `t`), first and last arrival, sockets still connected, disconnect reasons
//   close    disconnect every socket, then print CLOSED {json}
//   quit
// A `new_message` carries its send time in metadata.t; a `stream_token` (or the `stream_start` of a
// stream, whose content is its first token) carries one or more tokens "t<seconds>;" (several when
// they were coalesced), each with its own send time.
"use strict";
const fs = require("node:fs");
const { io } = require("socket.io-client");
const { now, latencySummary, commands } = require("./common");

function option(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const urls = option("urls").split(",");
  const path = option("path", "/chat/ws/socket.io");
  const count = Number(option("count"));
  const concurrency = Number(option("concurrency", "20"));
  const sockets = [];
  const sessions = [];
  let failed = 0;
  let received = 0;
  let tokenEvents = 0;
  let latencies = [];
  let tokenLatencies = [];
  let first = 0;
  let last = 0;
  const disconnects = {};

  function arrived(t) {
    if (received === 0 && tokenEvents === 0) first = t;
    last = t;
  }

  function open(i) {
    return new Promise((resolve) => {
      const url = urls[i % urls.length];
      const socket = io(url, { path, transports: ["websocket"], reconnection: false, timeout: 60000 });
      socket.on("session", (data) => {
        sockets.push(socket);
        sessions.push(`${url} ${data.sessionId}`);
        resolve();
      });
      socket.on("connect_error", () => {
        failed += 1;
        socket.close();
        resolve();
      });
      socket.on("new_message", (data) => {
        const t = now();
        arrived(t);
        received += 1;
        latencies.push(t - data.metadata.t);
      });
      const tokens = (text) => {
        const t = now();
        arrived(t);
        tokenEvents += 1;
        for (const part of text.split(";")) {
          if (part.startsWith("t")) tokenLatencies.push(t - Number(part.slice(1)));
        }
      };
      socket.on("stream_token", (data) => tokens(data.token));
      // Switchboard's Message.stream_token starts a stream with its first token as the content.
      socket.on("stream_start", (data) => tokens(data.output));
      socket.on("disconnect", (reason) => {
        disconnects[reason] = (disconnects[reason] || 0) + 1;
      });
    });
  }

  const start = now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await open(next++);
    }),
  );
  const seconds = now() - start;
  fs.writeFileSync(option("out"), sessions.join("\n") + "\n");
  console.log("READY " + JSON.stringify({ connected: sockets.length, failed, seconds }));
  commands(
    async (words) => {
      if (words[0] === "mark") {
        received = 0;
        tokenEvents = 0;
        latencies = [];
        tokenLatencies = [];
        first = last = 0;
        console.log("MARKED");
      } else if (words[0] === "report") {
        const report = {
          received,
          tokenEvents,
          tokens: tokenLatencies.length,
          latency: latencySummary(latencies),
          tokenLatency: latencySummary(tokenLatencies),
          first,
          last,
          connected: sockets.filter((s) => s.connected).length,
          disconnects,
        };
        console.log("REPORT " + JSON.stringify(report));
      } else if (words[0] === "close") {
        const t = now();
        for (const socket of sockets) socket.close();
        console.log("CLOSED " + JSON.stringify({ seconds: now() - t }));
      }
    },
    () => process.exit(0),
  );
}

main();
