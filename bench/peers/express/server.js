// The seed's Express SSE handler (shared/seed/express-sse-answer.txt) as a server the
// benchmarks can run: the same headers, flushHeaders, one setInterval per client,
// res.write per tick and the 'close' handler with its console.log. Changed only so it
// does the same work as sse-counter: it sends all COUNT ticks (the seed stops at 9 of
// 10), interval and count come from the environment, and each tick carries `sent_at_us`
// (the wall clock in microseconds) for the delivery latency.
'use strict';

const express = require('express');
const { performance } = require('perf_hooks');

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || '127.0.0.1';
const intervalMs = Number(process.env.INTERVAL_MS || 1000);
const count = Number(process.env.COUNT || 10);

const app = express();

app.get('/streaming', (req, res) => {
  res.setHeader('Cache-Control', 'no-cache');
  res.setHeader('Content-Type', 'text/event-stream');
  res.setHeader('Access-Control-Allow-Origin', '*');
  res.setHeader('Connection', 'keep-alive');
  res.flushHeaders(); // flush the headers to establish SSE with client

  let counter = 0;
  let interValID = setInterval(() => {
    counter++;
    if (counter > count) {
      clearInterval(interValID);
      res.end(); // terminates SSE session
      return;
    }
    // performance.timeOrigin is the wall clock at start with sub-millisecond
    // precision; Date.now() alone would round every latency to whole milliseconds.
    const sent_at_us = Math.round((performance.timeOrigin + performance.now()) * 1000);
    res.write(`data: ${JSON.stringify({ num: counter, sent_at_us })}\n\n`); // res.write() instead of res.send()
  }, intervalMs);

  // If client closes connection, stop sending events
  res.on('close', () => {
    console.log('client dropped me');
    clearInterval(interValID);
    res.end();
  });
});

const server = app.listen(port, host, () => {
  const addr = server.address();
  // The one line the benchmark reads to find the port.
  console.log(`listening on http://${addr.address}:${addr.port}`);
});
