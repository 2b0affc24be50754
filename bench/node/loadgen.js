// HTTP load of bench/peers.py: POSTs a message for a session to a replica at a fixed rate.
//   node loadgen.js --post URL --targets FILE --rate R --seconds S [--connections C]
// FILE holds "URL SESSION_ID" lines (bench/node/clients.js writes them); every POST goes to --post, for
// the sessions of the file round robin: `POST {post}/send/{session_id}` with the JSON payload of a
// `new_message`, stamped with its send time (metadata.t), so the client measures send-to-socket latency.
// Keep-alive connections, at most C (default 64) requests in flight: past that the generator falls
// behind, which the result shows (sent below rate x seconds). Prints one JSON line and exits.
"use strict";
const fs = require("node:fs");
const http = require("node:http");
const { now, latencySummary, messagePayload, paced } = require("./common");

function option(name, fallback) {
  const i = process.argv.indexOf("--" + name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function main() {
  const post = new URL(option("post"));
  const targets = fs
    .readFileSync(option("targets"), "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => line.split(" ")[1]);
  const connections = Number(option("connections", "64"));
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const latencies = [];
  const statuses = {};

  function request(i) {
    return new Promise((resolve, reject) => {
      const t = now();
      const body = JSON.stringify(messagePayload(`p${i}`, t));
      const req = http.request(
        {
          agent,
          host: post.hostname,
          port: post.port,
          method: "POST",
          path: `/send/${encodeURIComponent(targets[i % targets.length])}`,
          headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on("end", () => {
            statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
            latencies.push(now() - t);
            resolve();
          });
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  const result = await paced(Number(option("rate")), Number(option("seconds")), request);
  console.log(JSON.stringify({ ...result, statuses, response: latencySummary(latencies) }));
  agent.destroy();
}

main();
