#!/usr/bin/env node
// Touchline's benchmark peer: the same fan-out job done the plain Node.js way.
//
// What it does, like `touchline serve --no-durability`:
// - accepts feed connections on a TCP port: XML messages back to back, cut
//   into whole messages the way Touchline's framer does (a message starts at
//   `<` + a known root name + whitespace, `/` or `>`; a new start inside an
//   open message drops the open one), each parsed with saxes;
// - keeps each match's state (scoreboard; markets with status and outcomes
//   with odds, active, result) and gives every event the match's next seq;
// - serialises each update once (a JSON string shaped like Touchline's
//   update frame, encoded once to a Buffer) and sends those same bytes to
//   every subscriber of the match with ws;
// - answers `{"op":"subscribe","matches":[...]}` with a snapshot per match
//   (at once, or at the match's first event) and then contiguous updates.
//
// What it leaves out, since the benchmark measures fan-out: durability,
// resume (`since`), bets, names, producers, and the feed's rarer messages
// (bet_cancel, rollbacks, fixture_change still take a seq and yield an
// update with no markets). A client more than MAX_BUFFERED_BYTES behind
// skips updates and gets a fresh snapshot when it has caught up, as a
// Touchline client too slow for its match's buffer does.
//
// Usage: node server.js [--http HOST:PORT] [--feed HOST:PORT]
// (or PEER_HTTP / PEER_FEED; default 127.0.0.1:0 each). Once both listen it
// prints `READY http=ADDR feed=ADDR`, the line `touchline serve` prints, so
// the bench learns the ephemeral ports the same way. WebSocket on
// `GET /ws`; counters in Prometheus text on `GET /metrics`.
'use strict';

const http = require('node:http');
const net = require('node:net');
const { parseArgs } = require('node:util');
const { SaxesParser } = require('saxes');
const { WebSocketServer, WebSocket } = require('ws');

/** Written on every frame where Touchline writes its guest's hash. */
const VERSION = 'node-ws';
/** Touchline's `--max-message-bytes` default: a longer message is dropped. */
const MAX_MESSAGE = 4 << 20;
/** A session with more than this queued in ws skips updates for a match
 * and gets a fresh snapshot of it once below (about 100 updates of ~9 KB). */
const MAX_BUFFERED_BYTES = 1 << 20;
/** Touchline's default cap on ids per subscribe. */
const MAX_IDS = 10_000;

const ROOTS = [
  'odds_change', 'bet_stop', 'bet_settlement', 'bet_cancel', 'rollback_bet_settlement',
  'rollback_bet_cancel', 'fixture_change', 'alive', 'snapshot_complete', 'product_down', 'cashout',
];
const MESSAGE_START = new RegExp(`<(${ROOTS.join('|')})[\\s/>]`, 'g');

const counters = { events: 0, messages: 0, dropped: 0, sessions: 0, resnapshots: 0 };

// ---------------------------------------------------------------------------
// Framing: text in, whole messages out.

class Framer {
  constructor() {
    this.buf = '';
  }

  /** Appends `text`; returns the messages it completes. */
  push(text) {
    this.buf += text;
    const buf = this.buf;
    const out = [];
    let at = 0;
    for (;;) {
      MESSAGE_START.lastIndex = at;
      const start = MESSAGE_START.exec(buf);
      if (start === null) {
        // Only prolog or garbage: keep what may be the beginning of a start.
        const lt = buf.lastIndexOf('<');
        at = lt >= at && buf.length - lt <= MAX_MESSAGE ? lt : buf.length;
        break;
      }
      const [s, root] = [start.index, start[1]];
      const gt = buf.indexOf('>', s);
      let end = -1;
      if (gt !== -1 && buf.charCodeAt(gt - 1) === 0x2f /* "/" */) {
        end = gt + 1;
      } else if (gt !== -1) {
        const close = buf.indexOf(`</${root}>`, gt);
        if (close !== -1) end = close + root.length + 3;
      }
      MESSAGE_START.lastIndex = s + 1;
      const next = MESSAGE_START.exec(buf);
      if (next !== null && (end === -1 || next.index < end)) {
        counters.dropped++; // truncated: another message started inside it
        at = next.index;
        continue;
      }
      if (end === -1) {
        if (buf.length - s > MAX_MESSAGE) {
          counters.dropped++; // oversized; the rest of it is garbage until the next start
          at = buf.length;
        } else {
          at = s; // incomplete: wait for more
        }
        break;
      }
      out.push(buf.slice(s, end));
      at = end;
    }
    this.buf = buf.slice(at);
    return out;
  }
}

// ---------------------------------------------------------------------------
// Parsing: one message → one plain event object (or null).

let event = null; // the message being read
let market = null; // its market being read

function newParser() {
  const p = new SaxesParser({ position: false });
  p.on('opentag', ({ name, attributes: a }) => {
    if (event === null) {
      event = {
        kind: name,
        product: num(a.product),
        match: a.event_id,
        timestamp: num(a.timestamp),
        certainty: num(a.certainty),
        marketStatus: num(a.market_status),
        scoreboard: null,
        markets: [],
      };
      return;
    }
    switch (name) {
      case 'sport_event_status':
        event.scoreboard = {
          status: num(a.status),
          match_status: num(a.match_status),
          score: { home: num(a.home_score), away: num(a.away_score) },
          clock: null,
          period_scores: [],
        };
        break;
      case 'clock':
        if (event.scoreboard) {
          event.scoreboard.clock = {
            match_time: a.match_time ?? null,
            stoppage_time: a.stoppage_time ?? null,
            remaining_time: a.remaining_time ?? null,
            stopped: a.stopped === undefined ? null : a.stopped === 'true' || a.stopped === '1',
          };
        }
        break;
      case 'period_score':
        event.scoreboard?.period_scores.push({
          number: num(a.number),
          match_status_code: num(a.match_status_code),
          home_score: num(a.home_score),
          away_score: num(a.away_score),
        });
        break;
      case 'market':
        market = {
          id: num(a.id),
          specifiers: canonical(a.specifiers),
          status: num(a.status),
          favourite: a.favourite === '1',
          outcomes: [],
        };
        event.markets.push(market);
        break;
      case 'outcome':
        market?.outcomes.push({
          id: a.id,
          odds: num(a.odds),
          active: a.active === undefined ? null : a.active === '1',
          result: num(a.result),
          void_factor: num(a.void_factor),
          dead_heat_factor: num(a.dead_heat_factor),
        });
        break;
      default:
    }
  });
  return p;
}

let parser = newParser();

function parse(xml) {
  event = null;
  market = null;
  try {
    parser.write(xml).close();
    return event;
  } catch {
    parser = newParser(); // saxes throws mid-document; start clean
    counters.dropped++;
    return null;
  }
}

function num(v) {
  if (v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/** Touchline's canonical specifiers: `name=value` pairs sorted by name, joined by `|`. */
function canonical(s) {
  if (!s) return '';
  return s.includes('|') ? s.split('|').sort().join('|') : s;
}

// ---------------------------------------------------------------------------
// Matches: state, seq, subscribers.

class Match {
  constructor(id) {
    this.id = id;
    this.seq = 0;
    this.scoreboard = {
      status: null, match_status: null, score: null, clock: null, period_scores: [],
      start_time: null, producer: null, cancelled: false,
    };
    this.summaryJson = JSON.stringify(this.scoreboard);
    this.updatedAt = null;
    /** `id|specifiers` → the market as it is sent. */
    this.markets = new Map();
    /** Sessions subscribed, whether or not the match has had an event. */
    this.sessions = new Set();
    this.snapshot = null; // { seq, bytes }, made on demand
  }

  /** Applies `ev` under the next seq; returns the update's delta. */
  apply(ev) {
    this.seq++;
    if (ev.timestamp !== null) this.updatedAt = ev.timestamp;
    const delta = { event: ev.kind, timestamp: ev.timestamp };
    const touched = [];
    switch (ev.kind) {
      case 'odds_change': {
        if (ev.scoreboard) {
          Object.assign(this.scoreboard, ev.scoreboard, { producer: ev.product });
        } else if (ev.product !== null) {
          this.scoreboard.producer = ev.product;
        }
        const json = JSON.stringify(this.scoreboard);
        if (json !== this.summaryJson) {
          this.summaryJson = json;
          delta.summary = this.scoreboard;
        }
        for (const m of ev.markets) {
          const changed = this.oddsInto(m, ev.product);
          if (changed) touched.push(changed);
        }
        break;
      }
      case 'bet_stop': // the simulator stops groups="all"
        for (const m of this.markets.values()) {
          if (m.status === 1) {
            m.status = ev.marketStatus ?? -1;
            touched.push(m);
          }
        }
        break;
      case 'bet_settlement':
        for (const s of ev.markets) {
          const m = this.markets.get(`${s.id}|${s.specifiers}`);
          if (!m) continue;
          m.status = -3;
          m.certainty = Math.max(m.certainty ?? 0, ev.certainty ?? 1);
          for (const o of s.outcomes) {
            const mine = m.outcomes.find((x) => x.id === o.id);
            if (mine) {
              mine.result = { result: o.result, void_factor: o.void_factor, dead_heat_factor: o.dead_heat_factor };
            }
          }
          touched.push(m);
        }
        break;
      default: // not in the bench's feed: a seq and an empty update
    }
    delta.markets = touched;
    return delta;
  }

  /** Folds an odds_change market in; returns it if anything changed (a
   * market is sent only then, as Touchline does), else null. */
  oddsInto(m, product) {
    const key = `${m.id}|${m.specifiers}`;
    let mine = this.markets.get(key);
    if (!mine) {
      mine = {
        id: m.id, specifiers: m.specifiers, status: m.status, favourite: m.favourite, outcomes: [],
        status_before_resolution: null, void_reason: null, certainty: null, product,
      };
      this.markets.set(key, mine);
    } else if (mine.status === -3) {
      return null; // odds never reopen a settled market
    }
    let changed = mine.product !== product || mine.status !== m.status || mine.favourite !== m.favourite;
    mine.status = m.status;
    mine.favourite = m.favourite;
    mine.product = product;
    for (const o of m.outcomes) {
      const active = o.active ?? true;
      const have = mine.outcomes.find((x) => x.id === o.id);
      if (have) {
        changed ||= have.odds !== o.odds || have.active !== active;
        have.odds = o.odds;
        have.active = active;
      } else {
        changed = true;
        mine.outcomes.push({ id: o.id, odds: o.odds, active, result: null });
      }
    }
    return changed ? mine : null;
  }

  /** The snapshot at the current seq, serialised once per seq. */
  snapshotBytes() {
    if (this.snapshot?.seq !== this.seq) {
      const state = {
        match: this.id, ...this.scoreboard, updated_at: this.updatedAt, markets: [...this.markets.values()],
      };
      const frame = { type: 'snapshot', match: this.id, epoch: 1, seq: this.seq, guest_version: VERSION, state };
      this.snapshot = { seq: this.seq, bytes: Buffer.from(JSON.stringify(frame)) };
    }
    return this.snapshot.bytes;
  }
}

/** Match id → match; a subscription to an unseen id makes an empty one. */
const matches = new Map();

function matchFor(id) {
  let m = matches.get(id);
  if (!m) {
    m = new Match(id);
    matches.set(id, m);
  }
  return m;
}

function onMessage(xml) {
  counters.messages++;
  const ev = parse(xml);
  if (ev === null || !ev.match) return; // alive, snapshot_complete, ...: no match
  counters.events++;
  const m = matchFor(ev.match);
  const first = m.seq === 0;
  const delta = m.apply(ev);
  if (m.sessions.size === 0) return;
  if (first) {
    // Subscribed before it existed: the snapshot is where they start.
    for (const s of m.sessions) send(s, m.snapshotBytes());
    return;
  }
  const frame = { type: 'update', match: m.id, epoch: 1, seq: m.seq, guest_version: VERSION, delta };
  const bytes = Buffer.from(JSON.stringify(frame)); // once, for every subscriber
  for (const s of m.sessions) {
    if (s.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      s.behind.add(m.id);
    } else if (s.behind.delete(m.id)) {
      counters.resnapshots++;
      send(s, m.snapshotBytes());
    } else {
      send(s, bytes);
    }
  }
}

function send(session, bytes) {
  if (session.ws.readyState === WebSocket.OPEN) session.ws.send(bytes, { binary: false });
}

// ---------------------------------------------------------------------------
// WebSocket sessions.

class Session {
  constructor(ws) {
    this.ws = ws;
    /** Matches it follows. */
    this.matches = new Set();
    /** Matches whose updates it skipped: the next one is a snapshot. */
    this.behind = new Set();
  }

  onText(text) {
    let req;
    try {
      req = JSON.parse(text);
    } catch {
      return this.error('invalid JSON');
    }
    if (!Array.isArray(req?.matches)) return this.error('missing matches');
    if (req.matches.length > MAX_IDS) return this.error(`at most ${MAX_IDS} ids per request`);
    if (req.op === 'subscribe') {
      for (const id of req.matches) {
        if (typeof id !== 'string' || this.matches.has(id)) continue;
        const m = matchFor(id);
        this.matches.add(id);
        m.sessions.add(this);
        if (m.seq > 0) send(this, m.snapshotBytes());
      }
    } else if (req.op === 'unsubscribe') {
      for (const id of req.matches) this.leave(id);
    } else {
      this.error('unknown op');
    }
  }

  leave(id) {
    if (this.matches.delete(id)) matches.get(id)?.sessions.delete(this);
    this.behind.delete(id);
  }

  close() {
    for (const id of [...this.matches]) this.leave(id);
    counters.sessions--;
  }

  error(reason) {
    this.ws.send(JSON.stringify({ type: 'error', reason }));
  }
}

// ---------------------------------------------------------------------------
// Listeners.

function hostPort(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

function listen(server, addr) {
  const { host, port } = hostPort(addr);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const a = server.address();
      resolve(`${a.address}:${a.port}`);
    });
  });
}

async function main() {
  const { values } = parseArgs({
    options: {
      http: { type: 'string', default: process.env.PEER_HTTP ?? '127.0.0.1:0' },
      feed: { type: 'string', default: process.env.PEER_FEED ?? '127.0.0.1:0' },
    },
  });

  const web = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end([
        `peer_events_applied_total ${counters.events}`,
        `peer_feed_messages_total ${counters.messages}`,
        `peer_feed_dropped_messages_total ${counters.dropped}`,
        `peer_sessions ${counters.sessions}`,
        `peer_resnapshots_total ${counters.resnapshots}`,
        `peer_matches ${matches.size}`,
        '',
      ].join('\n'));
    } else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ server: web, path: '/ws', maxPayload: 64 << 10 });
  wss.on('connection', (ws) => {
    counters.sessions++;
    const session = new Session(ws);
    ws.on('message', (data, isBinary) => {
      if (isBinary) session.error('binary frames are not accepted');
      else session.onText(data.toString());
    });
    ws.on('close', () => session.close());
    ws.on('error', () => {}); // a reset client: 'close' follows
  });

  const feed = net.createServer((socket) => {
    const framer = new Framer();
    socket.setEncoding('utf8'); // keeps multi-byte characters whole across reads
    socket.on('data', (text) => {
      for (const xml of framer.push(text)) onMessage(xml);
    });
    socket.on('error', () => {});
  });

  const [httpAddr, feedAddr] = await Promise.all([listen(web, values.http), listen(feed, values.feed)]);
  console.log(`READY http=${httpAddr} feed=${feedAddr}`);

  process.on('SIGTERM', () => {
    for (const ws of wss.clients) ws.close(1001, 'server shutting down');
    feed.close();
    web.close();
    setTimeout(() => process.exit(0), 200).unref();
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
