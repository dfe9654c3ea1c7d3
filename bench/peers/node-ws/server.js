#!/usr/bin/env node
// Touchline's benchmark peer: the same fan-out job done the plain Node.js way.
//
// What it does, like `touchline serve --no-durability`:
// - accepts feed connections on a TCP port: XML messages back to back, cut
//   into whole messages the way Touchline's framer does (a message starts at
//   `<` + a known root name + whitespace, `/` or `>`; a new start inside an
//   open message drops the open one), each parsed with saxes;
// - keeps each match's state (scoreboard and owning producer; markets with
//   status, favourite, producer and settlement fields; outcomes with odds,
//   active, result) and gives every event the match's next seq, applying
//   odds_change, bet_stop and bet_settlement by Touchline's rules (the
//   producer hand-over included: guest/src/model.rs, market.rs,
//   settlement.rs, producer.rs);
// - makes each update's delta as Touchline does (docs/protocol.md, "Applying
//   an update"; guest/src/delta.rs): the scoreboard only when it changed,
//   all of it; a new market whole; a known one as `id` + `specifiers` and
//   only its fields that changed, with only its changed outcomes (a new one
//   whole, a known one `id` + the fields that changed); the rest left out;
//   `"markets":[]` when nothing changed. Same field names, same order;
//   numbers are JavaScript's (`2`, where Rust writes `2.0`);
// - serialises each update once (a JSON string encoded once to a Buffer)
//   and sends those same bytes to every subscriber of the match with ws;
// - answers `{"op":"subscribe","matches":[...]}` with a snapshot per match
//   (at once, or at the match's first event) and then contiguous updates.
//
// What it leaves out, since the benchmark measures fan-out: durability,
// resume (`since`), bets, names, producer liveness, and the feed's rarer
// messages, which the bench's streams never hold (bet_cancel, rollbacks and
// fixture_change still take a seq and yield an update with no markets). A
// client more than MAX_BUFFERED_BYTES behind skips updates and gets a fresh
// snapshot when it has caught up, as a Touchline client too slow for its
// match's buffer does.
//
// Usage: node server.js [--http HOST:PORT] [--feed HOST:PORT]
// (or PEER_HTTP / PEER_FEED; default 127.0.0.1:0 each). Once both listen it
// prints `READY http=ADDR feed=ADDR`, the line `touchline serve` prints, so
// the bench learns the ephemeral ports the same way. WebSocket on
// `GET /ws`; counters in Prometheus text on `GET /metrics`.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { parseArgs } = require('node:util');
const { SaxesParser } = require('saxes');
const { WebSocketServer, WebSocket } = require('ws');

/** Written on every frame where Touchline writes the sha-256 of its guest:
 * the sha-256 of this file, the logic that made the frame (and as long). */
const VERSION = crypto.createHash('sha256').update(fs.readFileSync(__filename)).digest('hex');
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

/** The feed's market status codes. */
const ACTIVE = 1;
const SUSPENDED = -1;
const HANDED_OVER = -2;
const SETTLED = -3;
/** An outcome result that leaves its bets open. */
const UNDECIDED = -1;

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
// Parsing: one message → one plain event object (or null). Read the way
// Touchline's parser reads it (host/src/feed/parse): an absent market status
// is active, an unreadable one suspended; an outcome without `active` is
// active when it has odds; an unreadable settlement result is undecided.

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
        timestamp: num(a.timestamp) ?? 0,
        certainty: num(a.certainty),
        groups: (a.groups ?? 'all').split('|').filter((g) => g !== ''),
        marketStatus: num(a.market_status) ?? SUSPENDED,
        scoreboard: null,
        markets: [],
      };
      return;
    }
    switch (name) {
      case 'sport_event_status': {
        const status = a.status === undefined ? 0 : num(a.status);
        // Unreadable: left out, its clock and period scores with it.
        event.scoreboard = status === null ? null : {
          status,
          match_status: num(a.match_status),
          home_score: num(a.home_score),
          away_score: num(a.away_score),
          clock: null,
          period_scores: [],
        };
        break;
      }
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
          home_score: num(a.home_score) ?? 0,
          away_score: num(a.away_score) ?? 0,
        });
        break;
      case 'market':
        market = {
          id: num(a.id),
          specifiers: canonical(a.specifiers),
          status: a.status === undefined ? ACTIVE : num(a.status) ?? SUSPENDED,
          favourite: a.favourite === '1',
          void_reason: num(a.void_reason),
          outcomes: [],
        };
        event.markets.push(market);
        break;
      case 'outcome':
        if (market === null) break;
        if (event.kind === 'bet_settlement') {
          market.outcomes.push(settledOutcome(a));
        } else {
          const odds = num(a.odds);
          market.outcomes.push({ id: a.id, odds, active: a.active === undefined ? odds !== null : a.active === '1' });
        }
        break;
      default:
    }
  });
  return p;
}

/** A settled outcome: a result it cannot mean, or an unreadable factor,
 * reads as undecided (its bets stay open rather than be paid wrongly). */
function settledOutcome(a) {
  const result = num(a.result);
  const factor = (v, ok) => (v === undefined ? { value: null, ok: true } : { value: num(v), ok: ok(num(v)) });
  const vf = factor(a.void_factor, (v) => v !== null && v >= 0 && v <= 1);
  const dh = factor(a.dead_heat_factor, (v) => v !== null && v > 0 && v <= 1);
  const readable = [-1, 0, 1].includes(result) && vf.ok && dh.ok;
  return {
    id: a.id,
    result: readable ? result : UNDECIDED,
    void_factor: vf.ok ? vf.value : null,
    dead_heat_factor: dh.ok ? dh.value : null,
  };
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
  s = s.trim();
  if (!s.includes('|')) return s;
  const name = (pair) => pair.split('=', 1)[0];
  return s.split('|').filter((p) => p !== '')
    .sort((x, y) => (name(x) < name(y) ? -1 : name(x) > name(y) ? 1 : 0)).join('|');
}

/** Market groups a bet_stop names, when no market descriptions resolve them
 * (Touchline's built-in table, guest/src/market.rs `market_groups`). */
function marketGroups(id) {
  if ([1, 8, 10, 11, 14, 15, 16, 18, 19, 20, 21, 26, 29].includes(id)) return ['all', 'score', 'regular_play'];
  if ([60, 61, 62, 63, 65, 66, 68, 69].includes(id)) return ['all', 'score', '1st_half'];
  if (id >= 162 && id <= 170) return ['all', 'regular_play', 'corners'];
  if (id >= 136 && id <= 146) return ['all', 'regular_play', 'bookings'];
  return ['all'];
}

// ---------------------------------------------------------------------------
// Markets, and what one event changed in them.

/** A market's own fields a delta names when they change, in wire order.
 * (Touchline's `cancels` would follow: bet_cancel is not modelled here.) */
const MARKET_FIELDS = ['status', 'favourite', 'status_before_resolution', 'void_reason', 'certainty', 'product'];
/** An outcome's fields a delta names when they change, in wire order. */
const OUTCOME_FIELDS = ['odds', 'active', 'result'];

class Market {
  constructor(id, specifiers) {
    // Field order is the wire order of a snapshot's market.
    this.id = id;
    this.specifiers = specifiers;
    this.status = 0; // deactivated until odds say otherwise
    this.favourite = false;
    /** `{ id, odds, active, result }`, in the order they first appeared. */
    this.outcomes = [];
    this.status_before_resolution = null;
    this.void_reason = null;
    this.certainty = null;
    /** The producer whose odds it shows; left out of the JSON while unknown. */
    this.product = null;
  }

  get key() {
    return `${this.id}|${this.specifiers}`;
  }

  /** Settled (some outcome holds a result) and not reopened: odds leave it alone. */
  get settled() {
    return this.outcomes.some((o) => o.result !== null);
  }

  /** Its own fields as they are now, to compare an edit with. */
  head() {
    return Object.fromEntries(MARKET_FIELDS.map((f) => [f, this[f]]));
  }

  toJSON() {
    const { product, ...market } = this;
    return product === null ? market : { ...market, product };
  }

  /** Odds from producer `from`; the outcomes changed or new go to `changed`. */
  takeOdds(m, from, changed) {
    this.product = from;
    this.status = m.status;
    this.favourite = m.favourite;
    for (const o of m.outcomes) {
      const i = this.outcomes.findIndex((x) => x.id === o.id);
      if (i === -1) {
        mark(changed, this.outcomes.length, 'new');
        this.outcomes.push({ id: o.id, odds: o.odds, active: o.active, result: null });
        continue;
      }
      const mine = this.outcomes[i];
      if (mine.odds !== o.odds) mark(changed, i, 'odds');
      if (mine.active !== o.active) mark(changed, i, 'active');
      mine.odds = o.odds;
      mine.active = o.active;
    }
  }

  /** A settlement with the event's `certainty`; a repeat changes nothing. */
  takeSettlement(s, certainty, changed) {
    if (!this.settled && this.status !== SETTLED) this.status_before_resolution = this.status;
    this.status = SETTLED;
    this.void_reason = s.void_reason;
    if (certainty !== null && (this.certainty === null || certainty > this.certainty)) this.certainty = certainty;
    for (const so of s.outcomes) {
      const result = { result: so.result, void_factor: so.void_factor, dead_heat_factor: so.dead_heat_factor };
      const i = this.outcomes.findIndex((x) => x.id === so.id);
      if (i === -1) {
        mark(changed, this.outcomes.length, 'new');
        this.outcomes.push({ id: so.id, odds: null, active: false, result });
        continue;
      }
      const o = this.outcomes[i];
      // Only a rollback reopens a decided outcome.
      if (result.result === UNDECIDED && o.result !== null && o.result.result !== UNDECIDED) continue;
      if (!same(o.result, result)) mark(changed, i, 'result');
      if (o.active) mark(changed, i, 'active');
      o.result = result;
      o.active = false;
    }
  }
}

/** Records that the outcome at `index` changed `field` ('new': it is new). */
function mark(changed, index, field) {
  const fields = changed.get(index);
  if (fields) fields.add(field);
  else changed.set(index, new Set([field]));
}

function same(a, b) {
  return a === b || (a !== null && b !== null && typeof a === 'object' && JSON.stringify(a) === JSON.stringify(b));
}

function byKey(a, b) {
  return a.id - b.id || (a.specifiers < b.specifiers ? -1 : a.specifiers > b.specifiers ? 1 : 0);
}

/** What one event changed: whether the scoreboard did, and per market what
 * in it (guest/src/delta.rs `Change`). */
class Change {
  constructor() {
    this.summary = false;
    /** key → { market, whole } or { market, fields: Set, outcomes: Map(index → Set) } */
    this.markets = new Map();
  }

  created(market) {
    this.markets.set(market.key, { market, whole: true });
  }

  /** `market` was `before` (its `head()`); `outcomes`: index → fields changed. */
  edited(market, before, outcomes) {
    const fields = MARKET_FIELDS.filter((f) => before[f] !== market[f]);
    if (fields.length === 0 && outcomes.size === 0) return;
    let entry = this.markets.get(market.key);
    if (!entry) {
      entry = { market, fields: new Set(), outcomes: new Map() };
      this.markets.set(market.key, entry);
    }
    if (entry.whole) return; // new in this event: it goes out whole anyway
    for (const f of fields) entry.fields.add(f);
    for (const [i, changed] of outcomes) for (const f of changed) mark(entry.outcomes, i, f);
  }

  /** The update's `delta`, rendered against the match as it is now. */
  delta(kind, match) {
    const delta = { event: kind, timestamp: match.updatedAt };
    if (this.summary) delta.summary = match.summaryView();
    delta.markets = [...this.markets.values()].sort((a, b) => byKey(a.market, b.market)).map(marketDelta);
    return delta;
  }
}

/** A market of a delta: whole if new, else its key and what changed. */
function marketDelta({ market: m, whole, fields, outcomes }) {
  if (whole) return m;
  const part = { id: m.id, specifiers: m.specifiers };
  for (const f of MARKET_FIELDS) if (fields.has(f)) part[f] = m[f];
  if (outcomes.size > 0) {
    part.outcomes = [...outcomes.keys()].sort((a, b) => a - b).map((i) => {
      const o = m.outcomes[i];
      const changed = outcomes.get(i);
      if (changed.has('new')) return o;
      const out = { id: o.id };
      for (const f of OUTCOME_FIELDS) if (changed.has(f)) out[f] = o[f];
      return out;
    });
  }
  return part;
}

// ---------------------------------------------------------------------------
// Matches: state, seq, subscribers.

class Match {
  constructor(id) {
    this.id = id;
    this.seq = 0;
    this.summary = {
      status: 0, match_status: null, score: { home: 0, away: 0 }, clock: null, period_scores: [], start_time: null,
    };
    /** The producer of the last odds_change that took the match. */
    this.owner = null;
    /** Producers that handed the match over: their odds_change is ignored. */
    this.handedOver = new Set();
    this.updatedAt = 0;
    /** `id|specifiers` → Market. */
    this.markets = new Map();
    /** Sessions subscribed, whether or not the match has had an event. */
    this.sessions = new Set();
    this.snapshot = null; // { seq, bytes }, made on demand
  }

  summaryView() {
    return { ...this.summary, ...(this.owner !== null && { producer: this.owner }), cancelled: false };
  }

  /** Applies `ev` under the next seq; returns the update's delta. */
  apply(ev) {
    this.seq++;
    const change = new Change();
    // Odds from a producer that handed the match over: stale, not even a timestamp.
    if (ev.kind !== 'odds_change' || !this.handedOver.has(ev.product)) {
      this.updatedAt = Math.max(this.updatedAt, ev.timestamp);
      switch (ev.kind) {
        case 'odds_change':
          this.oddsChange(ev, change);
          break;
        case 'bet_stop':
          this.betStop(ev, change);
          break;
        case 'bet_settlement':
          this.betSettlement(ev, change);
          break;
        default: // not in the bench's feed: a seq and an empty update
      }
    }
    return change.delta(ev.kind, this);
  }

  oddsChange(ev, change) {
    const from = ev.product;
    const handsOver = ev.markets.some((m) => m.status === HANDED_OVER);
    // A late hand-over from a producer that does not own the match leaves its scoreboard alone.
    if (!handsOver || this.owner === null || this.owner === from) {
      if (from !== null && this.owner !== from) {
        this.owner = from;
        change.summary = true;
      }
      if (ev.scoreboard && this.takeScoreboard(ev.scoreboard)) change.summary = true;
    }
    for (const m of ev.markets) {
      const mine = this.markets.get(`${m.id}|${m.specifiers}`);
      if (!mine) {
        const market = new Market(m.id, m.specifiers);
        market.takeOdds(m, from, new Map());
        this.markets.set(market.key, market);
        change.created(market);
      } else if (mine.settled) {
        // Only a rollback reopens it.
      } else if (m.status === HANDED_OVER && mine.product !== null && mine.product !== from) {
        // Another producer's odds arrived since: the market stays theirs.
      } else {
        const before = mine.head();
        const outcomes = new Map();
        mine.takeOdds(m, from, outcomes);
        change.edited(mine, before, outcomes);
      }
    }
    if (handsOver && from !== null) this.handedOver.add(from);
  }

  /** Folds a sport_event_status in, field by field; returns whether anything changed. */
  takeScoreboard(ses) {
    const s = this.summary;
    let changed = false;
    const set = (into, field, value) => {
      if (!same(into[field], value)) {
        into[field] = value;
        changed = true;
      }
    };
    set(s, 'status', ses.status);
    if (ses.match_status !== null) set(s, 'match_status', ses.match_status);
    if (ses.home_score !== null) set(s.score, 'home', ses.home_score);
    if (ses.away_score !== null) set(s.score, 'away', ses.away_score);
    if (ses.clock !== null) set(s, 'clock', ses.clock);
    if (ses.period_scores.length > 0) set(s, 'period_scores', ses.period_scores);
    return changed;
  }

  /** Stops the active markets of the named groups (`all`: every one). */
  betStop(ev, change) {
    const all = ev.groups.includes('all');
    for (const m of this.markets.values()) {
      if (m.status !== ACTIVE || !(all || marketGroups(m.id).some((g) => ev.groups.includes(g)))) continue;
      const before = m.head();
      m.status = ev.marketStatus;
      change.edited(m, before, new Map());
    }
  }

  betSettlement(ev, change) {
    for (const s of ev.markets) {
      const mine = this.markets.get(`${s.id}|${s.specifiers}`);
      if (!mine) {
        const market = new Market(s.id, s.specifiers);
        market.takeSettlement(s, ev.certainty, new Map());
        this.markets.set(market.key, market);
        change.created(market);
      } else {
        const before = mine.head();
        const outcomes = new Map();
        mine.takeSettlement(s, ev.certainty, outcomes);
        change.edited(mine, before, outcomes);
      }
    }
  }

  /** The snapshot at the current seq, serialised once per seq. */
  snapshotBytes() {
    if (this.snapshot?.seq !== this.seq) {
      const state = {
        match: this.id,
        ...this.summaryView(),
        updated_at: this.updatedAt,
        markets: [...this.markets.values()].sort(byKey),
      };
      const frame = {
        type: 'snapshot', match: this.id, epoch: 1, seq: this.seq, guest_version: VERSION, state, producers_down: [],
      };
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
      // permessage-deflate as ws offers it: compressed per client as each
      // frame is sent (ws has no way to share a compressed frame), with the
      // parameters Touchline answers (no context takeover, level 6, frames
      // under 256 bytes as they are).
      deflate: { type: 'boolean', default: false },
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
  const perMessageDeflate = values.deflate && {
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    threshold: 256,
    zlibDeflateOptions: { level: 6 },
  };
  const wss = new WebSocketServer({ server: web, path: '/ws', maxPayload: 64 << 10, perMessageDeflate });
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
